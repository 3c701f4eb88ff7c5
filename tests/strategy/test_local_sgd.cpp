// Outer methods and per-rank state end to end, with real processes on loopback: local SGD
// composed with single-process and DDP replicas, per-rank checkpoints, resume agreement, and
// nodes whose per-machine settings differ.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "strait/core/metrics.h"
#include "strait/train/checkpoint.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::losses_of;

class OuterMethods : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 40000, 8000); }

  std::string train_args(const fs::path& out, int64_t batch_size, int64_t steps = 12) const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size " + std::to_string(batch_size) + " --steps " +
           std::to_string(steps) + " --warmup-steps 3 --lr 3e-3 --threads 1 --precision fp32 --eval-every 6 "
           "--eval-batches 2 --checkpoint-every 3 --comm-timeout-s 20 --bucket-mb 0.0625";
  }

  testing::CommandResult launch(int ranks, const std::string& arguments) const {
    return testing::run_strait("launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
                               std::to_string(testing::free_tcp_port()) + " -- " + arguments);
  }

  // Runs one launcher per node (as on separate hosts), each with its own extra arguments and
  // environment; returns each node's exit code and log.
  std::vector<testing::CommandResult> two_nodes(int ranks_per_node, const std::string& node0_arguments,
                                                const std::string& node1_arguments,
                                                const std::string& node1_environment = "") {
    const std::string launch = "'" STRAIT_BINARY "' launch --nproc-per-node " + std::to_string(ranks_per_node) +
                               " --nnodes 2 --master-port " + std::to_string(testing::free_tcp_port()) +
                               " --node-rank ";
    const std::string script = "cd '" + scratch_.path().string() + "'\n" + node1_environment + " " + launch + "1 -- " +
                               node1_arguments + " > node1.log 2>&1 &\n" + launch + "0 -- " + node0_arguments +
                               " > node0.log 2>&1\necho $? > node0.exit\nwait $!; echo $? > node1.exit\n";
    testing::write_file(scratch_ / "two-nodes.sh", script);
    testing::run_command("bash '" + (scratch_ / "two-nodes.sh").string() + "'");
    std::vector<testing::CommandResult> results(2);
    for (int node = 0; node < 2; ++node) {
      const std::string n = std::to_string(node);
      results[node].exit_code = std::stoi(testing::read_file(scratch_ / ("node" + n + ".exit")));
      results[node].output = testing::read_file(scratch_ / ("node" + n + ".log"));
    }
    return results;
  }

  testing::ScratchDir scratch_;
};

TEST_F(OuterMethods, OneReplicaOfTwoRanksEqualsDdpBitForBit) {
  // With a single replica the outer average is the identity, so local SGD over DDP replicas
  // must reproduce DDP exactly: the composed path adds nothing to the inner step.
  const fs::path ddp = scratch_ / "ddp", composed = scratch_ / "composed";
  auto result = launch(2, train_args(ddp, 2));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(2, train_args(composed, 2) + " --strategy local-sgd --replica-ranks 2 --sync-every 4");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(composed), losses_of(ddp));
  const auto summary = nlohmann::json::parse(testing::read_file(composed / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "local-sgd(ddp x 2)");
  EXPECT_EQ(summary.at("replicas"), 1);
  EXPECT_EQ(summary.at("outer_syncs"), 3);  // steps 4, 8 and 12
}

TEST_F(OuterMethods, TwoReplicasOfTwoRanksEqualTwoReplicasOfOneRankWithTheDoubledBatch) {
  // Replica r reads the same tokens either way (rank blocks are consecutive), and DDP inside a
  // replica averages the same rows: equal up to the order of fp32 sums.
  const fs::path wide = scratch_ / "2x2", narrow = scratch_ / "2x1";
  auto result = launch(4, train_args(wide, 2) + " --strategy local-sgd --replica-ranks 2 --sync-every 4");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(2, train_args(narrow, 4) + " --strategy local-sgd --sync-every 4");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto expected = losses_of(narrow), actual = losses_of(wide);
  ASSERT_EQ(expected.size(), 12u);
  ASSERT_EQ(actual.size(), 12u);
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << "step " << i + 1;
  // Between outer syncs nothing crosses a replica boundary: in the 2x2 job, rank 0 talks to
  // rank 1 (its replica) every step and to rank 2 only at syncs.
  const auto summary = nlohmann::json::parse(testing::read_file(wide / "summary.json"));
  const auto& operations = summary.at("traffic").at("operations");
  EXPECT_EQ(operations.at("outer_weights/alltoall").at("calls"), 3);
  EXPECT_EQ(operations.at("outer_weights/in_replica").at("calls"), 3);
  // Rank 0 exchanges half the model (its position's shard) with rank 2, per sync: half of that
  // half to the other owner, and the other owner's mean back: 2 x 4 bytes x P/4 (fp32).
  const double parameters = summary.at("parameters").get<double>();
  const double padded_quarter = std::ceil(std::ceil(parameters / 2) / 2);
  EXPECT_EQ(summary.at("traffic_by_rank").at(0).at("cross_replica").at("sent").get<double>(),
            3 * (2 * 4 * padded_quarter + 8));
}

