// Preemption on the real binary: SIGTERM to a trainer (one process, DDP ranks, replicas of an
// outer method) finishes the step the ranks agree on, writes a checkpoint there, says so and
// exits with 128 + 15; --resume from it continues bit for bit like a run that was never
// stopped. A second signal exits at once. Staging directories that killed commands left are
// removed by the next command that owns their place.
#include <gtest/gtest.h>

#include <csignal>
#include <regex>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "strait/train/checkpoint.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::quoted;

class Preemption : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(data_dir(), 20000, 3000); }

  fs::path data_dir() const { return scratch_ / "data"; }

  // 400 steps: far more than a signal sent after step 2 lets it train.
  std::string train_args(const fs::path& run) const {
    return "--quiet train --data " + quoted(data_dir()) + " --out " + quoted(run) +
           " --preset nano --context-length 32 --batch-size 2 --steps 400 --threads 1 --eval-every 0 "
           "--eval-batches 1 --checkpoint-every 1000";
  }

  std::string launch(int ranks) const {
    return "'" STRAIT_BINARY "' launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
           std::to_string(testing::free_tcp_port()) + " -- ";
  }

  // Starts `command` (a strait command line) in the background, and `reference` (if not empty)
  // beside it; waits until `run` has 2 metrics lines, sends SIGTERM to `target` (a shell
  // expression of the PIDs; $pid is the command's) and returns the command's output and exit
  // status (and the reference's exit status as reference=N).
  testing::CommandResult interrupt(const std::string& command, const fs::path& run, const std::string& target,
                                   const std::string& reference = "") {
    const fs::path log = scratch_ / "interrupted.log";
    const std::string script =
        (reference.empty() ? "" : reference + " > " + quoted(scratch_ / "reference.log") + " 2>&1 &\nref=$!\n") +
        command + " > " + quoted(log) + " 2>&1 &\n"
        "pid=$!\n"
        "for i in $(seq 2000); do [ \"$(wc -l < " + quoted(run / "metrics.jsonl") + " 2>/dev/null)\" -ge 2 ] 2>/dev/null && break; "
        "sleep 0.005; done\n"
        "kill -TERM " + target + "\n"
        "wait $pid\n"
        "echo \"exit=$?\"\n" +
        (reference.empty() ? "" : "wait $ref; echo \"reference=$?\"\n");
    testing::write_file(scratch_ / "interrupt.sh", script);
    auto result = testing::run_command("bash " + quoted(scratch_ / "interrupt.sh"));
    result.output = testing::read_file(log) + result.output;
    return result;
  }

  // The step the run says it stopped after, checking the whole line; -1 if absent.
  static int64_t stopped_step(const std::string& output, const fs::path& run) {
    std::smatch match;
    const std::regex line("strait: stopped by SIGTERM after step ([0-9]+): checkpoint (\\S+) written; exit status 143 "
                          "\\(strait train --resume continues from it\\)");
    if (!std::regex_search(output, match, line)) return -1;
    const int64_t step = std::stoll(match[1]);
    EXPECT_EQ(match[2].str(), checkpoint_dir(run, step).string());
    return step;
  }

  fs::path reference() const { return scratch_ / "reference"; }
  // The uninterrupted run that interrupt() trains beside the interrupted one: up to step kUntil.
  static constexpr int64_t kUntil = 40;
  std::string reference_command(const std::string& prefix, const std::string& extra = "") const {
    return prefix + train_args(reference()) + " --stop-after " + std::to_string(kUntil) + extra;
  }

  // Resumes `run` (stopped at `stopped`) up to step kUntil with `prefix`, and expects the same
  // loss and gradient norm at every step as the reference run, and the same weights at the end.
  void expect_resume_is_exact(const std::string& prefix, const fs::path& run, int64_t stopped,
                              const std::string& extra = "") {
    ASSERT_LT(stopped, kUntil) << "the signal came too late for this test";
    const auto result = testing::run_command(prefix + train_args(run) + " --stop-after " + std::to_string(kUntil) +
                                             extra + " --resume");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto resumed = read_metrics(run / "metrics.jsonl"), straight = read_metrics(reference() / "metrics.jsonl");
    ASSERT_EQ(resumed.size(), static_cast<size_t>(kUntil));
    ASSERT_EQ(straight.size(), resumed.size());
    for (size_t i = 0; i < straight.size(); ++i) {
      EXPECT_EQ(resumed[i].at("loss").get<double>(), straight[i].at("loss").get<double>()) << "step " << i + 1;
      EXPECT_EQ(resumed[i].at("grad_norm").get<double>(), straight[i].at("grad_norm").get<double>()) << "step " << i + 1;
    }
    EXPECT_TRUE(testing::read_file(checkpoint_dir(run, kUntil) / "model.safetensors") ==
                testing::read_file(checkpoint_dir(reference(), kUntil) / "model.safetensors"));
  }

  testing::ScratchDir scratch_;
};

