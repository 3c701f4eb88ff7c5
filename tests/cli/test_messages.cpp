// Messages that say what is wrong and what to do, on the real binary: a resume with another
// model names the keys that differ; a corrupt newest checkpoint names the older ones that verify
// and --resume-from continues from one; a mistyped command or option gets the nearest real one.
#include <gtest/gtest.h>

#include "strait/core/metrics.h"
#include "strait/train/checkpoint.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

class Messages : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 6000, 3000); }

  std::string train_args(const std::string& more) const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + run().string() +
           "' --preset nano --context-length 32 --batch-size 2 --threads 1 --eval-every 0 --eval-batches 1 " + more;
  }
  fs::path run() const { return scratch_ / "run"; }

  // Expects `arguments` to fail with `exit_code` and `message`, changing no file.
  std::string expect_rejected(const std::string& arguments, const std::string& message, int exit_code = 1) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait(arguments);
    EXPECT_EQ(result.exit_code, exit_code) << result.output;
    EXPECT_NE(result.output.find("strait: error: " + message), std::string::npos)
        << "expected '" << message << "' in:\n" << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: " << arguments;
    return result.output;
  }

  testing::ScratchDir scratch_;
};

TEST_F(Messages, ResumeWithAnotherModelNamesTheKeysThatDiffer) {
  auto result = testing::run_strait(train_args("--steps 2"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string output =
      expect_rejected(train_args("--steps 4 --resume --hidden-size 32"),
                      "cannot resume from " + checkpoint_dir(run(), 2).string() +
                          ": it holds a different model than the one configured: hidden_size 64 in the checkpoint vs "
                          "32 configured");
  EXPECT_EQ(output.find('{'), std::string::npos) << "no JSON dump of the configurations:\n" << output;
}

TEST_F(Messages, ACorruptNewestCheckpointNamesTheOlderOnesAndResumeFromUsesOne) {
  auto result = testing::run_strait(train_args("--steps 4 --checkpoint-every 2"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const fs::path newest = checkpoint_dir(run(), 4) / "model.safetensors";
  std::string bytes = testing::read_file(newest);
  bytes[bytes.size() - 3] ^= 0x20;
  testing::write_file(newest, bytes);
  const std::string output =
      expect_rejected(train_args("--steps 6 --resume"), "checkpoint file " + newest.string() + " is corrupt: checksum");
  EXPECT_NE(output.find("; older checkpoints that verify: step-000002; pass --resume-from step-000002 to continue "
                        "from the newest of them (the checkpoints after it are then removed)"),
            std::string::npos)
      << output;
  result = testing::run_strait(train_args("--steps 6 --resume-from step-000002"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("strait: removed " + checkpoint_dir(run(), 4).string() +
                               ": --resume-from continues from step 2"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(read_metrics(run() / "metrics.jsonl").size(), 6u);
  EXPECT_TRUE(fs::exists(checkpoint_dir(run(), 6) / "state.json"));
  expect_rejected(train_args("--steps 8 --resume-from step-000003"),
                  "--resume-from step-000003: " + checkpoint_dir(run(), 3).string() +
                      " does not exist; the run's checkpoints are: step-000002 step-000006");
}

TEST_F(Messages, MistypedCommandsAndOptionsGetTheNearestOne) {
  expect_rejected("trian --data x", "unknown command 'trian' (did you mean 'train'?); the commands are prepare, train", 2);
  expect_rejected("train --stpes 3 --data x", "train: unknown option --stpes (did you mean --steps?); see strait train --help", 2);
}

}  // namespace
}  // namespace strait
