#include "strait/core/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "strait/core/error.h"
#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::ScratchDir;
using testing::write_file;

// A safetensors file assembled by hand from the spec: 8-byte little-endian header length, the
// header text as given (no padding added), then the data buffer.
std::string file_bytes(const std::string& header, const std::string& data = "") {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xff));
  return bytes + header + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string tensor_bytes(const SafetensorsFile& file, const std::string& name) {
  return std::string(reinterpret_cast<const char*>(file.data(name)), file.info(name).nbytes);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  fs::path write(const std::string& bytes) {
    fs::path path = dir_ / "model.safetensors";
    write_file(path, bytes);
    return path;
  }

  // Loads `bytes` expecting strait::Error, and returns its message after checking that it
  // names the file.
  std::string load_error(const std::string& bytes, const std::vector<std::string>& expected = {}) {
    fs::path path = write(bytes);
    try {
      SafetensorsFile::load(path, expected);
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_EQ(message.rfind(path.string() + ": ", 0), 0u) << message;
      return message;
    }
    ADD_FAILURE() << "expected strait::Error loading " << bytes;
    return "";
  }

  ScratchDir dir_;
};

#define EXPECT_CONTAINS(haystack, needle)                       \
  do {                                                          \
    const std::string text_ = (haystack);                       \
    EXPECT_NE(text_.find(needle), std::string::npos) << text_; \
  } while (0)

