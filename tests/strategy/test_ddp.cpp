// DDP end to end with real processes on loopback: equivalence with one process on the global
// batch, traffic that matches the ring formula, and what happens when a rank dies.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "strait/core/metrics.h"
#include "strait/train/checkpoint.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::losses_of;

class Ddp : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 40000, 8000); }

  std::string train_args(const fs::path& out, int64_t batch_size, int64_t steps = 20,
                         const std::string& precision = "fp32") const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size " + std::to_string(batch_size) + " --steps " +
           std::to_string(steps) + " --warmup-steps 5 --lr 3e-3 --threads 1 --precision " + precision + " --eval-every 10 "
           "--eval-batches 2 --checkpoint-every 5 --comm-timeout-s 10";
  }

  testing::ScratchDir scratch_;
};

TEST_F(Ddp, TwoAndFourRanksMatchOneProcessOnTheGlobalBatch) {
  for (int ranks : {2, 4}) {
    const fs::path single = scratch_ / ("single-" + std::to_string(ranks));
    const fs::path ddp = scratch_ / ("ddp-" + std::to_string(ranks));
    auto result = testing::run_strait(train_args(single, 2 * ranks));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    result = testing::run_strait("launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
                                 std::to_string(testing::free_tcp_port()) + " -- " + train_args(ddp, 2) + " --bucket-mb 0.0625");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    auto expected = losses_of(single), actual = losses_of(ddp);
    ASSERT_EQ(expected.size(), 20u);
    ASSERT_EQ(actual.size(), 20u);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << ranks << " ranks, step " << i + 1;
    }
    // Every step all-reduces the whole fp32 gradient once: a ring moves 2(n-1)/n of it per rank.
    const auto summary = nlohmann::json::parse(testing::read_file(ddp / "summary.json"));
    const double gradient_bytes = 4.0 * summary.at("parameters").get<double>();
    // 64 KiB buckets: the nano model's gradient fills several, and in every step (the hooks are
    // in place before the first backward) every bucket starts during backward.
    EXPECT_GT(summary.at("buckets").get<int>(), 1);
    EXPECT_EQ(summary.at("buckets_started_during_backward").get<int>(), 20 * summary.at("buckets").get<int>());
    for (const auto& line : read_metrics(ddp / "metrics.jsonl")) {
      const double sent = line.at("traffic").at("intra_node").at("sent").get<double>();
      const double ring = 2.0 * (ranks - 1) / ranks * gradient_bytes;
      EXPECT_GE(sent, ring) << "step " << line.at("step");
      EXPECT_LE(sent, ring + 256) << "step " << line.at("step");  // + the loss and val-loss scalars
      // The wait for the reductions is a part of the update's time.
      const double blocked = line.at("comm_blocked_ms").get<double>();
      EXPECT_GE(blocked, 0) << "step " << line.at("step");
      EXPECT_LE(blocked, line.at("update_ms").get<double>()) << "step " << line.at("step");
    }
  }
}

