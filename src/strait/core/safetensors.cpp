#include "strait/core/safetensors.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>

#include "strait/core/error.h"
#include "strait/core/fileio.h"

// Tensor bytes are copied verbatim between memory and the file, which the format defines as
// little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace strait {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The reference implementation's limit: larger headers are rejected before parsing so that a
// corrupt length cannot make us parse (or allocate for) gigabytes of "JSON".
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kLengthBytes = 8;
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeSpec {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeSpec kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::U16, "U16", 2},
    {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::Bool, "BOOL", 1},
};

const DTypeSpec& spec_of(DType dtype) {
  for (const DTypeSpec& spec : kDTypes) {
    if (spec.dtype == dtype) return spec;
  }
  throw Error("invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

const DTypeSpec* find_dtype(const std::string& name) {
  for (const DTypeSpec& spec : kDTypes) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

std::string known_dtype_names() {
  std::string names;
  for (const DTypeSpec& spec : kDTypes) names += std::string(names.empty() ? "" : ", ") + spec.name;
  return names;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string offsets_text(const TensorInfo& tensor) {
  return "[" + std::to_string(tensor.offset) + ", " + std::to_string(tensor.offset + tensor.nbytes) + "]";
}

// numel * dtype_size, or nothing if that does not fit in size_t: untrusted shapes such as
// [2^40, 2^40] must not wrap around to a small, plausible byte count.
std::optional<size_t> checked_nbytes(const std::vector<int64_t>& shape, DType dtype) {
  size_t total = dtype_size(dtype);
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(total, static_cast<size_t>(dim), &total)) return std::nullopt;
  }
  return total;
}

void append_u64_le(std::string& out, uint64_t value) {
  for (size_t i = 0; i < kLengthBytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t read_u64_le(const std::string& bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) value |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  return value;
}

// --- Reading: each helper throws Error("<path>: <problem>") on the first thing wrong. ---

[[noreturn]] void fail(const fs::path& path, const std::string& problem) { throw Error(path.string() + ": " + problem); }

uint64_t read_header_length(const fs::path& path, const std::string& bytes) {
  if (bytes.size() < kLengthBytes) {
    fail(path, "file is " + std::to_string(bytes.size()) +
                   " bytes, too short for the 8-byte header length of a safetensors file");
  }
  uint64_t length = read_u64_le(bytes);
  if (length > kMaxHeaderBytes) {
    fail(path, "header length " + std::to_string(length) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                   " bytes; the file is corrupt or not safetensors");
  }
  if (length > bytes.size() - kLengthBytes) {
    fail(path, "header length " + std::to_string(length) + " is larger than the " +
                   std::to_string(bytes.size() - kLengthBytes) + " bytes that follow it; the file is truncated");
  }
  return length;
}

json parse_header(const fs::path& path, std::string_view text) {
  json header;
  try {
    header = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& error) {
    fail(path, std::string("header is not valid JSON: ") + error.what());
  }
  if (!header.is_object()) fail(path, std::string("header is a JSON ") + header.type_name() + ", expected an object");
  return header;
}

std::map<std::string, std::string> parse_metadata(const fs::path& path, const json& value) {
  std::map<std::string, std::string> metadata;
  // The reference implementation writes null when there is no metadata.
  if (value.is_null()) return metadata;
  if (!value.is_object()) fail(path, std::string("__metadata__ is a JSON ") + value.type_name() + ", expected an object");
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      fail(path, "__metadata__ value of '" + key + "' is a JSON " + item.type_name() + ", expected a string");
    }
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

const json& field(const fs::path& path, const std::string& where, const json& entry, const char* name,
                  json::value_t type) {
  auto found = entry.find(name);
  if (found == entry.end()) fail(path, where + ": missing \"" + name + "\"");
  if (found->type() != type) {
    fail(path, where + ": \"" + name + "\" is a JSON " + found->type_name() + ", expected a JSON " + json(type).type_name());
  }
  return *found;
}

// JSON integers arrive as unsigned when non-negative and as signed otherwise; anything else
// (floats, strings, booleans) is rejected.
uint64_t non_negative_integer(const fs::path& path, const std::string& what, const json& value) {
  if (!value.is_number_integer()) fail(path, what + " is " + value.dump() + ", expected a non-negative integer");
  if (!value.is_number_unsigned()) fail(path, what + " is negative (" + value.dump() + ")");
  return value.get<uint64_t>();
}

void reject_unknown_fields(const fs::path& path, const std::string& where, const json& entry) {
  // An unknown field probably means a format extension we do not understand (say, quantization
  // parameters); reading the bytes as plain tensors anyway could silently give wrong values.
  for (const auto& item : entry.items()) {
    const std::string& key = item.key();
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail(path, where + ": unexpected field \"" + key + "\" (expected only dtype, shape and data_offsets)");
    }
  }
}

DType parse_dtype(const fs::path& path, const std::string& where, const json& entry) {
  const std::string name = field(path, where, entry, "dtype", json::value_t::string).get<std::string>();
  const DTypeSpec* spec = find_dtype(name);
  if (spec == nullptr) fail(path, where + ": unknown dtype '" + name + "' (expected one of " + known_dtype_names() + ")");
  return spec->dtype;
}

std::vector<int64_t> parse_shape(const fs::path& path, const std::string& where, const json& entry) {
  std::vector<int64_t> shape;
  for (const json& dim : field(path, where, entry, "shape", json::value_t::array)) {
    uint64_t value = non_negative_integer(path, where + ": dimension " + std::to_string(shape.size()), dim);
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, where + ": dimension " + std::to_string(shape.size()) + " is " + std::to_string(value) + ", too large");
    }
    shape.push_back(static_cast<int64_t>(value));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const fs::path& path, const std::string& where, const json& entry) {
  const json& offsets = field(path, where, entry, "data_offsets", json::value_t::array);
  if (offsets.size() != 2) {
    fail(path, where + ": data_offsets has " + std::to_string(offsets.size()) + " elements, expected [BEGIN, END]");
  }
  uint64_t begin = non_negative_integer(path, where + ": data_offsets BEGIN", offsets[0]);
  uint64_t end = non_negative_integer(path, where + ": data_offsets END", offsets[1]);
  if (end < begin) fail(path, where + ": data_offsets " + offsets.dump() + " end before they begin");
  return {begin, end};
}

TensorInfo parse_tensor(const fs::path& path, const std::string& name, const json& entry, size_t data_size) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object()) {
    fail(path, where + ": header entry is a JSON " + entry.type_name() +
                   ", expected an object with dtype, shape and data_offsets");
  }
  reject_unknown_fields(path, where, entry);
  TensorInfo tensor{name, parse_dtype(path, where, entry), parse_shape(path, where, entry), 0, 0};
  auto [begin, end] = parse_offsets(path, where, entry);

  std::optional<size_t> expected = checked_nbytes(tensor.shape, tensor.dtype);
  if (!expected) fail(path, where + ": shape " + shape_text(tensor.shape) + " is too large (its byte count overflows)");
  if (end - begin != *expected) {
    fail(path, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                   std::to_string(end - begin) + " bytes, but " + dtype_name(tensor.dtype) + " with shape " +
                   shape_text(tensor.shape) + " needs " + std::to_string(*expected));
  }
  if (end > data_size) {
    fail(path, where + ": data_offsets end " + std::to_string(end) + " is beyond the data buffer of " +
                   std::to_string(data_size) + " bytes; the file is truncated");
  }
  tensor.offset = begin;
  tensor.nbytes = *expected;
  return tensor;
}