TEST(SafetensorsDType, NamesSizesAndLookup) {
  const std::vector<std::tuple<DType, std::string, size_t>> expected = {
      {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
      {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::U16, "U16", 2},
      {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::Bool, "BOOL", 1},
  };
  for (const auto& [dtype, name, size] : expected) {
    EXPECT_EQ(dtype_name(dtype), name);
    EXPECT_EQ(dtype_size(dtype), size) << name;
    EXPECT_EQ(dtype_from_name(name), dtype) << name;
  }
}

TEST(SafetensorsDType, UnknownNameIsAnError) {
  try {
    dtype_from_name("F8_E4M3");
    FAIL() << "expected strait::Error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(std::string(error.what()), "'F8_E4M3'");
  }
  EXPECT_THROW(dtype_from_name("f32"), Error);
  EXPECT_THROW(dtype_from_name(""), Error);
}

TEST_F(SafetensorsTest, RoundTripOfManyDTypesAndShapes) {
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, -1e30f};
  const std::vector<double> f64_scalar = {3.141592653589793};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc000, 0x7f80, 0x0001};
  const std::vector<uint16_t> f16 = {0x3c00, 0xbc00};
  const std::vector<int64_t> i64 = {INT64_MIN, -1, 0, INT64_MAX};
  const std::vector<int32_t> i32 = {-7, 7, 1 << 30};
  const std::vector<int16_t> i16 = {-300, 300};
  const std::vector<uint16_t> u16 = {65535, 1};
  const std::vector<int8_t> i8 = {-128, 127, 0};
  const std::vector<uint8_t> u8 = {0, 255, 17, 42};
  const std::vector<uint8_t> flags = {1, 0, 1};

  SafetensorsWriter writer;
  writer.add("layers.0.weight", DType::F32, {2, 3}, f32.data(), 24);
  writer.add("scalar", DType::F64, {}, f64_scalar.data(), 8);
  writer.add("empty", DType::F32, {0, 5}, nullptr, 0);
  writer.add("bf16", DType::BF16, {2, 2}, bf16.data(), 8);
  writer.add("f16", DType::F16, {2}, f16.data(), 4);
  writer.add("i64", DType::I64, {4}, i64.data(), 32);
  writer.add("i32", DType::I32, {3, 1}, i32.data(), 12);
  writer.add("i16", DType::I16, {2}, i16.data(), 4);
  writer.add("u16", DType::U16, {1, 2}, u16.data(), 4);
  writer.add("i8", DType::I8, {3}, i8.data(), 3);
  writer.add("u8", DType::U8, {2, 1, 2}, u8.data(), 4);
  writer.add("mask", DType::Bool, {3}, flags.data(), 3);
  writer.set_metadata("format", "pt");
  writer.set_metadata("step", "1200");
  writer.write(dir_ / "all.safetensors");

  SafetensorsFile file = SafetensorsFile::load(dir_ / "all.safetensors");
  EXPECT_EQ(file.path(), dir_ / "all.safetensors");
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "1200"}}));

  const std::vector<std::string> order = {"layers.0.weight", "scalar", "empty", "bf16", "f16", "i64",
                                          "i32",             "i16",    "u16",   "i8",   "u8",  "mask"};
  ASSERT_EQ(file.tensors().size(), order.size());
  size_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(file.tensors()[i].name, order[i]);
    EXPECT_EQ(file.tensors()[i].offset, offset) << order[i];
    offset += file.tensors()[i].nbytes;
  }

  const TensorInfo& weight = file.info("layers.0.weight");
  EXPECT_EQ(weight.dtype, DType::F32);
  EXPECT_EQ(weight.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(weight.nbytes, 24u);
  std::vector<float> weight_back(6);
  std::memcpy(weight_back.data(), file.data("layers.0.weight"), 24);
  EXPECT_EQ(weight_back, f32);

  EXPECT_EQ(file.info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(file.info("scalar").dtype, DType::F64);
  EXPECT_EQ(tensor_bytes(file, "scalar"), raw_bytes(f64_scalar));

  EXPECT_EQ(file.info("empty").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(file.info("empty").nbytes, 0u);

  EXPECT_EQ(file.info("bf16").dtype, DType::BF16);
  EXPECT_EQ(tensor_bytes(file, "bf16"), raw_bytes(bf16));
  EXPECT_EQ(tensor_bytes(file, "f16"), raw_bytes(f16));
  EXPECT_EQ(tensor_bytes(file, "i64"), raw_bytes(i64));
  EXPECT_EQ(tensor_bytes(file, "i32"), raw_bytes(i32));
  EXPECT_EQ(tensor_bytes(file, "i16"), raw_bytes(i16));
  EXPECT_EQ(tensor_bytes(file, "u16"), raw_bytes(u16));
  EXPECT_EQ(tensor_bytes(file, "i8"), raw_bytes(i8));
  EXPECT_EQ(file.info("u8").shape, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(tensor_bytes(file, "u8"), raw_bytes(u8));
  EXPECT_EQ(file.info("mask").dtype, DType::Bool);
  EXPECT_EQ(tensor_bytes(file, "mask"), raw_bytes(flags));
}

TEST_F(SafetensorsTest, MissingTensorIsAnErrorNamingFileAndTensor) {
  SafetensorsWriter writer;
  const std::vector<uint8_t> byte = {1};
  writer.add("present", DType::U8, {1}, byte.data(), 1);
  writer.write(dir_ / "one.safetensors");
  SafetensorsFile file = SafetensorsFile::load(dir_ / "one.safetensors");
  EXPECT_TRUE(file.contains("present"));
  EXPECT_FALSE(file.contains("absent"));
  try {
    file.info("absent");
    FAIL() << "expected strait::Error";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), (dir_ / "one.safetensors").string() + ": no tensor named 'absent'");
  }
  EXPECT_THROW(file.data("absent"), Error);
}

TEST_F(SafetensorsTest, WriterProducesTheExactBytesOfTheFormat) {
  const std::vector<float> a = {1.0f, -2.0f};
  const std::vector<uint8_t> b = {1, 2, 3};
  SafetensorsWriter writer;
  writer.add("a", DType::F32, {2}, a.data(), 8);
  writer.add("b", DType::U8, {3}, b.data(), 3);
  writer.set_metadata("format", "pt");
  writer.write(dir_ / "tiny.safetensors");

  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";
  ASSERT_EQ(json.size(), 138u);
  // 138 bytes of JSON padded with 6 spaces to 144 = 0x90; 1.0f = 0x3f800000, -2.0f = 0xc0000000.
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + json + "      " +
                               std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8) + "\x01\x02\x03";
  EXPECT_EQ(read_file(dir_ / "tiny.safetensors"), expected);
}