TEST_F(Ddp, Bf16MixedPrecisionKeepsFp32GradientsOnTheWire) {
  const fs::path single = scratch_ / "single", ddp = scratch_ / "ddp";
  auto result = testing::run_strait(train_args(single, 4, 10, "bf16-mixed"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = testing::run_strait("launch --nproc-per-node 2 --master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                               train_args(ddp, 2, 10, "bf16-mixed"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // bf16 products of a 4-row and a 2-row batch may round differently, so not bit-equal.
  auto expected = losses_of(single), actual = losses_of(ddp);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 2e-3 * expected[i]) << "step " << i + 1;
  const auto summary = nlohmann::json::parse(testing::read_file(ddp / "summary.json"));
  EXPECT_EQ(summary.at("precision"), "bf16-mixed");
  // Gradients stay fp32 on the wire: the ring moves 2(n-1)/n * 4 bytes * parameters per step.
  const double per_step = summary.at("traffic").at("operations").at("allreduce_gradients").at("intra_node").at("sent").get<double>() / 10;
  EXPECT_EQ(per_step, 4.0 * summary.at("parameters").get<double>());
}

TEST_F(Ddp, TwoNodesUseTheHierarchicalAllReduceAndCrossTheBoundaryOnce) {
  // Two "nodes" of two ranks each on this machine: two launchers, as on two hosts.
  const fs::path single = scratch_ / "single", ddp = scratch_ / "two-nodes";
  auto result = testing::run_strait(train_args(single, 8, 10));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string launch = "'" STRAIT_BINARY "' launch --nproc-per-node 2 --nnodes 2 --master-port " +
                             std::to_string(testing::free_tcp_port()) + " --node-rank ";
  const std::string script = launch + "1 -- " + train_args(ddp, 2, 10) + " > node1.log 2>&1 &\n" + launch + "0 -- " +
                             train_args(ddp, 2, 10) + " > node0.log 2>&1\necho node0-exit=$?\nwait $!; echo node1-exit=$?\n";
  testing::write_file(scratch_ / "two-nodes.sh", "cd '" + scratch_.path().string() + "'\n" + script);
  result = testing::run_command("bash '" + (scratch_ / "two-nodes.sh").string() + "'");
  ASSERT_NE(result.output.find("node0-exit=0"), std::string::npos) << result.output << testing::read_file(scratch_ / "node0.log");
  ASSERT_NE(result.output.find("node1-exit=0"), std::string::npos) << result.output << testing::read_file(scratch_ / "node1.log");

  auto expected = losses_of(single), actual = losses_of(ddp);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << "step " << i + 1;
  // Reduce-scatter inside the node leaves each rank M/2 of the gradient; the ring all-reduce of
  // that slice between the two nodes sends 2(n-1)/n * M/2 = M/2; the all-gather stays inside.
  // So rank 0 sends exactly M/2 across nodes per step (M/node: each byte crosses once), where a
  // flat 4-rank ring would send 1.5 M per node.
  const auto summary = nlohmann::json::parse(testing::read_file(ddp / "summary.json"));
  EXPECT_EQ(summary.at("nodes"), 2) << "the summary says over how many nodes it counted";
  const double gradient_bytes = 4.0 * summary.at("parameters").get<double>();
  double gradient_cross_node = 0;
  for (const auto& [operation, traffic] : summary.at("traffic").at("operations").items()) {
    if (operation.rfind("hierarchical_allreduce", 0) == 0) gradient_cross_node += traffic.at("cross_node").at("sent").get<double>();
  }
  EXPECT_EQ(gradient_cross_node, 10 * gradient_bytes / 2) << summary.at("traffic").dump(2);
  for (const auto& line : read_metrics(ddp / "metrics.jsonl")) {
    // The step's gradient, plus the 8-byte loss (and val-loss) means over the world ring.
    const double sent = line.at("traffic").at("cross_node").at("sent").get<double>();
    EXPECT_GE(sent, gradient_bytes / 2) << "step " << line.at("step");
    EXPECT_LE(sent, gradient_bytes / 2 + 32) << "step " << line.at("step");
  }
}

// Runs two ranks as separate processes (no launcher), so one can be killed while the other is
// watched. Returns the survivor's exit code and output.
TEST_F(Ddp, KilledRankMakesTheOtherExitWithACleanErrorAndResumeContinuesExactly) {
  const fs::path straight = scratch_ / "straight", interrupted = scratch_ / "interrupted";
  auto result = testing::run_strait("launch --nproc-per-node 2 --master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                                    train_args(straight, 2, 30));
  ASSERT_EQ(result.exit_code, 0) << result.output;

  const std::string env = "WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(testing::free_tcp_port());
  const std::string rank_command = "'" STRAIT_BINARY "' " + train_args(interrupted, 2, 30);
  const fs::path metrics = interrupted / "metrics.jsonl";
  const std::string script =
      "cd '" + scratch_.path().string() + "'\n" + env + " RANK=0 LOCAL_RANK=0 " + rank_command + " > rank0.log 2>&1 &\n" +
      "r0=$!\n" + env + " RANK=1 LOCAL_RANK=1 " + rank_command + " > rank1.log 2>&1 &\n" +
      "r1=$!\n"
      // Kill rank 1 once at least 12 steps are done (a checkpoint exists at step 10).
      "for i in $(seq 600); do n=$(cat '" + metrics.string() + "' 2>/dev/null | wc -l); [ \"$n\" -ge 12 ] && break; sleep 0.05; done\n"
      "kill -9 $r1\n"
      "start=$(date +%s)\n"
      "wait $r0; echo \"rank0-exit=$? after $(( $(date +%s) - start ))s\"\n";
  testing::write_file(scratch_ / "kill.sh", script);
  result = testing::run_command("bash '" + (scratch_ / "kill.sh").string() + "'");
  const std::string log = testing::read_file(scratch_ / "rank0.log");
  EXPECT_NE(result.output.find("rank0-exit=1 "), std::string::npos) << result.output << log;
  EXPECT_NE(log.find("strait: error: "), std::string::npos) << log;
  // Rank 1 died in a step (the failed collective and the lost peer are named) or while rank 0
  // waited for a checkpoint's commit (the wait is named; the next test makes that case certain).
  const bool in_a_step = log.find("all_reduce_sum") != std::string::npos && log.find("global ranks 1") != std::string::npos;
  const bool in_a_wait = log.find("checkpoint of step") != std::string::npos && log.find("was lost") != std::string::npos;
  EXPECT_TRUE(in_a_step || in_a_wait) << "the failure says what rank 0 was doing and who was lost:\n" << log;
  const int seconds = std::stoi(result.output.substr(result.output.find(" after ") + 7));
  EXPECT_LE(seconds, 15) << "the survivor must fail within the configured timeout";

  // No partial checkpoint looks valid: every step-N directory has a state.json whose checksums hold,
  // which resume verifies; resuming continues exactly as the uninterrupted run.
  result = testing::run_strait("launch --nproc-per-node 2 --master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                               train_args(interrupted, 2, 30) + " --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(straight), losses_of(interrupted));
}

TEST_F(Ddp, ARankLostDuringACheckpointWaitFailsTheOthersAtOnce) {
  // Rank 0 writes every checkpoint 4 s slowly; rank 1 is killed while it waits for the commit of
  // step 5. Rank 0 then reaches the wait with a dead peer: it must fail at once, not after
  // --checkpoint-timeout-s (600 s) or --comm-timeout-s (60 s).
  const fs::path run = scratch_ / "lost-in-wait";
  const std::string env = "STRAIT_TEST_SLOW_CHECKPOINT_MS=4000 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "
                          "MASTER_PORT=" + std::to_string(testing::free_tcp_port());
  const std::string rank_command = "'" STRAIT_BINARY "' " + train_args(run, 2, 10) +
                                   " --comm-timeout-s 60 --checkpoint-timeout-s 600";
  const std::string script =
      "cd '" + scratch_.path().string() + "'\n" + env + " RANK=0 LOCAL_RANK=0 " + rank_command + " > rank0.log 2>&1 &\n" +
      "r0=$!\n" + env + " RANK=1 LOCAL_RANK=1 " + rank_command + " > rank1.log 2>&1 &\n" +
      "r1=$!\n"
      // Step 5's metrics line is written just before its checkpoint.
      "for i in $(seq 600); do n=$(cat '" + (run / "metrics.jsonl").string() + "' 2>/dev/null | wc -l); [ \"$n\" -ge 5 ] && break; sleep 0.05; done\n"
      "kill -9 $r1\n"
      "start=$(date +%s)\n"
      "wait $r0; echo \"rank0-exit=$? after $(( $(date +%s) - start ))s\"\n";
  testing::write_file(scratch_ / "kill.sh", script);
  auto result = testing::run_command("bash '" + (scratch_ / "kill.sh").string() + "'");
  const std::string log = testing::read_file(scratch_ / "rank0.log");
  EXPECT_NE(result.output.find("rank0-exit=1 "), std::string::npos) << result.output << log;
  EXPECT_NE(log.find("checkpoint of step 5: committed: not every rank arrived within 600000 ms, or one was lost"),
            std::string::npos) << log;
  const int seconds = std::stoi(result.output.substr(result.output.find(" after ") + 7));
  EXPECT_LE(seconds, 20) << "the 4 s write, then an immediate failure";
  EXPECT_FALSE(fs::exists(checkpoint_dir(run, 10)));
}

TEST_F(Ddp, ASlowCheckpointWriteDoesNotTripTheOtherRanksTimeout) {
  // Rank 0 takes 6 s more than the 3 s comm timeout for every checkpoint (steps 5 and 6); rank 1
  // waits for it (checkpoint_timeout_s) instead of failing in its next collective.
  const fs::path run = scratch_ / "slow-storage";
  auto result = testing::run_command("STRAIT_TEST_SLOW_CHECKPOINT_MS=6000 '" STRAIT_BINARY
                                     "' launch --nproc-per-node 2 --master-port " +
                                     std::to_string(testing::free_tcp_port()) + " -- " + train_args(run, 2, 6) +
                                     " --comm-timeout-s 3 --checkpoint-timeout-s 60");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(run).size(), 6u);
  EXPECT_TRUE(fs::exists(checkpoint_dir(run, 5)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(run, 6)));
}

TEST_F(Ddp, RanksWithDifferentConfigurationsRefuseToTrain) {
  const std::string env = "WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(testing::free_tcp_port());
  const fs::path out = scratch_ / "mismatch";
  const std::string script = "cd '" + scratch_.path().string() + "'\n" + env + " RANK=0 LOCAL_RANK=0 '" STRAIT_BINARY "' " +
                             train_args(out, 2) + " > rank0.log 2>&1 &\nr0=$!\n" + env + " RANK=1 LOCAL_RANK=1 '" STRAIT_BINARY "' " +
                             train_args(out, 2) + " --seed 7 > rank1.log 2>&1\necho rank1-exit=$?\nwait $r0; echo rank0-exit=$?\n";
  testing::write_file(scratch_ / "mismatch.sh", script);
  auto result = testing::run_command("bash '" + (scratch_ / "mismatch.sh").string() + "'");
  EXPECT_NE(result.output.find("rank1-exit=1"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("rank0-exit=1"), std::string::npos) << result.output;
  for (const char* log : {"rank0.log", "rank1.log"}) {
    EXPECT_NE(testing::read_file(scratch_ / log).find("config_hash"), std::string::npos) << testing::read_file(scratch_ / log);
    EXPECT_NE(testing::read_file(scratch_ / log).find("rank 1 differs from rank 0 in: seed 7 on rank 1 vs 1337 on rank 0"),
              std::string::npos)
        << testing::read_file(scratch_ / log);
  }
  EXPECT_FALSE(fs::exists(out / "checkpoints"));
}

}  // namespace
}  // namespace strait