TEST_F(OuterMethods, PerRankStateSurvivesACheckpointAndResume) {
  // Local SGD with H = 4 and checkpoints every 3 steps: the stop at step 6 falls inside an H
  // window, where the two replicas' weights and AdamW moments differ. Resuming must restore each
  // rank's own state, or the average at step 8 (and every later loss) would change.
  const fs::path straight = scratch_ / "straight", resumed = scratch_ / "resumed";
  const std::string local_sgd = " --strategy local-sgd --sync-every 4";
  auto result = launch(2, train_args(straight, 2) + local_sgd);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(2, train_args(resumed, 2) + local_sgd + " --stop-after 6");
  ASSERT_EQ(result.exit_code, 0) << result.output;

  const fs::path checkpoint = checkpoint_dir(resumed, 6);
  const CheckpointState state = read_checkpoint_state(checkpoint);
  EXPECT_EQ(state.placement, Placement::PerRank);
  EXPECT_EQ(state.world_size, 2);
  const std::string rank0 = testing::read_file(checkpoint / "rank-00000" / "model.safetensors");
  const std::string rank1 = testing::read_file(checkpoint / "rank-00001" / "model.safetensors");
  EXPECT_NE(rank0, rank1) << "mid-window, the replicas' weights differ";
  EXPECT_EQ(rank0, testing::read_file(checkpoint / "model.safetensors")) << "the top-level copy is rank 0's";
  EXPECT_FALSE(fs::exists(checkpoint.parent_path() / ".step-000006.ranks")) << "the ranks' staging area is gone";

  result = launch(2, train_args(resumed, 2) + local_sgd + " --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto expected = losses_of(straight), actual = losses_of(resumed);
  ASSERT_EQ(expected.size(), 12u);
  EXPECT_EQ(actual, expected);
  std::vector<double> expected_val, actual_val;
  for (const auto& line : read_metrics(straight / "metrics.jsonl")) {
    if (line.contains("val_loss")) expected_val.push_back(line.at("val_loss"));
  }
  for (const auto& line : read_metrics(resumed / "metrics.jsonl")) {
    if (line.contains("val_loss")) actual_val.push_back(line.at("val_loss"));
  }
  EXPECT_EQ(actual_val, expected_val);
}

TEST_F(OuterMethods, RanksThatWouldResumeFromDifferentStepsStopWithOneClearError) {
  // Two hosts without a shared file system: each node's rank resumes from its own --out (a
  // per-machine setting). Node 1's copy has no checkpoint, node 0's has step 12.
  const fs::path node0_run = scratch_ / "node0-run", node1_run = scratch_ / "node1-run";
  auto results = two_nodes(1, train_args(node0_run, 2), train_args(node1_run, 2));
  ASSERT_EQ(results[0].exit_code, 0) << results[0].output;
  ASSERT_EQ(results[1].exit_code, 0) << results[1].output;
  const auto before = testing::snapshot_tree(node0_run);

  results = two_nodes(1, train_args(node0_run, 2) + " --resume", train_args(node1_run, 2) + " --resume");
  const std::string expected =
      "cannot resume: ranks would resume from different checkpoints: ranks disagree: rank 1 has resume_step=0 "
      "where rank 0 has resume_step=12";
  for (int node = 0; node < 2; ++node) {
    EXPECT_EQ(results[node].exit_code, 1) << results[node].output;
    EXPECT_NE(results[node].output.find(expected), std::string::npos) << "node " << node << ":\n" << results[node].output;
  }
  EXPECT_EQ(testing::snapshot_tree(node0_run), before) << "a refused resume changes nothing";

  // Given the same checkpoints, the two hosts resume (and, at the last step already, just end).
  fs::copy(node0_run, node1_run, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  results = two_nodes(1, train_args(node0_run, 2) + " --resume", train_args(node1_run, 2) + " --resume");
  EXPECT_EQ(results[0].exit_code, 0) << results[0].output;
  EXPECT_EQ(results[1].exit_code, 0) << results[1].output;
}

TEST_F(OuterMethods, NodesWithDifferentPerMachineSettingsTrainTogether) {
  // Node 0 names its interface and thread count; node 1 takes its interface from PyTorch's
  // GLOO_SOCKET_IFNAME and a different thread count: these settings are the machine's, not the
  // run's, and are not compared (the config hash covers the rest).
  const fs::path run = scratch_ / "run";
  auto results = two_nodes(2, train_args(run, 2, 4) + " --gloo-interface lo",
                           train_args(run, 2, 4) + " --threads 2", "GLOO_SOCKET_IFNAME=lo");
  EXPECT_EQ(results[0].exit_code, 0) << results[0].output;
  EXPECT_EQ(results[1].exit_code, 0) << results[1].output;
  EXPECT_EQ(losses_of(run).size(), 4u);
}

}  // namespace
}  // namespace strait