TEST_F(SafetensorsTest, EmptyFileHasAnEmptyObjectHeader) {
  SafetensorsWriter().write(dir_ / "empty.safetensors");
  EXPECT_EQ(read_file(dir_ / "empty.safetensors"), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  SafetensorsFile file = SafetensorsFile::load(dir_ / "empty.safetensors");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

TEST_F(SafetensorsTest, HeaderIsPaddedWithSpacesToEightBytes) {
  const std::vector<uint8_t> data(8, 7);
  for (size_t name_length = 1; name_length <= 16; ++name_length) {
    SafetensorsWriter writer;
    writer.add(std::string(name_length, 'w'), DType::U8, {8}, data.data(), 8);
    writer.write(dir_ / "padded.safetensors");
    const std::string bytes = read_file(dir_ / "padded.safetensors");
    uint64_t header_length = 0;
    std::memcpy(&header_length, bytes.data(), 8);
    EXPECT_EQ(header_length % 8, 0u) << name_length;
    const std::string header = bytes.substr(8, header_length);
    const size_t json_end = header.rfind('}') + 1;
    EXPECT_EQ(header.substr(json_end), std::string(header_length - json_end, ' ')) << name_length;
    EXPECT_LT(header_length - json_end, 8u);
    EXPECT_EQ(bytes.size(), 8 + header_length + 8);
  }
}

TEST_F(SafetensorsTest, ReadsUnpaddedHeadersAndAnyEntryOrder) {
  // Listed out of offset order and not padded, as other writers may produce.
  const std::string header =
      R"({"second":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
      R"("first":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},"__metadata__":null})";
  SafetensorsFile file = SafetensorsFile::load(write(file_bytes(header, std::string("\x01\x00\xff\xff\x05\x06", 6))));
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "first");
  EXPECT_EQ(file.tensors()[1].name, "second");
  int16_t first[2];
  std::memcpy(first, file.data("first"), 4);
  EXPECT_EQ(first[0], 1);
  EXPECT_EQ(first[1], -1);
  EXPECT_EQ(tensor_bytes(file, "second"), "\x05\x06");
  EXPECT_TRUE(file.metadata().empty());
}

TEST_F(SafetensorsTest, EmptyTensorsMayShareAnOffset) {
  const std::string header =
      R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("y":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]}})";
  SafetensorsFile file = SafetensorsFile::load(write(file_bytes(header, "abcd")));
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "w");
  EXPECT_EQ(file.info("y").nbytes, 0u);
}

TEST_F(SafetensorsTest, WriterReplacesAnExistingFileAtomically) {
  const std::vector<uint8_t> old_data = {1, 2}, new_data = {9};
  SafetensorsWriter old_writer, new_writer;
  old_writer.add("t", DType::U8, {2}, old_data.data(), 2);
  new_writer.add("t", DType::U8, {1}, new_data.data(), 1);
  old_writer.write(dir_ / "m.safetensors");
  new_writer.write(dir_ / "m.safetensors");
  EXPECT_EQ(tensor_bytes(SafetensorsFile::load(dir_ / "m.safetensors"), "t"), "\x09");
  EXPECT_EQ(testing::snapshot_tree(dir_.path()).size(), 1u) << "a temporary file was left behind";
}

