#include "strait/data/shard.h"

#include <fstream>
#include <limits>

#include "strait/core/error.h"
#include "strait/core/fileio.h"

namespace strait::data {

namespace fs = std::filesystem;

namespace {

// Bytes are assembled explicitly so the format stays little-endian whatever the host is.
int32_t decode_int32(const unsigned char* bytes) {
  uint32_t value = uint32_t{bytes[0]} | uint32_t{bytes[1]} << 8 | uint32_t{bytes[2]} << 16 | uint32_t{bytes[3]} << 24;
  return static_cast<int32_t>(value);
}

void encode_int32(int32_t value, unsigned char* out) {
  auto bits = static_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(bits >> (8 * i));
}

uintmax_t shard_file_size(const fs::path& path) {
  std::error_code error;
  fs::file_status status = fs::status(path, error);
  if (!fs::exists(status)) throw Error("shard " + path.string() + ": no such file");
  if (!fs::is_regular_file(status)) throw Error("shard " + path.string() + ": not a regular file");
  uintmax_t size = fs::file_size(path, error);
  if (error) throw Error("shard " + path.string() + ": cannot get its size: " + error.message());
  return size;
}

void read_exactly(std::ifstream& in, const fs::path& path, unsigned char* out, size_t size) {
  in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) throw Error("shard " + path.string() + ": read failed");
}

void check_file_size(const fs::path& path, uintmax_t actual, int32_t count) {
  uintmax_t expected = kShardHeaderBytes + 2 * static_cast<uintmax_t>(count);
  if (actual == expected) return;
  std::string problem = actual < expected ? "the file is truncated" : "the file has extra bytes after the tokens";
  throw Error("shard " + path.string() + ": header says " + std::to_string(count) + " tokens, so the file should be " +
              std::to_string(expected) + " bytes, but it is " + std::to_string(actual) + " bytes; " + problem);
}

// Validates everything but the token values and leaves `in` positioned at the first token.
size_t read_header(const fs::path& path, std::ifstream& in) {
  uintmax_t size = shard_file_size(path);
  if (size < kShardHeaderBytes) {
    throw Error("shard " + path.string() + ": file is " + std::to_string(size) + " bytes, shorter than the " +
                std::to_string(kShardHeaderBytes) + "-byte header; is this an llm.c shard?");
  }
  if (!in) throw Error("shard " + path.string() + ": cannot open it for reading");
  unsigned char header[kShardHeaderBytes];
  read_exactly(in, path, header, kShardHeaderBytes);
  int32_t magic = decode_int32(header);
  int32_t version = decode_int32(header + 4);
  int32_t count = decode_int32(header + 8);
  if (magic != kShardMagic) {
    throw Error("shard " + path.string() + ": bad magic " + std::to_string(magic) + " (expected " +
                std::to_string(kShardMagic) + "); is this an llm.c shard?");
  }
  if (version != kShardVersion) {
    throw Error("shard " + path.string() + ": unsupported version " + std::to_string(version) + " (expected " +
                std::to_string(kShardVersion) + ", uint16 tokens)");
  }
  if (count < 0) throw Error("shard " + path.string() + ": negative token count " + std::to_string(count) + " in the header");
  check_file_size(path, size, count);
  return static_cast<size_t>(count);
}

}  // namespace

void write_shard(const fs::path& path, const std::vector<uint16_t>& tokens) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw Error("shard " + path.string() + ": " + std::to_string(tokens.size()) +
                " tokens do not fit the int32 token count of the header (at most 2147483647)");
  }
  std::vector<unsigned char> bytes(kShardHeaderBytes + 2 * tokens.size(), 0);
  encode_int32(kShardMagic, bytes.data());
  encode_int32(kShardVersion, bytes.data() + 4);
  encode_int32(static_cast<int32_t>(tokens.size()), bytes.data() + 8);
  unsigned char* out = bytes.data() + kShardHeaderBytes;
  for (uint16_t token : tokens) {
    *out++ = static_cast<unsigned char>(token);
    *out++ = static_cast<unsigned char>(token >> 8);
  }
  atomic_write_file(path, bytes.data(), bytes.size());
}

std::vector<uint16_t> read_shard(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  size_t count = read_header(path, in);
  std::vector<unsigned char> bytes(2 * count);
  read_exactly(in, path, bytes.data(), bytes.size());
  std::vector<uint16_t> tokens(count);
  for (size_t i = 0; i < count; ++i) tokens[i] = static_cast<uint16_t>(bytes[2 * i] | bytes[2 * i + 1] << 8);
  return tokens;
}

size_t read_shard_token_count(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return read_header(path, in);
}

void check_token_range(const std::vector<uint16_t>& tokens, int vocab_size, const std::string& shard_name) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (static_cast<int>(tokens[i]) >= vocab_size) {
      throw Error("shard " + shard_name + ": token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary of size " + std::to_string(vocab_size) +
                  "; was this shard prepared with a different tokenizer?");
    }
  }
}

}  // namespace strait::data
