// `strait codec` on the real binary: the decoded file and the report against the codec library
// and the size formula, the difference of two files, and the inputs it must refuse without
// touching anything.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "strait/codec/sparse_codec.h"
#include "strait/core/safetensors.h"
#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

std::vector<float> read_floats(const fs::path& path, const std::string& name) {
  const SafetensorsFile file = SafetensorsFile::load(path);
  const TensorInfo& info = file.info(name);
  EXPECT_EQ(info.dtype, DType::F32) << name;
  std::vector<float> values(info.nbytes / 4);
  std::memcpy(values.data(), file.data(name), info.nbytes);
  return values;
}

// The report: the last line on stdout.
nlohmann::json last_json_line(std::string output) {
  while (!output.empty() && output.back() == '\n') output.pop_back();
  return nlohmann::json::parse(output.substr(output.rfind('\n') + 1));
}

class CodecCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    matrix_ = testing::normal_floats(64 * 64, 1);
    later_ = testing::normal_floats(64 * 64, 2);
    vector_ = testing::normal_floats(100, 3);
    write(scratch_ / "a.safetensors", matrix_);
    write(scratch_ / "b.safetensors", later_);
  }

  void write(const fs::path& path, const std::vector<float>& matrix) {
    static const std::vector<int64_t> ids = {1, 2, 3};
    SafetensorsWriter writer;
    writer.add("w", DType::F32, {64, 64}, matrix.data(), matrix.size() * 4);
    writer.add("norm", DType::F32, {100}, vector_.data(), vector_.size() * 4);
    writer.add("ids", DType::I64, {3}, ids.data(), ids.size() * 8);
    writer.write(path);
  }

  // `strait codec` over a.safetensors into decoded.safetensors with `flags`: its JSON report
  // (empty when it failed, which the test has then been told).
  nlohmann::json codec_of_a(const std::string& flags) const {
    const auto result = testing::run_strait("--quiet codec --in '" + (scratch_ / "a.safetensors").string() +
                                            "' --out '" + decoded().string() + "' " + flags);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return result.exit_code == 0 ? last_json_line(result.output) : nlohmann::json();
  }
  fs::path decoded() const { return scratch_ / "decoded.safetensors"; }

  testing::ScratchDir scratch_;
  std::vector<float> matrix_, later_, vector_;
};

TEST_F(CodecCommand, WritesWhatAPeerWouldDecodeAndReportsTheFormulasBytes) {
  const fs::path out = decoded();
  const nlohmann::json report = codec_of_a("--index-coding fixed");
  ASSERT_FALSE(report.is_null());
  codec::SparseOptions options;
  options.index_coding = codec::IndexCoding::Fixed;
  // The same round through the library: compress, then decode.
  std::vector<float> expected(64 * 64, 0.0f);
  codec::add_decoded(codec::compress(matrix_.data(), {64, 64}, options), expected.data());
  EXPECT_EQ(read_floats(out, "w"), expected);
  EXPECT_EQ(read_floats(out, "norm").size(), 100u);
  EXPECT_EQ(report.at("skipped"), nlohmann::json::array({"ids"}));
  // w: one 4096 chunk keeps 64 values at 12 + 2 bits: 28 + 112 bytes; norm: 2 chunks of 50
  // keep 1 each at 6 + 2 bits: 28 + 2 bytes; plus the 32-byte header.
  const auto& w = report.at("tensors").at(0);
  EXPECT_EQ(w.at("name"), "w");
  EXPECT_EQ(w.at("kept"), 64);
  EXPECT_EQ(w.at("payload_bytes"), 140);
  EXPECT_EQ(w.at("bits_per_index"), 12);
  EXPECT_NEAR(w.at("ratio_fp32").get<double>(), 4.0 * 4096 / 140, 1e-9);
  EXPECT_GT(w.at("relative_error").get<double>(), 0.5);  // 64 of 4096 values of noise: most is not sent
  EXPECT_EQ(report.at("total").at("payload_bytes"), 32 + 140 + 30);
  EXPECT_EQ(report.at("total").at("payload_bytes"),
            codec::packed_size({{64, 64}, {100}}, options));
  EXPECT_EQ(report.at("index_coding"), "fixed");
}