// The tensors, sorted by offset, must tile the data buffer exactly: any overlap means two
// tensors share bytes, and any gap or trailing bytes mean the header does not describe the data.
// Returns the first problem, or an empty string.
std::string tiling_problem(const std::vector<TensorInfo>& tensors, size_t data_size) {
  size_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& tensor : tensors) {
    if (tensor.offset < covered) {
      return "tensor '" + tensor.name + "' data_offsets " + offsets_text(tensor) + " overlap tensor '" + previous->name +
             "' data_offsets " + offsets_text(*previous);
    }
    if (tensor.offset > covered) {
      return "gap of " + std::to_string(tensor.offset - covered) + " bytes in the data buffer before tensor '" +
             tensor.name + "' (data_offsets " + offsets_text(tensor) + "); tensors must be contiguous";
    }
    covered = tensor.offset + tensor.nbytes;
    previous = &tensor;
  }
  if (covered != data_size) {
    return std::to_string(data_size - covered) + " trailing bytes after the last tensor (the data buffer is " +
           std::to_string(data_size) + " bytes, the tensors end at " + std::to_string(covered) + ")";
  }
  return "";
}

// The names among `expected` that the header lacks, quoted and comma-separated; empty if none.
std::string missing_names(const SafetensorsFile& file, const std::vector<std::string>& expected) {
  std::string names;
  for (const std::string& name : expected) {
    if (!file.contains(name)) names += (names.empty() ? "'" : ", '") + name + "'";
  }
  return names;
}

}  // namespace

