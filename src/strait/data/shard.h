// Token shards in llm.c's format, so strait's prepared data is interchangeable with llm.c's:
// a 1024-byte header of 256 little-endian int32 ([0] magic, [1] version, [2] token count,
// the rest zero) followed by the tokens as little-endian uint16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace strait::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr size_t kShardHeaderInts = 256;
constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

// Writes tokens atomically. Throws strait::Error if the count does not fit the int32 header.
void write_shard(const std::filesystem::path& path, const std::vector<uint16_t>& tokens);

// Reads and validates a whole shard: the file exists, holds at least the header, has the right
// magic and version, and its size is exactly 1024 + 2 * count. Throws strait::Error.
std::vector<uint16_t> read_shard(const std::filesystem::path& path);

// Validates the header and the file size like read_shard, without reading the tokens.
size_t read_shard_token_count(const std::filesystem::path& path);

// Throws strait::Error naming the shard, the index of the first bad token, its value and the
// vocabulary size if any token is >= vocab_size.
void check_token_range(const std::vector<uint16_t>& tokens, int vocab_size, const std::string& shard_name);

}  // namespace strait::data
