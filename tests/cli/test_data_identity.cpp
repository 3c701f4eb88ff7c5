// Data identity on the real binary: prepare records every shard's and the tokenizer's hash;
// train refuses a data directory that changed after prepare, --resume refuses data other than
// the checkpoint's, eval refuses a shard of another tokenizer; each names the file, exits 1 and
// leaves every file as it was.
#include <gtest/gtest.h>

#include <random>

#include <nlohmann/json.hpp>

#include "strait/core/checksum.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::quoted;

class DataIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* words[] = {"river", "stone", "light", "garden", "market", "winter", "letter", "window", "the", "a"};
    std::mt19937 random(7);
    for (int file = 0; file < 4; ++file) {
      std::string text;
      for (int sentence = 0; sentence < 150; ++sentence) {
        for (int word = 0; word < 8; ++word) text += std::string(words[random() % 10]) + (word < 7 ? " " : ".\n");
      }
      testing::write_file(scratch_ / "corpus" / ("doc" + std::to_string(file) + ".txt"), text);
    }
  }

  testing::CommandResult prepare(const fs::path& out, const std::string& options = "") {
    return testing::run_strait("--quiet prepare " + quoted(scratch_ / "corpus") + " --out " + quoted(out) + options);
  }

  std::string train_args(const fs::path& data, const fs::path& run) const {
    return "--quiet train --data " + quoted(data) + " --out " + quoted(run) +
           " --preset nano --context-length 32 --batch-size 2 --threads 1 --eval-every 0 --eval-batches 1";
  }

  void expect_rejected(const std::string& arguments, const std::string& message) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait(arguments);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("strait: error: " + message), std::string::npos)
        << "expected '" << message << "' in:\n" << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: " << arguments;
  }

  testing::ScratchDir scratch_;
};

// Flips one token of `shard` to another byte value (still a valid byte-level token).
void change_a_token(const fs::path& shard) {
  std::string bytes = testing::read_file(shard);
  bytes[1024 + 2 * 10] = bytes[1024 + 2 * 10] == 'x' ? 'y' : 'x';
  testing::write_file(shard, bytes);
}

std::string entry(const fs::path& file) {
  return xxh64_file_hex(file) + " (" + std::to_string(fs::file_size(file)) + " bytes)";
}

TEST_F(DataIdentity, TrainAndResumeRefuseDataThatChangedOrIsNotTheCheckpoints) {
  const fs::path data = scratch_ / "data", run = scratch_ / "run";
  auto result = prepare(data);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto record = nlohmann::json::parse(testing::read_file(data / "prepare.json"));
  for (const char* name : {"train_000000.bin", "val_000000.bin", "tokenizer.json"}) {
    EXPECT_EQ(record.at("files").at(name).at("xxh64"), xxh64_file_hex(data / name)) << name;
  }
  result = testing::run_strait(train_args(data, run) + " --steps 2");
  ASSERT_EQ(result.exit_code, 0) << result.output;

  // Another prepared directory (its own record consistent): --resume names the shard that differs.
  const fs::path other = scratch_ / "other";
  fs::copy(data, other);
  const std::string trained_on = entry(data / "val_000000.bin");
  change_a_token(other / "val_000000.bin");
  auto other_record = record;
  other_record["files"]["val_000000.bin"]["xxh64"] = xxh64_file_hex(other / "val_000000.bin");
  testing::write_file(other / "prepare.json", other_record.dump(2));
  expect_rejected(train_args(other, run) + " --steps 4 --resume",
                  "cannot resume from " + (run / "checkpoints" / "step-000002").string() + ": --data " + other.string() +
                      " is not the data it was trained on: val_000000.bin has xxh64 " + entry(other / "val_000000.bin") +
                      " where the checkpoint recorded " + trained_on);

  // A shard edited after prepare: train (fresh or resumed) and eval name it.
  const fs::path changed = scratch_ / "changed";
  fs::copy(data, changed);
  change_a_token(changed / "train_000000.bin");
  const std::string message = "data directory " + changed.string() + " changed after prepare: train_000000.bin has xxh64 " +
                              entry(changed / "train_000000.bin") + " where prepare.json recorded " +
                              entry(data / "train_000000.bin");
  expect_rejected(train_args(changed, run) + " --steps 4 --resume", message);
  expect_rejected("eval --checkpoint " + quoted(run / "checkpoints" / "step-000002") + " --data " +
                      quoted(changed / "train_000000.bin"),
                  "eval: " + (changed / "train_000000.bin").string() + " changed after prepare: train_000000.bin has xxh64");
}

TEST_F(DataIdentity, EvalOfABpeCheckpointOnAByteShardIsRefused) {
  const fs::path bpe = scratch_ / "bpe", run = scratch_ / "run", bytes = scratch_ / "bytes";
  auto result = prepare(bpe, " --tokenizer bpe --vocab-size 300");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = testing::run_strait(train_args(bpe, run) + " --steps 1");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  testing::make_byte_dataset(bytes, 3000, 3000);
  expect_rejected("eval --checkpoint " + quoted(run / "checkpoints" / "step-000001") + " --data " +
                      quoted(bytes / "val_000000.bin"),
                  "eval: " + (bytes / "val_000000.bin").string() + " was prepared with another tokenizer (byte, 256 tokens, " +
                      (bytes / "tokenizer.json").string() + ") than the checkpoint's (sentencepiece, 300 tokens): its "
                      "token ids mean other text to this model");
}

}  // namespace
}  // namespace strait
