// The Hugging Face safetensors format, so checkpoints and exported weights can be read by
// (and read from) the wider ecosystem without pickle:
//   8-byte little-endian uint64 N, then N bytes of UTF-8 JSON header
//     {"NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...,
//      "__metadata__": {"key": "string value", ...}}
//   then the data buffer: every tensor row-major little-endian, contiguous, without gaps, in
//   order of offsets (which are relative to the start of the data buffer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace strait {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, U16, I8, U8, Bool };

size_t dtype_size(DType dtype);
// The header spelling: "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "U16", "I8", "U8", "BOOL".
std::string dtype_name(DType dtype);
// Throws strait::Error naming the unknown name and the known ones.
DType dtype_from_name(const std::string& name);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // empty for a 0-d scalar
  size_t offset;               // into the data buffer
  size_t nbytes;
};

class SafetensorsWriter {
 public:
  // Copies nothing until write(): data must stay valid until then. Throws on a duplicate name,
  // a negative dimension, or nbytes != numel * dtype_size(dtype).
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t nbytes);
  void set_metadata(const std::string& key, const std::string& value);
  // Atomic (temporary file + fsync + rename): a crash leaves the old file or the new one, never
  // a torn one. Tensors are stored in add() order; the header is padded with spaces to a
  // multiple of 8 bytes so that the data buffer starts 8-byte aligned. The whole file is
  // assembled in memory first, so this needs as much spare memory as the file's size.
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t nbytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsFile {
 public:
  // Reads the whole file and validates everything before returning, since the file is untrusted
  // input: lengths, JSON structure and types, dtypes, dimensions, that the tensors tile the data
  // buffer exactly (no overlap, gap, trailing or missing bytes) and that metadata values are
  // strings. Throws strait::Error("<path>: <problem>") otherwise.
  static SafetensorsFile load(const std::filesystem::path& path);
  // load() for a reader that knows which tensors the file must hold: when the layout check fails,
  // the tensors among `expected` that the header lacks are named, not only the gap or trailing
  // bytes their data leaves undescribed (as when a tensor's header entry was deleted).
  static SafetensorsFile load(const std::filesystem::path& path, const std::vector<std::string>& expected);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by offset
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws strait::Error("<path>: no tensor named '<name>'") if absent.
  const TensorInfo& info(const std::string& name) const;
  // The tensor's bytes. 8-byte aligned only if the writer padded the header (strait's writer
  // does); copy with memcpy rather than casting when the file may come from elsewhere.
  const uint8_t* data(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::string bytes_;        // the whole file
  size_t data_start_ = 0;    // where the data buffer begins in bytes_
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

}  // namespace strait