TEST_F(SafetensorsTest, WriterRejectsBadTensors) {
  const std::vector<float> data(6);
  SafetensorsWriter writer;
  writer.add("w", DType::F32, {2, 3}, data.data(), 24);
  try {
    writer.add("w", DType::F32, {6}, data.data(), 24);
    FAIL() << "expected strait::Error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(std::string(error.what()), "'w' added twice");
  }
  try {
    writer.add("v", DType::F32, {2, 3}, data.data(), 20);
    FAIL() << "expected strait::Error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(std::string(error.what()), "F32 with shape [2, 3] = 24 bytes, but 20 bytes were given");
  }
  EXPECT_THROW(writer.add("n", DType::F32, {-1, 3}, data.data(), 0), Error);
  EXPECT_THROW(writer.add("__metadata__", DType::F32, {1}, data.data(), 4), Error);
  EXPECT_THROW(writer.add("huge", DType::F64, {INT64_MAX, INT64_MAX}, data.data(), 8), Error);
  EXPECT_THROW(writer.add("null", DType::F32, {1}, nullptr, 4), Error);
}

TEST_F(SafetensorsTest, WriterRejectsInvalidUtf8Names) {
  const std::vector<uint8_t> data = {1};
  SafetensorsWriter writer;
  writer.add("bad\xff", DType::U8, {1}, data.data(), 1);
  EXPECT_THROW(writer.write(dir_ / "bad.safetensors"), Error);
  EXPECT_FALSE(fs::exists(dir_ / "bad.safetensors"));
}

// --- Corrupt files: each must be rejected with a message naming the file and the problem. ---

const char* const kGoodHeader = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::string kGoodData = "12345678";

TEST_F(SafetensorsTest, TheUncorruptedBaseFileLoads) {
  EXPECT_EQ(tensor_bytes(SafetensorsFile::load(write(file_bytes(kGoodHeader, kGoodData))), "a"), kGoodData);
}

TEST_F(SafetensorsTest, RejectsFileShorterThanTheLength) {
  EXPECT_CONTAINS(load_error(""), "file is 0 bytes, too short");
  EXPECT_CONTAINS(load_error(std::string("\x10\0\0", 3)), "file is 3 bytes, too short");
}

TEST_F(SafetensorsTest, RejectsTruncatedFiles) {
  const std::string good = file_bytes(kGoodHeader, kGoodData);
  EXPECT_CONTAINS(load_error(good.substr(0, good.size() - 1)), "end 8 is beyond the data buffer of 7 bytes");
  EXPECT_CONTAINS(load_error(good.substr(0, 20)), "header length 54 is larger than the 12 bytes that follow it");
}

TEST_F(SafetensorsTest, RejectsAbsurdHeaderLength) {
  std::string bytes = file_bytes(kGoodHeader, kGoodData);
  bytes[7] = '\x80';  // flips the top bit of the length
  EXPECT_CONTAINS(load_error(bytes), "exceeds the limit of 100000000 bytes");
  EXPECT_CONTAINS(load_error(std::string("\x01\xe1\xf5\x05\0\0\0\0", 8) + "{}"), "header length 100000001 exceeds");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthCuttingTheJson) {
  std::string bytes = file_bytes(kGoodHeader, kGoodData);
  bytes[0] = static_cast<char>(bytes[0] - 3);
  EXPECT_CONTAINS(load_error(bytes), "header is not valid JSON");
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32",})", "")), "header is not valid JSON");
  EXPECT_CONTAINS(load_error(file_bytes("", "")), "header is not valid JSON");
  EXPECT_CONTAINS(load_error(file_bytes("{\"\xff\":1}", "")), "header is not valid JSON");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  EXPECT_CONTAINS(load_error(file_bytes("[1, 2]", "")), "header is a JSON array, expected an object");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":5})", "")), "tensor 'a': header entry is a JSON number");
}

TEST_F(SafetensorsTest, RejectsMissingFields) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", kGoodData)),
                  "tensor 'a': missing \"dtype\"");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", kGoodData)),
                  "tensor 'a': missing \"shape\"");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", kGoodData)),
                  "tensor 'a': missing \"data_offsets\"");
}