TEST_F(Preemption, SigtermToOneProcessCheckpointsTheStepAndResumesExactly) {
  const fs::path run = scratch_ / "run";
  const std::string strait = "'" STRAIT_BINARY "' ";
  const auto result = interrupt(strait + train_args(run), run, "$pid", reference_command(strait));
  ASSERT_NE(result.output.find("reference=0"), std::string::npos) << testing::read_file(scratch_ / "reference.log");
  EXPECT_NE(result.output.find("exit=143"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("strait: SIGTERM received during step "), std::string::npos) << result.output;
  const int64_t stopped = stopped_step(result.output, run);
  ASSERT_GT(stopped, 0) << result.output;
  ASSERT_LT(stopped, 400) << result.output;
  EXPECT_TRUE(fs::exists(checkpoint_dir(run, stopped) / "state.json"));
  EXPECT_EQ(read_metrics(run / "metrics.jsonl").size(), static_cast<size_t>(stopped));
  EXPECT_FALSE(fs::exists(run / ".lock")) << "the lock goes with the process";
  expect_resume_is_exact(strait, run, stopped);
}

TEST_F(Preemption, SigtermToTheLauncherStopsEveryDdpRankAtOneStep) {
  const fs::path run = scratch_ / "run";
  const auto result = interrupt(launch(2) + train_args(run), run, "$pid", reference_command(launch(2)));
  ASSERT_NE(result.output.find("reference=0"), std::string::npos) << testing::read_file(scratch_ / "reference.log");
  EXPECT_NE(result.output.find("exit=143"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("strait launch: received signal 15"), std::string::npos) << result.output;
  const int64_t stopped = stopped_step(result.output, run);
  ASSERT_GT(stopped, 0) << result.output;
  EXPECT_TRUE(fs::exists(checkpoint_dir(run, stopped) / "state.json"));
  expect_resume_is_exact(launch(2), run, stopped);
}

TEST_F(Preemption, ReplicasThatWereNotSignalledStopAtTheNextOuterSyncWithTheOthers) {
  // Local SGD over two one-rank replicas, synchronising every 4 steps: only one rank gets the
  // signal (the other learns of it only at the next sync: no byte crosses replicas in between),
  // and both stop at that sync.
  const fs::path run = scratch_ / "run";
  const std::string outer = " --strategy local-sgd --sync-every 4";
  const auto result = interrupt(launch(2) + train_args(run) + outer, run, "$(pgrep -P $pid | tail -n 1)");
  EXPECT_NE(result.output.find("exit=143"), std::string::npos) << result.output;
  const int64_t stopped = stopped_step(result.output, run);
  ASSERT_GT(stopped, 0) << result.output;
  EXPECT_EQ(stopped % 4, 0) << "replicas agree only at outer syncs; stopped at " << stopped;
  EXPECT_TRUE(fs::exists(checkpoint_dir(run, stopped) / "rank-00001" / "model.safetensors"));
  EXPECT_EQ(read_metrics(run / "metrics.jsonl").size(), static_cast<size_t>(stopped));
}

TEST_F(Preemption, ASecondSignalExitsAtOnce) {
  // Every checkpoint write takes 5 s more here: the second signal must not wait for it.
  const fs::path run = scratch_ / "run";
  const std::string wait_for = "for i in $(seq 2000); do ";
  const std::string script =
      "STRAIT_TEST_SLOW_CHECKPOINT_MS=5000 '" STRAIT_BINARY "' " + train_args(run) + " > " + quoted(scratch_ / "log") + " 2>&1 &\n"
      "pid=$!\n" + wait_for + "[ \"$(wc -l < " + quoted(run / "metrics.jsonl") + " 2>/dev/null)\" -ge 2 ] 2>/dev/null && break; "
      "sleep 0.005; done\n"
      "kill -TERM $pid\n" + wait_for + "grep -q 'received during step' " + quoted(scratch_ / "log") + " && break; "
      "sleep 0.005; done\n"
      "start=$(date +%s%N)\n"
      "kill -INT $pid\n"
      "wait $pid\n"
      "echo \"exit=$? ms=$(( ($(date +%s%N) - start) / 1000000 ))\"\n";
  testing::write_file(scratch_ / "twice.sh", script);
  const auto result = testing::run_command("bash " + quoted(scratch_ / "twice.sh"));
  const std::string log = testing::read_file(scratch_ / "log");
  EXPECT_NE(result.output.find("exit=130"), std::string::npos) << result.output << log;
  EXPECT_NE(log.find("strait: second stop signal: exiting at once, without a checkpoint"), std::string::npos) << log;
  std::smatch ms;
  ASSERT_TRUE(std::regex_search(result.output, ms, std::regex("ms=([0-9]+)"))) << result.output;
  EXPECT_LT(std::stoi(ms[1]), 2000) << "it waited for the checkpoint";
  EXPECT_FALSE(latest_checkpoint(run)) << "no checkpoint was committed";
}

// A PID that no process has any more.
pid_t dead_pid() {
  const auto result = testing::run_command("sh -c 'echo $$'");
  return static_cast<pid_t>(std::stol(result.output));
}

TEST_F(Preemption, StagingLeftByKilledCommandsIsRemovedByTheNextOwner) {
  // train --resume: a run whose writer was killed before its first checkpoint was committed.
  const fs::path run = scratch_ / "run";
  const std::string dead = std::to_string(dead_pid()), alive = std::to_string(::getpid());
  const fs::path checkpoints = run / "checkpoints";
  const std::vector<fs::path> abandoned = {checkpoints / (".step-000003.staging-" + dead + "-7"),
                                           checkpoints / ".step-000003.ranks"};
  const fs::path running = checkpoints / (".step-000009.staging-" + alive + "-7");  // its owner still runs
  for (const auto& dir : abandoned) testing::write_file(dir / "model.safetensors", "partial");
  testing::write_file(running / "model.safetensors", "being written");
  auto result = testing::run_strait(train_args(run) + " --stop-after 1 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const auto& dir : abandoned) {
    EXPECT_FALSE(fs::exists(dir));
    EXPECT_NE(result.output.find("strait: removed " + dir.string() + ", left by an interrupted checkpoint write"),
              std::string::npos) << result.output;
  }
  EXPECT_TRUE(fs::exists(running));

  // prepare --overwrite: a staging directory next to its output, from a killed prepare of it.
  testing::write_file(scratch_ / "text" / "a.txt", "Some text for a document.\n");
  testing::write_file(scratch_ / "text" / "b.txt", "Another document.\n");
  const fs::path prepared = scratch_ / "prepared";
  testing::write_file(prepared / "prepare.json", "{}");  // an earlier prepare's output
  const fs::path left = scratch_ / (".prepared.staging-" + dead + "-3");
  const fs::path other = scratch_ / (".other.staging-" + dead + "-3");  // another output's: not ours
  testing::write_file(left / "train_000000.bin", "partial");
  testing::write_file(other / "train_000000.bin", "partial");
  result = testing::run_strait("prepare " + quoted(scratch_ / "text") + " --out " + quoted(prepared) + " --overwrite");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(fs::exists(left));
  EXPECT_NE(result.output.find("prepare: removed " + left.string() + ", left by an interrupted prepare"),
            std::string::npos) << result.output;
  EXPECT_TRUE(fs::exists(other));
}

}  // namespace
}  // namespace strait
