// Every kind of bad input gets a clear error naming the problem, exit status 1, and leaves
// every file already on disk exactly as it was.
#include <gtest/gtest.h>

#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::make_byte_dataset(data_dir(), 6000, 3000);
    // A finished run whose files must survive every failure below.
    auto result = testing::run_strait("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                                      "' --preset nano --context-length 32 --batch-size 2 --steps 4 --threads 1 "
                                      "--eval-every 0 --eval-batches 1 --checkpoint-every 2");
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }

  fs::path data_dir() const { return scratch_ / "data"; }
  fs::path run_dir() const { return scratch_ / "run"; }
  fs::path checkpoint() const { return run_dir() / "checkpoints" / "step-000004"; }

  // Runs strait with `arguments`, expects exit status 1 with `message` in its output, and checks
  // that nothing under the scratch directory changed.
  void expect_rejected(const std::string& arguments, const std::string& message) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait(arguments);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("strait: error: "), std::string::npos) << result.output;
    EXPECT_NE(result.output.find(message), std::string::npos) << "expected '" << message << "' in:\n" << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: " << arguments;
  }

  std::string train_args(const fs::path& data) const {
    return "--quiet train --data '" + data.string() + "' --out '" + (scratch_ / "new-run").string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 2 --threads 1";
  }

  testing::ScratchDir scratch_;
};

TEST_F(BadInput, UnknownConfigKeySuggestsTheRightOne) {
  testing::write_file(scratch_ / "run.toml", "preset = \"nano\"\nwarmup_step = 10\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "' --data '" + data_dir().string() + "'",
                  "run.toml: unknown key 'warmup_step' (did you mean 'warmup_steps'?)");
}

TEST_F(BadInput, IllTypedConfigValues) {
  testing::write_file(scratch_ / "run.toml", "steps = \"many\"\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "'", "key 'steps' must be an integer, got \"many\"");
  testing::write_file(scratch_ / "run.json", R"({"lr": true})");
  expect_rejected("train --config '" + (scratch_ / "run.json").string() + "'", "key 'lr' must be a number, got true");
  expect_rejected(train_args(data_dir()) + " --grad-accum two", "--grad-accum must be an integer, got 'two'");
}

TEST_F(BadInput, MalformedConfigFile) {
  testing::write_file(scratch_ / "run.toml", "steps = = 3\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "'", "run.toml:1");
  expect_rejected("train --config '" + (scratch_ / "missing.toml").string() + "'", "missing.toml");
}

TEST_F(BadInput, MissingDataDirectory) {
  expect_rejected(train_args(scratch_ / "no-such-data"), "no-such-data");
}

TEST_F(BadInput, TruncatedShard) {
  fs::copy(data_dir(), scratch_ / "truncated");
  fs::resize_file(scratch_ / "truncated" / "train_000000.bin", 1024 + 2 * 1000 - 1);
  expect_rejected(train_args(scratch_ / "truncated"), "train_000000.bin");
}

TEST_F(BadInput, ShardWithWrongMagic) {
  fs::copy(data_dir(), scratch_ / "bad-magic");
  std::string bytes = testing::read_file(scratch_ / "bad-magic" / "train_000000.bin");
  bytes[0] = 0x7f;
  testing::write_file(scratch_ / "bad-magic" / "train_000000.bin", bytes);
  expect_rejected(train_args(scratch_ / "bad-magic"), "magic");
}

TEST_F(BadInput, TokenOutsideTheVocabulary) {
  fs::create_directories(scratch_ / "big-ids");
  std::vector<uint16_t> tokens(5000, 65);
  tokens[1234] = 300;
  data::write_shard(scratch_ / "big-ids" / "train_000000.bin", tokens);
  fs::copy_file(data_dir() / "val_000000.bin", scratch_ / "big-ids" / "val_000000.bin");
  fs::copy_file(data_dir() / "tokenizer.json", scratch_ / "big-ids" / "tokenizer.json");
  expect_rejected(train_args(scratch_ / "big-ids"), "300");
}

TEST_F(BadInput, SequenceLongerThanTheContext) {
  expect_rejected(train_args(data_dir()) + " --seq-len 64", "seq_len 64 exceeds the model's context length 32");
  expect_rejected("generate --checkpoint '" + checkpoint().string() + "' --prompt hello --max-tokens 40",
                  "exceeds the model's context length 32");
}

TEST_F(BadInput, ExistingRunIsNeverClobbered) {
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --steps 2",
                  "already holds a run; pass --resume to continue it or --overwrite to replace it");
}

TEST_F(BadInput, CorruptCheckpointIsDetectedOnResumeEvalAndExport) {
  std::string bytes = testing::read_file(checkpoint() / "model.safetensors");
  bytes[bytes.size() - 3] ^= 0x20;
  testing::write_file(checkpoint() / "model.safetensors", bytes);
  const std::string corrupt = "model.safetensors is corrupt: checksum";
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  corrupt);
  expect_rejected("eval --checkpoint '" + checkpoint().string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  corrupt);
  expect_rejected("export --checkpoint '" + checkpoint().string() + "' --out '" + (scratch_ / "hf").string() + "'", corrupt);
  fs::remove(checkpoint() / "state.json");
  expect_rejected("eval --checkpoint '" + checkpoint().string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  "state.json");
}

TEST_F(BadInput, ResumingAFinishedRunSaysSoAndChangesNothing) {
  // The run holds step 4; --steps 4 (finished) and --steps 3 (fewer) have nothing to train.
  for (const char* steps : {"4", "3"}) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait("--quiet train --data '" + data_dir().string() + "' --out '" +
                                            run_dir().string() + "' --preset nano --context-length 32 --batch-size 2 "
                                            "--threads 1 --eval-every 0 --eval-batches 1 --resume --steps " + steps);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("is finished: its newest checkpoint is at step 4 and --steps is " + std::string(steps) +
                                 "; nothing to do"),
              std::string::npos)
        << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed with --steps " << steps;
  }
}

TEST_F(BadInput, ResumeWithADifferentModelIsRefused) {
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --context-length 32 --hidden-size 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  "holds a different model");
}

TEST_F(BadInput, ExportNeverOverwritesWithoutBeingAsked) {
  fs::create_directories(scratch_ / "hf");
  testing::write_file(scratch_ / "hf" / "keep.txt", "mine");
  expect_rejected("export --checkpoint '" + checkpoint().string() + "' --out '" + (scratch_ / "hf").string() + "'",
                  "already exists; pass --overwrite");
}

TEST_F(BadInput, MissingCheckpoint) {
  expect_rejected("eval --checkpoint '" + (scratch_ / "nope").string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  "does not exist");
}

TEST_F(BadInput, UsageErrorsExitWithStatus2) {
  auto result = testing::run_strait("train --no-such-flag");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  result = testing::run_strait("");
  EXPECT_EQ(result.exit_code, 2) << result.output;
}

}  // namespace
}  // namespace strait
