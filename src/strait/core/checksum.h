// XXH64 checksums. Shards, checkpoints and tokenizers record the hash of every file they
// depend on, so a swapped or corrupted file is caught before training silently uses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace strait {

uint64_t xxh64(const void* data, size_t size, uint64_t seed = 0);

// 16 lowercase hex digits, zero-padded: the form written into manifests.
std::string xxh64_hex(const void* data, size_t size);

// Streams the file in chunks, so hashing a multi-gigabyte shard needs no more memory than a
// chunk. Throws strait::Error naming the path if it cannot be opened or read.
std::string xxh64_file_hex(const std::filesystem::path& path);

}  // namespace strait