TEST_F(CodecCommand, ByDefaultSendsTheSmallestIndexCodingAndReportsItsBitsPerIndex) {
  const nlohmann::json report = codec_of_a("");
  ASSERT_FALSE(report.is_null());
  const codec::SparseOptions options;  // auto
  const std::vector<codec::SparseTensor> sent = {codec::compress(matrix_.data(), {64, 64}, options),
                                                 codec::compress(vector_.data(), {100}, options)};
  const codec::PayloadStats stats = codec::payload_stats(sent, options);
  EXPECT_EQ(report.at("index_coding"), "auto");
  EXPECT_EQ(report.at("payload_coding"), codec::to_string(stats.coding));
  EXPECT_EQ(report.at("total").at("payload_bytes"), stats.bytes);
  EXPECT_EQ(report.at("total").at("bits_per_index"), stats.bits_per_index());
  const auto& w = report.at("tensors").at(0);
  EXPECT_EQ(w.at("payload_bytes"), stats.tensors.at(0).bytes);
  // Rice on w's 64 positions in 4096: well under fixed's 12 bits, so fewer than fixed's 140 bytes.
  EXPECT_LT(w.at("bits_per_index").get<double>(), 9.0);
  EXPECT_LT(w.at("payload_bytes").get<double>(), 140);
  std::vector<float> expected(64 * 64, 0.0f);
  codec::add_decoded(sent[0], expected.data());
  EXPECT_EQ(read_floats(decoded(), "w"), expected);
}

TEST_F(CodecCommand, CompressesTheDifferenceOfTwoFiles) {
  const fs::path out = scratch_ / "delta.safetensors";
  const auto result = testing::run_strait("--quiet codec --delta '" + (scratch_ / "a.safetensors").string() + "' '" +
                                          (scratch_ / "b.safetensors").string() + "' --out '" + out.string() +
                                          "' --topk 256");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::vector<float> difference(64 * 64), expected(64 * 64, 0.0f);
  for (size_t i = 0; i < difference.size(); ++i) difference[i] = matrix_[i] - later_[i];
  codec::SparseOptions options;
  options.topk = 256;
  codec::add_decoded(codec::compress(difference.data(), {64, 64}, options), expected.data());
  EXPECT_EQ(read_floats(out, "w"), expected);
  EXPECT_EQ(last_json_line(result.output).at("tensors").at(0).at("kept"), 256);
  EXPECT_EQ(read_floats(out, "norm"), std::vector<float>(100, 0.0f)) << "the same vector in both: Δ = 0";
}

TEST_F(CodecCommand, RefusesBadInputAndChangesNothing) {
  const fs::path a = scratch_ / "a.safetensors", out = scratch_ / "decoded.safetensors";
  const std::string a_bytes = testing::read_file(a);
  auto codec = [&](const std::string& arguments) { return testing::run_strait("--quiet codec " + arguments); };
  auto expect_error = [&](const testing::CommandResult& result, const std::string& message) {
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("strait: error: " + message), std::string::npos) << result.output;
  };
  expect_error(codec("--in '" + a.string() + "' --out '" + a.string() + "' --overwrite"),
               "codec: --out " + a.string() + " is one of the inputs; choose another file");
  testing::write_file(out, "my notes");
  expect_error(codec("--in '" + a.string() + "' --out '" + out.string() + "'"),
               "codec: " + out.string() + " exists (pass --overwrite to replace an earlier output)");
  expect_error(codec("--in '" + a.string() + "' --out '" + out.string() + "' --overwrite"),
               "codec: " + out.string() + " was not written by strait codec; refusing to replace it");
  EXPECT_EQ(testing::read_file(out), "my notes");
  fs::remove(out);
  // A tensor missing from the base, and a non-finite value.
  SafetensorsWriter only_norm;
  only_norm.add("norm", DType::F32, {100}, vector_.data(), 400);
  only_norm.write(scratch_ / "c.safetensors");
  expect_error(codec("--delta '" + a.string() + "' '" + (scratch_ / "c.safetensors").string() + "' --out '" +
                     out.string() + "'"),
               "codec: " + (scratch_ / "c.safetensors").string() + " has no tensor 'w'");
  matrix_[7] = std::nanf("");
  write(scratch_ / "nan.safetensors", matrix_);
  expect_error(codec("--in '" + (scratch_ / "nan.safetensors").string() + "' --out '" + out.string() + "'"),
               "codec: tensor 'w': sparse codec: element 7 is not finite");
  expect_error(codec("--out '" + out.string() + "'"), "codec: pass --in FILE or --delta A B");
  const auto bad_coding = codec("--in '" + a.string() + "' --out '" + out.string() + "' --index-coding golomb");
  EXPECT_EQ(bad_coding.exit_code, 2) << bad_coding.output;
  EXPECT_NE(bad_coding.output.find("index coding 'golomb' is not one of fixed, rice, bitmap, auto"), std::string::npos)
      << bad_coding.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(testing::read_file(a), a_bytes);
  // A second run may replace the first's output.
  ASSERT_EQ(codec("--in '" + a.string() + "' --out '" + out.string() + "'").exit_code, 0);
  EXPECT_EQ(codec("--in '" + a.string() + "' --out '" + out.string() + "' --overwrite --topk 128").exit_code, 0);
}

}  // namespace
}  // namespace strait
