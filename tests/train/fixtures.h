// Small deterministic datasets and configurations for engine tests.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "strait/core/config.h"
#include "strait/core/metrics.h"
#include "strait/data/shard.h"
#include "test_support.h"

namespace strait::testing {

// Text with learnable structure (repeated sentences with a counter), as byte tokens.
inline std::vector<uint16_t> patterned_tokens(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and"};
  std::vector<uint16_t> tokens;
  while (tokens.size() < count) {
    std::string sentence;
    for (int i = 0; i < 6; ++i) sentence += words[generator() % words.size()] + " ";
    sentence.back() = '.';
    sentence += "\n";
    for (unsigned char c : sentence) tokens.push_back(c);
  }
  tokens.resize(count);
  return tokens;
}

// A prepared byte-level data directory: train_000000.bin, val_000000.bin, tokenizer.json.
inline void make_byte_dataset(const std::filesystem::path& dir, size_t train_tokens = 40000, size_t val_tokens = 8000) {
  std::filesystem::create_directories(dir);
  data::write_shard(dir / "train_000000.bin", patterned_tokens(train_tokens, 1));
  data::write_shard(dir / "val_000000.bin", patterned_tokens(val_tokens, 2));
  write_file(dir / "tokenizer.json", R"({"type": "byte", "vocab_size": 256})");
}

// The nano preset, one thread, small batches: a few milliseconds per step.
inline TrainConfig tiny_train_config(const std::filesystem::path& data, const std::filesystem::path& out) {
  TrainConfig config;
  config.data = data.string();
  config.out = out.string();
  config.preset = "nano";
  config.context_length = 32;
  config.batch_size = 4;
  config.steps = 20;
  config.warmup_steps = 5;
  config.lr = 3e-3;
  config.eval_every = 10;
  config.eval_batches = 2;
  config.checkpoint_every = 10;
  config.log_every = 10;
  config.threads = 1;
  config.precision = "fp32";  // equivalence tests compare fp32 runs exactly; bf16 has its own tests
  return config;
}

// The loss of every step in a run directory's metrics.jsonl.
inline std::vector<double> losses_of(const std::filesystem::path& run_dir) {
  std::vector<double> losses;
  for (const auto& line : read_metrics(run_dir / "metrics.jsonl")) losses.push_back(line.at("loss").get<double>());
  return losses;
}

}  // namespace strait::testing
