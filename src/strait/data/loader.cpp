#include "strait/data/loader.h"

#include <algorithm>

#include "strait/core/error.h"
#include "strait/data/shard.h"

namespace strait::data {

namespace fs = std::filesystem;

namespace {

uint64_t cursor_field(const nlohmann::json& value, const char* key) {
  if (!value.contains(key)) throw Error("data cursor " + value.dump() + ": missing field \"" + key + "\"");
  const nlohmann::json& field = value.at(key);
  if (field.is_number_unsigned()) return field.get<uint64_t>();
  if (field.is_number_integer() && field.get<int64_t>() >= 0) return static_cast<uint64_t>(field.get<int64_t>());
  throw Error("data cursor: field \"" + std::string(key) + "\" must be a non-negative integer, found " + field.dump());
}

void check_loader_arguments(const std::vector<fs::path>& shards, int vocab_size, size_t batch_size, size_t seq_len,
                            int rank, int world_size) {
  if (shards.empty()) throw Error("token loader: no shards given");
  if (vocab_size < 1 || vocab_size > 65536) {
    throw Error("token loader: vocab_size " + std::to_string(vocab_size) + " is outside [1, 65536] (shards hold uint16 tokens)");
  }
  if (batch_size == 0 || seq_len == 0) {
    throw Error("token loader: batch_size " + std::to_string(batch_size) + " and seq_len " + std::to_string(seq_len) +
                " must both be at least 1");
  }
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw Error("token loader: rank " + std::to_string(rank) + " is not in [0, world_size) for world_size " +
                std::to_string(world_size));
  }
}

}  // namespace

bool operator==(const Cursor& a, const Cursor& b) {
  return a.epoch == b.epoch && a.shard == b.shard && a.position == b.position;
}
bool operator!=(const Cursor& a, const Cursor& b) { return !(a == b); }

nlohmann::json cursor_to_json(const Cursor& cursor) {
  return {{"epoch", cursor.epoch}, {"shard", cursor.shard}, {"position", cursor.position}};
}

Cursor cursor_from_json(const nlohmann::json& value) {
  if (!value.is_object()) throw Error("data cursor: expected a JSON object, found " + value.dump());
  return {cursor_field(value, "epoch"), cursor_field(value, "shard"), cursor_field(value, "position")};
}

std::vector<fs::path> list_shards(const fs::path& data_dir, const std::string& split) {
  if (!fs::is_directory(data_dir)) {
    throw Error("data directory " + data_dir.string() + " does not exist; run `strait prepare` first");
  }
  std::vector<fs::path> shards;
  const std::string prefix = split + "_";
  std::error_code error;
  for (fs::directory_iterator it(data_dir, error), end; !error && it != end; it.increment(error)) {
    std::string name = it->path().filename().string();
    bool matches = name.size() > prefix.size() + 4 && name.rfind(prefix, 0) == 0 &&
                   name.compare(name.size() - 4, 4, ".bin") == 0;
    if (matches && it->is_regular_file(error)) shards.push_back(it->path());
  }
  if (error) throw Error("cannot list data directory " + data_dir.string() + ": " + error.message());
  if (shards.empty()) throw Error("no " + split + " shards in " + data_dir.string() + "; run `strait prepare` first");
  std::sort(shards.begin(), shards.end());
  return shards;
}

TokenLoader::TokenLoader(std::vector<fs::path> shards, int vocab_size, size_t batch_size, size_t seq_len, int rank,
                         int world_size)
    : shards_(std::move(shards)), vocab_size_(vocab_size), batch_size_(batch_size), seq_len_(seq_len),
      rank_(static_cast<size_t>(rank)), world_size_(static_cast<size_t>(world_size)) {
  check_loader_arguments(shards_, vocab_size, batch_size, seq_len, rank, world_size);
  // Reading every header up front reports a bad or small shard at startup rather than hours
  // into training, when the loader first reaches it.
  for (const fs::path& shard : shards_) {
    size_t size = read_shard_token_count(shard);
    if (size < global_batch_tokens() + 1) {
      throw Error("shard " + shard.string() + " has " + std::to_string(size) + " tokens, too few for one batch: " +
                  std::to_string(world_size_) + " ranks x batch " + std::to_string(batch_size_) + " x seq_len " +
                  std::to_string(seq_len_) + " + 1 = " + std::to_string(global_batch_tokens() + 1) + " tokens needed");
    }
    shard_sizes_.push_back(size);
  }
}

size_t TokenLoader::tokens_per_batch() const { return batch_size_ * seq_len_; }

size_t TokenLoader::global_batch_tokens() const { return world_size_ * tokens_per_batch(); }

Cursor TokenLoader::cursor() const { return cursor_; }

void TokenLoader::reset() { cursor_ = Cursor{}; }

void TokenLoader::seek(const Cursor& cursor) {
  if (cursor.shard >= shards_.size()) {
    throw Error("data cursor shard " + std::to_string(cursor.shard) + " is out of range: there are " +
                std::to_string(shards_.size()) + " shards");
  }
  size_t size = shard_sizes_[cursor.shard];
  if (cursor.position + global_batch_tokens() + 1 > size) {
    throw Error("data cursor position " + std::to_string(cursor.position) + " in shard " +
                shards_[cursor.shard].string() + " (" + std::to_string(size) + " tokens) leaves no room for a batch of " +
                std::to_string(global_batch_tokens() + 1) + " tokens");
  }
  cursor_ = cursor;
}

void TokenLoader::next_batch(std::vector<int64_t>& inputs, std::vector<int64_t>& targets) {
  if (loaded_shard_ != cursor_.shard) load_shard(cursor_.shard);
  const size_t count = tokens_per_batch();
  const uint16_t* start = tokens_.data() + cursor_.position + rank_ * count;
  inputs.assign(start, start + count);
  targets.assign(start + 1, start + count + 1);
  advance();
}

void TokenLoader::load_shard(size_t index) {
  // Drop the old shard first so that two never sit in memory together.
  loaded_shard_.reset();
  tokens_ = {};
  const fs::path& path = shards_[index];
  std::vector<uint16_t> tokens = read_shard(path);
  if (tokens.size() != shard_sizes_[index]) {
    throw Error("shard " + path.string() + " changed while in use: it had " + std::to_string(shard_sizes_[index]) +
                " tokens, now " + std::to_string(tokens.size()));
  }
  check_token_range(tokens, vocab_size_, path.string());
  tokens_ = std::move(tokens);
  loaded_shard_ = index;
}

void TokenLoader::advance() {
  cursor_.position += global_batch_tokens();
  if (cursor_.position + global_batch_tokens() + 1 <= shard_sizes_[cursor_.shard]) return;
  cursor_.position = 0;
  if (++cursor_.shard < shards_.size()) return;
  cursor_.shard = 0;
  ++cursor_.epoch;
}

}  // namespace strait::data
