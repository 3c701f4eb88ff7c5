// Deterministic, resumable batches from token shards. Where the next batch comes from is a
// Cursor, which checkpoints save and restore, so a resumed run sees exactly the batches an
// uninterrupted one would have.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace strait::data {

struct Cursor {
  uint64_t epoch = 0;
  uint64_t shard = 0;     // index into the loader's shard list
  uint64_t position = 0;  // token offset in that shard
};

bool operator==(const Cursor& a, const Cursor& b);
bool operator!=(const Cursor& a, const Cursor& b);

// {"epoch": E, "shard": S, "position": P}
nlohmann::json cursor_to_json(const Cursor& cursor);
// Throws strait::Error unless the value is an object with those three non-negative integers.
Cursor cursor_from_json(const nlohmann::json& value);

// DIR/<split>_*.bin sorted by name; throws strait::Error if there are none
// ("no train shards in DIR; run `strait prepare` first").
std::vector<std::filesystem::path> list_shards(const std::filesystem::path& data_dir, const std::string& split);

class TokenLoader {
 public:
  // Each batch is batch_size rows of seq_len+1 consecutive tokens; rank r of world_size reads
  // the r-th of world_size consecutive blocks of batch_size*seq_len tokens (llm.c style), so
  // ranks read disjoint data. Reads every shard's header now and throws strait::Error if a
  // shard is invalid or too small for one global batch (world_size*batch_size*seq_len + 1).
  TokenLoader(std::vector<std::filesystem::path> shards, int vocab_size, size_t batch_size, size_t seq_len,
              int rank = 0, int world_size = 1);

  // Resizes inputs and targets to batch_size*seq_len (row-major, row i at i*seq_len);
  // targets[i] is the token after inputs[i]. Loads and validates a shard when it is first
  // needed; only one shard is held in memory.
  void next_batch(std::vector<int64_t>& inputs, std::vector<int64_t>& targets);

  // Where the next batch will be read from.
  Cursor cursor() const;
  // Throws strait::Error if the shard index is out of range or the position leaves no room for
  // a global batch in that shard.
  void seek(const Cursor& cursor);
  // Back to epoch 0, shard 0, position 0.
  void reset();
  // batch_size * seq_len: the tokens one rank consumes per batch.
  size_t tokens_per_batch() const;
  size_t batch_size() const { return batch_size_; }
  size_t seq_len() const { return seq_len_; }

 private:
  size_t global_batch_tokens() const;
  void load_shard(size_t index);
  void advance();

  std::vector<std::filesystem::path> shards_;
  std::vector<size_t> shard_sizes_;
  int vocab_size_;
  size_t batch_size_;
  size_t seq_len_;
  size_t rank_;
  size_t world_size_;
  Cursor cursor_;
  std::optional<size_t> loaded_shard_;
  std::vector<uint16_t> tokens_;  // the tokens of *loaded_shard_
};

}  // namespace strait::data