size_t dtype_size(DType dtype) { return spec_of(dtype).size; }

std::string dtype_name(DType dtype) { return spec_of(dtype).name; }

DType dtype_from_name(const std::string& name) {
  const DTypeSpec* spec = find_dtype(name);
  if (spec == nullptr) throw Error("unknown safetensors dtype '" + name + "' (expected one of " + known_dtype_names() + ")");
  return spec->dtype;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                            size_t nbytes) {
  if (name == kMetadataKey) throw Error("safetensors: '__metadata__' is reserved and cannot name a tensor");
  for (const Entry& entry : entries_) {
    if (entry.name == name) throw Error("safetensors: tensor '" + name + "' added twice");
  }
  for (int64_t dim : shape) {
    if (dim < 0) throw Error("safetensors: tensor '" + name + "' has a negative dimension in shape " + shape_text(shape));
  }
  std::optional<size_t> expected = checked_nbytes(shape, dtype);
  if (!expected || *expected != nbytes) {
    throw Error("safetensors: tensor '" + name + "' is " + dtype_name(dtype) + " with shape " + shape_text(shape) +
                " = " + (expected ? std::to_string(*expected) : std::string("too many")) + " bytes, but " +
                std::to_string(nbytes) + " bytes were given");
  }
  if (data == nullptr && nbytes > 0) throw Error("safetensors: tensor '" + name + "' has no data pointer");
  entries_.push_back({name, dtype, std::move(shape), data, nbytes});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafetensorsWriter::write(const fs::path& path) const {
  // ordered_json keeps the header in add() order, matching the data layout, so the file reads
  // naturally; readers must not depend on that order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  size_t data_size = 0;
  for (const Entry& entry : entries_) {
    header[entry.name] = {{"dtype", dtype_name(entry.dtype)},
                          {"shape", entry.shape},
                          {"data_offsets", {data_size, data_size + entry.nbytes}}};
    data_size += entry.nbytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::type_error& error) {
    throw Error(path.string() + ": a tensor name or metadata string is not valid UTF-8: " + error.what());
  }
  header_text.append((kLengthBytes - header_text.size() % kLengthBytes) % kLengthBytes, ' ');

  std::string file;
  file.reserve(kLengthBytes + header_text.size() + data_size);
  append_u64_le(file, header_text.size());
  file += header_text;
  for (const Entry& entry : entries_) file.append(static_cast<const char*>(entry.data), entry.nbytes);
  atomic_write_file(path, file);
}

SafetensorsFile SafetensorsFile::load(const fs::path& path) { return load(path, {}); }

SafetensorsFile SafetensorsFile::load(const fs::path& path, const std::vector<std::string>& expected) {
  SafetensorsFile file;
  file.path_ = path;
  file.bytes_ = read_whole_file(path);
  uint64_t header_length = read_header_length(path, file.bytes_);
  json header = parse_header(path, std::string_view(file.bytes_).substr(kLengthBytes, header_length));
  file.data_start_ = kLengthBytes + header_length;
  const size_t data_size = file.bytes_.size() - file.data_start_;

  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      file.metadata_ = parse_metadata(path, value);
    } else {
      file.tensors_.push_back(parse_tensor(path, key, value, data_size));
    }
  }
  std::stable_sort(file.tensors_.begin(), file.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::make_pair(a.offset, a.nbytes) < std::make_pair(b.offset, b.nbytes);
  });
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  if (const std::string problem = tiling_problem(file.tensors_, data_size); !problem.empty()) {
    const std::string missing = missing_names(file, expected);
    fail(path, missing.empty() ? problem
                               : "the header lacks " + missing + ", so part of the data buffer belongs to no tensor (" +
                                     problem + ")");
  }
  return file;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto found = index_.find(name);
  if (found == index_.end()) throw Error(path_.string() + ": no tensor named '" + name + "'");
  return tensors_[found->second];
}

const uint8_t* SafetensorsFile::data(const std::string& name) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_start_ + info(name).offset;
}

}  // namespace strait