TEST_F(SafetensorsTest, RejectsFieldsOfTheWrongJsonType) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", kGoodData)),
                  "\"dtype\" is a JSON number, expected a JSON string");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", kGoodData)),
                  "\"shape\" is a JSON string, expected a JSON array");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":{}}})", kGoodData)),
                  "\"data_offsets\" is a JSON object, expected a JSON array");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", kGoodData)),
                  "dimension 0 is 2.0, expected a non-negative integer");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", kGoodData)),
                  "data_offsets END is \"8\", expected a non-negative integer");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}})", kGoodData)),
                  "expected a non-negative integer");
}

TEST_F(SafetensorsTest, RejectsUnexpectedFields) {
  EXPECT_CONTAINS(
      load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"scale":2}})", kGoodData)),
      "unexpected field \"scale\"");
}

TEST_F(SafetensorsTest, RejectsUnknownDType) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F8","shape":[8],"data_offsets":[0,8]}})", kGoodData)),
                  "tensor 'a': unknown dtype 'F8' (expected one of F64, F32");
}

TEST_F(SafetensorsTest, RejectsNegativeAndHugeDimensions) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kGoodData)),
                  "tensor 'a': dimension 0 is negative (-2)");
  EXPECT_CONTAINS(
      load_error(file_bytes(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", kGoodData)),
      "dimension 0 is 18446744073709551615, too large");
}

TEST_F(SafetensorsTest, RejectsShapesWhoseByteCountOverflows) {
  // 2^32 * 2^32 * 4 wraps to 0 in 64 bits, which would "match" offsets [0, 0].
  EXPECT_CONTAINS(
      load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "")),
      "shape [4294967296, 4294967296] is too large");
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kGoodData)),
                  "data_offsets has 1 elements, expected [BEGIN, END]");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", kGoodData)),
                  "end before they begin");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", kGoodData)),
                  "data_offsets BEGIN is negative (-8)");
  EXPECT_CONTAINS(
      load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", kGoodData + kGoodData)),
      "gap of 8 bytes in the data buffer before tensor 'a'");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[1000,1008]}})", kGoodData)),
                  "end 1008 is beyond the data buffer of 8 bytes");
}

TEST_F(SafetensorsTest, RejectsWrongByteCount) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "1234")),
                  "tensor 'a': data_offsets [0, 4] hold 4 bytes, but F32 with shape [2] needs 8");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,8]}})", kGoodData)),
                  "hold 8 bytes, but F32 with shape [] needs 4");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_CONTAINS(load_error(file_bytes(header, "123456789012")),
                  "tensor 'b' data_offsets [4, 12] overlap tensor 'a' data_offsets [0, 8]");
  const std::string same =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_CONTAINS(load_error(file_bytes(same, kGoodData)), "overlap");
}

TEST_F(SafetensorsTest, RejectsGapsBetweenTensors) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})";
  EXPECT_CONTAINS(load_error(file_bytes(header, "1234567")), "gap of 3 bytes in the data buffer before tensor 'b'");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  EXPECT_CONTAINS(load_error(file_bytes(kGoodHeader, kGoodData + "xyz")),
                  "3 trailing bytes after the last tensor (the data buffer is 11 bytes, the tensors end at 8)");
  EXPECT_CONTAINS(load_error(file_bytes("{}", "x")), "1 trailing bytes");
}

TEST_F(SafetensorsTest, AReaderThatExpectsTensorsNamesTheOnesWhoseEntriesWereDeleted) {
  // a, b and c were written; the header's entry for b (a gap), or for c (trailing bytes), is gone.
  const std::string data = "aabbcc";
  const std::string without_b =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"c":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
  const std::string without_c =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
  EXPECT_CONTAINS(load_error(file_bytes(without_b, data), {"a", "b", "c"}),
                  "the header lacks 'b', so part of the data buffer belongs to no tensor (gap of 2 bytes in the data "
                  "buffer before tensor 'c'");
  EXPECT_CONTAINS(load_error(file_bytes(without_c, data), {"a", "b", "c", "d"}),
                  "the header lacks 'c', 'd', so part of the data buffer belongs to no tensor (2 trailing bytes");
  // Without expectations, or when every expected tensor is listed, the layout problem alone.
  EXPECT_EQ(load_error(file_bytes(without_c, data)).find("lacks"), std::string::npos);
  EXPECT_EQ(load_error(file_bytes(without_c, data), {"a", "b"}).find("lacks"), std::string::npos);
  // A well-formed file that lacks an expected tensor loads; info() names it when asked.
  EXPECT_FALSE(SafetensorsFile::load(write(file_bytes(without_c, "aabb")), {"a", "c"}).contains("c"));
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  EXPECT_CONTAINS(load_error(file_bytes(R"({"__metadata__":{"epoch":3}})")),
                  "__metadata__ value of 'epoch' is a JSON number, expected a string");
  EXPECT_CONTAINS(load_error(file_bytes(R"({"__metadata__":["x"]})")),
                  "__metadata__ is a JSON array, expected an object");
}

TEST_F(SafetensorsTest, RejectsAMissingFile) {
  EXPECT_THROW(SafetensorsFile::load(dir_ / "absent.safetensors"), Error);
}

// Random corruption of a valid file must give either a loaded file or strait::Error: never a
// crash, a hang or another exception type.
TEST_F(SafetensorsTest, RandomlyMutatedFilesLoadOrThrowError) {
  const std::vector<float> weights = {1, 2, 3, 4, 5, 6};
  const std::vector<int64_t> ids = {7, 8};
  const std::vector<uint8_t> mask = {1, 0, 1};
  SafetensorsWriter writer;
  writer.add("w", DType::F32, {2, 3}, weights.data(), 24);
  writer.add("ids", DType::I64, {2}, ids.data(), 16);
  writer.add("scalar", DType::F32, {}, weights.data(), 4);
  writer.add("empty", DType::BF16, {0}, nullptr, 0);
  writer.add("mask", DType::Bool, {1, 3}, mask.data(), 3);
  writer.set_metadata("format", "pt");
  writer.write(dir_ / "valid.safetensors");
  const std::string valid = read_file(dir_ / "valid.safetensors");

  std::mt19937 random(20240520);
  auto below = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(random); };
  int loaded = 0, rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes = valid;
    for (size_t mutations = 1 + below(4); mutations > 0; --mutations) {
      size_t at = below(bytes.size() + 1);
      switch (below(3)) {
        case 0:
          if (at < bytes.size()) bytes[at] = static_cast<char>(bytes[at] ^ (1 << below(8)));
          break;
        case 1:
          bytes.insert(at, 1, static_cast<char>(below(256)));
          break;
        default:
          if (at < bytes.size()) bytes.erase(at, 1);
      }
    }
    // A fresh file each time: ext4 flushes a file that is truncated and rewritten in place.
    fs::path path = dir_ / ("mutant-" + std::to_string(trial) + ".safetensors");
    write_file(path, bytes);
    try {
      SafetensorsFile file = SafetensorsFile::load(path);
      uint64_t header_length = 0;
      std::memcpy(&header_length, bytes.data(), 8);
      for (const TensorInfo& tensor : file.tensors()) {
        ASSERT_LE(8 + header_length + tensor.offset + tensor.nbytes, bytes.size());
        EXPECT_EQ(tensor_bytes(file, tensor.name), bytes.substr(8 + header_length + tensor.offset, tensor.nbytes));
      }
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& other) {
      FAIL() << "trial " << trial << ": unexpected exception " << other.what();
    }
  }
  EXPECT_EQ(loaded + rejected, 2000);
  EXPECT_GT(loaded, 0) << "mutations never hit only the data buffer";
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace strait
