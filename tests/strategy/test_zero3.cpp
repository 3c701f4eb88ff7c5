// ZeRO-3 and ZeRO++ end to end with real processes on loopback: the same training as DDP (fp32
// and bf16-mixed), gather and reduce-scatter bytes equal to the shard formula, a sharded
// checkpoint that resumes loss for loss and consolidates into the model DDP trains, hpZ changing
// no loss (and its stale-copy bug caught), cross-node bytes per ZeRO++ combination, ZeRO-3 inside
// DiLoCo's replicas, DeepSpeed config sections and bad input.
#include <cmath>

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

class Zero3 : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 40000, 8000); }

  // --weight-decay 0.5: a large decay, so that a shard piece decayed wrongly (a norm, or a
  // matrix missed) would show in the losses.
  std::string zero_train_args(const fs::path& out, int64_t steps = 20, const std::string& precision = "fp32") const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps " + std::to_string(steps) +
           " --warmup-steps 5 --lr 3e-3 --weight-decay 0.5 --threads 1 --precision " + precision +
           " --eval-every 10 --eval-batches 2 --checkpoint-every 5 --comm-timeout-s 20";
  }

  testing::CommandResult launch(int ranks, const std::string& args) const {
    return testing::run_strait("launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
                               std::to_string(testing::free_tcp_port()) + " -- " + args);
  }

  // `nodes` "nodes" of `per_node` ranks on this machine: a launcher each, as on separate hosts.
  // `environment` is prefixed to every launcher (e.g. a fault switch). Fails the test, with the
  // nodes' logs, unless every one exits 0.
  void launch_nodes(int nodes, int per_node, const std::string& args, const std::string& environment = "") const {
    const std::string launch = environment + " '" STRAIT_BINARY "' launch --nproc-per-node " + std::to_string(per_node) +
                               " --nnodes " + std::to_string(nodes) + " --master-port " +
                               std::to_string(testing::free_tcp_port()) + " --node-rank ";
    std::string script = "cd '" + scratch_.path().string() + "'\n";
    for (int node = nodes - 1; node >= 0; --node) {
      const std::string n = std::to_string(node);
      script += launch + n + " -- " + args + " > node" + n + ".log 2>&1 & pid" + n + "=$!\n";
    }
    for (int node = 0; node < nodes; ++node) {
      const std::string n = std::to_string(node);
      script += "wait $pid" + n + "; echo node" + n + "-exit=$?\n";
    }
    testing::write_file(scratch_ / "nodes.sh", script);
    const auto result = testing::run_command("bash '" + (scratch_ / "nodes.sh").string() + "'");
    for (int node = 0; node < nodes; ++node) {
      const std::string exited = "node" + std::to_string(node) + "-exit=0";
      ASSERT_NE(result.output.find(exited), std::string::npos)
          << testing::read_file(scratch_ / ("node" + std::to_string(node) + ".log"));
    }
  }

  // Trains `reference` and `candidate` (options beyond zero_train_args) at 4 ranks and expects
  // the same training and validation losses up to the rounding of the gradient sums' order.
  void expect_same_training(const fs::path& reference, const std::string& reference_options,
                            const fs::path& candidate, const std::string& candidate_options) const;

  testing::ScratchDir scratch_;
};

std::vector<double> val_losses_of(const fs::path& run_dir) {
  std::vector<double> losses;
  for (const auto& line : read_metrics(run_dir / "metrics.jsonl")) {
    if (line.contains("val_loss")) losses.push_back(line.at("val_loss").get<double>());
  }
  return losses;
}

void expect_same_losses(const std::vector<double>& expected, const std::vector<double>& actual, double tolerance,
                        const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], tolerance * expected[i]) << what << ", entry " << i + 1;
  }
}

void Zero3::expect_same_training(const fs::path& reference, const std::string& reference_options,
                                 const fs::path& candidate, const std::string& candidate_options) const {
  for (const auto& [run, options] : {std::pair{reference, reference_options}, std::pair{candidate, candidate_options}}) {
    const auto result = launch(4, zero_train_args(run) + options);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  expect_same_losses(losses_of(reference), losses_of(candidate), 1e-5, "training loss");
  expect_same_losses(val_losses_of(reference), val_losses_of(candidate), 1e-5, "validation loss");
}

// Elements of each unit's shard at N ranks: ceil(unit / N), the units being the embedding, each
// layer and the head (final norm, and the LM head when untied), from the run's config.json.
struct ShardSizes {
  int64_t embedding = 0, layers = 0, head = 0;  // layers: the sum over the layers
};

ShardSizes shard_sizes(const fs::path& run_dir, int64_t ranks) {
  const auto config = nlohmann::json::parse(testing::read_file(run_dir / "config.json"));
  const int64_t C = config.at("hidden_size"), F = config.at("intermediate_size");
  const int64_t L = config.at("num_hidden_layers"), V = config.at("vocab_size");
  const bool tied = config.at("tie_word_embeddings");
  auto shard = [ranks](int64_t numel) { return (numel + ranks - 1) / ranks; };
  return {shard(V * C), L * shard(2 * C + 4 * C * C + 3 * C * F), shard(C + (tied ? 0 : V * C))};
}

double operation_sent(const nlohmann::json& summary, const std::string& operation) {
  return summary.at("traffic").at("operations").at(operation).at("intra_node").at("sent").get<double>();
}

TEST_F(Zero3, MatchesDdpAtFourRanksWithTheShardFormulasBytesAndAShardedCheckpoint) {
  const fs::path ddp = scratch_ / "ddp", zero = scratch_ / "zero3";
  // Only the order of the gradient sums differs (reduce-scatter vs ring all-reduce).
  expect_same_training(ddp, "", zero, " --strategy zero3");
  if (HasFatalFailure()) return;

  const auto summary = nlohmann::json::parse(testing::read_file(zero / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "zero3");
  // Per training step every rank gathers the embedding and the head once and every layer twice
  // (forward, and again for backward's recompute); each validation batch gathers every unit
  // once. A ring all-gather sends (N - 1) shards; the reduce-scatter (an all-to-all) sends
  // N - 1 slices of each unit's gradient once per step. fp32: 4 bytes an element.
  const ShardSizes s = shard_sizes(zero, 4);
  const double steps = 20, validation_batches = 2.0 * static_cast<double>(val_losses_of(zero).size());
  const double gathered = steps * (s.embedding + s.head + 2 * s.layers) +
                          validation_batches * (s.embedding + s.head + s.layers);
  EXPECT_EQ(operation_sent(summary, "zero_allgather_weights"), 4.0 * 3 * gathered);
  EXPECT_EQ(operation_sent(summary, "zero_reduce_scatter_gradients"),
            4.0 * 3 * steps * (s.embedding + s.head + s.layers));
  // No full-model all-reduce of gradients: that is DDP's traffic.
  EXPECT_FALSE(summary.at("traffic").at("operations").contains("allreduce_gradients"));

  // The checkpoint is sharded: each rank's directory holds its part of the weights, no rank
  // wrote the whole model. Assembled, it is the model DDP trained (to the rounding of the
  // gradient sums' order), and `strait export` consolidates it into one Hugging Face directory.
  const fs::path checkpoint = zero / "checkpoints" / "step-000020";
  EXPECT_EQ(read_checkpoint_state(checkpoint).placement, Placement::Sharded);
  EXPECT_FALSE(fs::exists(checkpoint / "model.safetensors"));
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_TRUE(fs::exists(checkpoint / ("rank-0000" + std::to_string(rank)) / "model.safetensors")) << rank;
  }
  const LlamaModel from_shards = load_model(checkpoint);
  const LlamaModel from_ddp = load_model(ddp / "checkpoints" / "step-000020");
  for (size_t i = 0; i < from_ddp.parameters().size(); ++i) {
    const auto& expected_tensor = from_ddp.parameters()[i].tensor;
    const auto& actual_tensor = from_shards.parameters()[i].tensor;
    ASSERT_EQ(actual_tensor.sizes(), expected_tensor.sizes()) << from_ddp.parameters()[i].name;
    const double scale = expected_tensor.abs().max().item<double>();
    EXPECT_LE((actual_tensor - expected_tensor).abs().max().item<double>(), 1e-5 * scale) << from_ddp.parameters()[i].name;
  }
  auto result = testing::run_strait("export --checkpoint '" + checkpoint.string() + "' --out '" + (scratch_ / "hf").string() + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(fs::exists(scratch_ / "hf" / "model.safetensors"));

  // Stopped in the middle (after step 5's checkpoint) and resumed: loss for loss.
  const fs::path resumed = scratch_ / "resumed";
  result = launch(4, zero_train_args(resumed) + " --strategy zero3 --stop-after 7");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(4, zero_train_args(resumed) + " --strategy zero3 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto uninterrupted = losses_of(zero), continued = losses_of(resumed);
  ASSERT_EQ(continued.size(), uninterrupted.size());
  for (size_t i = 0; i < uninterrupted.size(); ++i) EXPECT_EQ(continued[i], uninterrupted[i]) << "step " << i + 1;

  // Resuming the sharded checkpoint with another world size or another strategy is refused.
  result = launch(2, zero_train_args(zero, 30) + " --strategy zero3 --resume");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("per-rank state of 4 ranks, and this job has 2"), std::string::npos) << result.output;
  result = launch(4, zero_train_args(zero, 30) + " --resume");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("it holds sharded model state and ddp keeps replicated state"), std::string::npos)
      << result.output;
}

TEST_F(Zero3, Bf16MixedMatchesDdpAndSmallerWiresTrainCloseToFp32) {
  const fs::path ddp = scratch_ / "ddp", zero = scratch_ / "zero3", wire = scratch_ / "bf16-wire";
  auto result = launch(4, zero_train_args(ddp, 20, "bf16-mixed"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(4, zero_train_args(zero, 20, "bf16-mixed") + " --strategy zero3");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // The tolerance of DDP's own bf16-mixed test against one process.
  expect_same_losses(losses_of(ddp), losses_of(zero), 2e-3, "bf16-mixed training loss");

  // A bf16 wire: half the bytes of the fp32 one, and weights and gradients rounded to bf16 on
  // the wire still train, within 2% of the fp32 wire.
  const fs::path fp32_wire = scratch_ / "fp32-wire";
  result = launch(2, zero_train_args(fp32_wire, 10) + " --strategy zero3");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(2, zero_train_args(wire, 10) + " --strategy zero3 --zero-wire-dtype bf16");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto fp32_summary = nlohmann::json::parse(testing::read_file(fp32_wire / "summary.json"));
  const auto bf16_summary = nlohmann::json::parse(testing::read_file(wire / "summary.json"));
  for (const char* operation : {"zero_allgather_weights", "zero_reduce_scatter_gradients"}) {
    EXPECT_EQ(operation_sent(bf16_summary, operation) * 2, operation_sent(fp32_summary, operation)) << operation;
  }
  EXPECT_NEAR(val_losses_of(wire).back(), val_losses_of(fp32_wire).back(), 0.02 * val_losses_of(fp32_wire).back());

  // qwZ: the gathers carry int8 codes and one fp32 scale per 256 values, every rank computes
  // with the dequantized weights, and training stays within 2% of fp32 gathers.
  const fs::path quantized = scratch_ / "qwz";
  result = launch(2, zero_train_args(quantized, 10) + " --strategy zero3 --zero-quantized-weights");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto qwz_summary = nlohmann::json::parse(testing::read_file(quantized / "summary.json"));
  EXPECT_EQ(qwz_summary.at("zero_weights_wire"), "int8");
  const ShardSizes s = shard_sizes(quantized, 2);
  auto int8_bytes = [](int64_t n) { return static_cast<double>(n + 4 * ((n + 255) / 256)); };
  const double validation_batches = 2.0 * static_cast<double>(val_losses_of(quantized).size());
  // The layers' shards are per layer: the nano model's 2 layers are equal, so each is half the sum.
  const double layer = int8_bytes(s.layers / 2), embedding = int8_bytes(s.embedding), head = int8_bytes(s.head);
  const double per_step = embedding + head + 4 * layer, per_validation_batch = embedding + head + 2 * layer;
  EXPECT_EQ(operation_sent(qwz_summary, "zero_allgather_weights"), 10 * per_step + validation_batches * per_validation_batch);
  EXPECT_NEAR(val_losses_of(quantized).back(), val_losses_of(fp32_wire).back(), 0.02 * val_losses_of(fp32_wire).back());
}

// The seed paper's check (arXiv 2407.01614): with hpZ's secondary copies, prefetch on, the losses
// are exactly those without hpZ, across a checkpoint and resume in the middle; and the check
// catches the stale-secondary bug when it is injected.
TEST_F(Zero3, HpzChangesNoLossAndTheStaleSecondaryBugIsCaught) {
  const std::string hpz = " --strategy zero3 --zero-hpz-partition-size 2";
  const fs::path plain = scratch_ / "plain", secondary = scratch_ / "hpz", stale = scratch_ / "stale";
  // Two micro-batches a step: the second one's forward gathers from the secondary copies too.
  const std::string accumulate = " --grad-accum 2";
  launch_nodes(2, 2, zero_train_args(plain, 50) + accumulate + " --strategy zero3");
  launch_nodes(2, 2, zero_train_args(secondary, 50) + accumulate + hpz + " --stop-after 27");
  launch_nodes(2, 2, zero_train_args(secondary, 50) + accumulate + hpz + " --resume");
  const auto expected = losses_of(plain), actual = losses_of(secondary);
  ASSERT_EQ(expected.size(), 50u);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(actual[i], expected[i]) << "step " << i + 1;
  EXPECT_EQ(val_losses_of(secondary), val_losses_of(plain));

  const auto summary = nlohmann::json::parse(testing::read_file(secondary / "summary.json"));
  EXPECT_EQ(summary.at("zero_hpz_partition_size"), 2);
  EXPECT_GT(summary.at("zero_hpz_secondary_gathers").get<int64_t>(), 0);
  EXPECT_GE(summary.at("zero_hpz_secondary_wait_s").get<double>(), 0.0);
  EXPECT_TRUE(summary.at("traffic").at("operations").contains("zero_hpz_allgather_weights"));

  // The fault switch keeps the secondary copies across optimizer steps: gathers then serve
  // weights from before the update, and the losses leave ZeRO-3's.
  launch_nodes(2, 2, zero_train_args(stale, 50) + accumulate + hpz, "STRAIT_TEST_SKIP_HPZ_REFRESH=1");
  const auto stale_losses = losses_of(stale);
  ASSERT_EQ(stale_losses.size(), expected.size());
  EXPECT_EQ(stale_losses[0], expected[0]) << "the first step has no stale copy yet";
  double largest_difference = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    largest_difference = std::max(largest_difference, std::abs(stale_losses[i] - expected[i]) / expected[i]);
  }
  EXPECT_GT(largest_difference, 0.01) << "stale secondary copies went unnoticed";
}

// What node 0 (ranks 0 and 1 of 2 nodes x 2) sends across nodes in `steps` steps and one
// validation batch, from the implementation's formulas. Every unit u has a shard of S_u elements.
// - A gather from the primary shards is a ring over the world (rank r sends to r + 1): node 0's
//   rank 1 forwards 3 encoded shards to rank 2. Each step gathers the embedding and the head
//   once and each layer twice; with hpZ backward's second gather stays inside the node. The
//   validation after the last step gathers every unit once (hpZ's copies were refreshed away).
// - Gradients: the ring reduce-scatter has rank 1 pass 3 partial sums to rank 2, once per unit
//   and step; qgZ's second phase has ranks 0 and 1 each send one int4 partial to the other node.
struct NodeCrossBytes {
  double step = 0, validation = 0;
};

NodeCrossBytes node_cross_bytes(const ShardSizes& s, int64_t layers, bool hpz, bool qwz, bool qgz) {
  auto bf16 = [](int64_t n) { return 2.0 * static_cast<double>(n); };
  auto int8 = [](int64_t n) { return static_cast<double>(n + 4 * ((n + 255) / 256)); };
  auto int4 = [](int64_t n) { return static_cast<double>((n + 1) / 2 + 4 * ((n + 255) / 256)); };
  auto weights = [&](int64_t n) { return 3.0 * (qwz ? int8(n) : bf16(n)); };
  auto gradients = [&](int64_t n) { return qgz ? 2.0 * int4(n) : 3.0 * bf16(n); };
  const int64_t layer = s.layers / layers;  // the layers are equal
  const double layer_gathers = hpz ? 1.0 : 2.0;
  const double step = weights(s.embedding) + weights(s.head) + static_cast<double>(layers) * layer_gathers * weights(layer) +
                      gradients(s.embedding) + gradients(s.head) + static_cast<double>(layers) * gradients(layer);
  const double validation = weights(s.embedding) + weights(s.head) + static_cast<double>(layers) * weights(layer);
  return {step, validation};
}

// ZeRO++'s claim (arXiv 2306.10209), cross-node bytes per step in units of M = the bf16 model:
// ZeRO-3 3M, +hpZ 2M, +hpZ+qwZ 1.5M, +qgZ 0.75M. On 2 nodes x 2 ranks the measured bytes match
// the formulas above (to the few bytes of metrics), and the ratios per step the paper's within
// 5%. Eight layers, so that the layers (gathered twice) outweigh the embedding and head (held
// once per step) as in a real model. qgZ's ratio is against the formula: with 2 nodes the
// cross-node all-to-all sends (nodes - 1) / nodes = half of what the paper's many nodes send.
TEST_F(Zero3, CrossNodeBytesFollowTheZeroPlusPlusFormulas) {
  struct Variant {
    const char* name;
    const char* plan_method;  // strait plan's name for it
    std::string flags;
    bool hpz, qwz, qgz;
    double paper_ratio;
  };
  const std::vector<Variant> variants = {
      {"zero3", "zero3", "", false, false, false, 1.0},
      {"hpz", "zero3+hpz", " --zero-hpz-partition-size 2", true, false, false, 2.0 / 3.0},
      {"hpz-qwz", "zero3+hpz+qwz", " --zero-hpz-partition-size 2 --zero-quantized-weights", true, true, false, 0.5},
      {"hpz-qwz-qgz", "zero++", " --zero-hpz-partition-size 2 --zero-quantized-weights --zero-quantized-gradients",
       true, true, true, 0.25},
  };
  const double steps = 4;
  std::vector<double> measured, expected;  // per step
  for (const auto& variant : variants) {
    const fs::path run = scratch_ / variant.name;
    launch_nodes(2, 2, zero_train_args(run, 4) + " --num-layers 8 --strategy zero3 --zero-wire-dtype bf16 --eval-every 0 " +
                     "--eval-batches 1" + variant.flags);
    if (::testing::Test::HasFatalFailure()) return;
    const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
    const auto& by_rank = summary.at("traffic_by_rank");
    const double node_sent = by_rank.at(0).at("cross_node").at("sent").get<double>() +
                             by_rank.at(1).at("cross_node").at("sent").get<double>();
    const NodeCrossBytes formula = node_cross_bytes(shard_sizes(run, 4), 8, variant.hpz, variant.qwz, variant.qgz);
    EXPECT_NEAR(node_sent, steps * formula.step + formula.validation, 0.002 * node_sent) << variant.name;
    // Each node sends that; the summary's per-rank figure is the mean over the ranks (in a ring
    // only one rank of a node sends across, so rank 0's own count would be all or nothing).
    EXPECT_NEAR(summary.at("cross_node_bytes_sent_per_rank").get<double>(), (steps * formula.step + formula.validation) / 2,
                0.002 * node_sent)
        << variant.name;
    measured.push_back((node_sent - formula.validation) / steps);
    expected.push_back(formula.step);
    // strait plan predicts a step's bytes from the same model (its shapes from the run): exactly.
    const auto plan = testing::run_strait("plan --json --measured '" + run.string() +
                                          "' --nodes 2 --ranks-per-node 2 --link 1gbit --wire-dtype bf16 --method " +
                                          variant.plan_method);
    ASSERT_EQ(plan.exit_code, 0) << plan.output;
    const auto prediction = nlohmann::json::parse(plan.output.substr(plan.output.find('{')));
    EXPECT_EQ(prediction.at("methods").at(0).at("cross_node_bytes_per_node_per_step").get<double>(), formula.step)
        << variant.name;
  }
  for (size_t i = 1; i < variants.size(); ++i) {
    const double ratio = measured[i] / measured[0];
    const double reference = variants[i].qgz ? expected[i] / expected[0] : variants[i].paper_ratio;
    EXPECT_NEAR(ratio, reference, 0.05 * reference) << variants[i].name << " against ZeRO-3";
  }
  EXPECT_LT(measured.back() / measured[0], 0.25) << "full ZeRO++ sends under a quarter of ZeRO-3's cross-node bytes";
}

// A DeepSpeed config's "zero_optimization" section carries over, in JSON and in TOML; what
// strait does not read from it is refused by name, not ignored.
TEST_F(Zero3, DeepSpeedConfigSectionCarriesOver) {
  testing::write_file(scratch_ / "ds.json", R"({"zero_optimization": {"stage": 3, "zero_quantized_weights": true,
                                                 "zero_hpz_partition_size": 2, "zero_quantized_gradients": true}})");
  auto result = launch(2, zero_train_args(scratch_ / "from-json", 4) + " --config '" + (scratch_ / "ds.json").string() + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(testing::read_file(scratch_ / "from-json" / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "zero3");
  EXPECT_EQ(summary.at("zero_weights_wire"), "int8");
  EXPECT_EQ(summary.at("zero_hpz_partition_size"), 2);
  // qgZ saves cross-node bytes only: on one node the reduce-scatter stays, and the run says so.
  EXPECT_EQ(summary.at("zero_quantized_gradients"), false);
  EXPECT_NE(result.output.find("--zero-quantized-gradients has no effect on one node"), std::string::npos)
      << result.output;

  testing::write_file(scratch_ / "ds.toml", "[zero_optimization]\nstage = 3\nzero_quantized_weights = true\n");
  result = launch(2, zero_train_args(scratch_ / "from-toml", 4) + " --config '" + (scratch_ / "ds.toml").string() + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(scratch_ / "from-toml" / "summary.json")).at("zero_weights_wire"),
            "int8");

  testing::write_file(scratch_ / "stage2.json", R"({"zero_optimization": {"stage": 2}})");
  result = testing::run_strait(zero_train_args(scratch_ / "stage2") + " --config '" + (scratch_ / "stage2.json").string() + "'");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("zero_optimization.stage must be 3 (strait implements ZeRO stage 3), got 2"),
            std::string::npos)
      << result.output;
  testing::write_file(scratch_ / "knob.json", R"({"zero_optimization": {"stage": 3, "overlap_comm": true}})");
  result = testing::run_strait(zero_train_args(scratch_ / "knob") + " --config '" + (scratch_ / "knob.json").string() + "'");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("zero_optimization.overlap_comm is not a setting strait reads"), std::string::npos)
      << result.output;
}

TEST_F(Zero3, InsideDilocoReplicasTrainsAsDdpInsideWithShardedOuterStateZeroPlusPlusAndAMidWindowResume) {
  // DiLoCo over 2 replicas of 2 ranks, H = 4: ZeRO-3 inside each replica against DDP inside.
  // Only the order of the gradient sums differs; the outer exchange averages the same values.
  const std::string diloco = " --strategy diloco --replica-ranks 2 --sync-every 4";
  const fs::path ddp = scratch_ / "diloco-ddp", zero = scratch_ / "diloco-zero3", resumed = scratch_ / "resumed";
  expect_same_training(ddp, diloco + " --inner ddp", zero, diloco + " --inner zero3");
  if (HasFatalFailure()) return;

  const auto summary = nlohmann::json::parse(testing::read_file(zero / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "diloco(zero3 x 2)");
  // Each rank exchanges its own shard with the same shard of the other replica, and nothing is
  // assembled inside the replica: per sync (steps 4, 8, ..., 20) rank 0 sends half its shard to
  // the other owner and its mean of the other half back (2 x 4 bytes x P/2, fp32), and the
  // 8-byte weight hash.
  const ShardSizes s = shard_sizes(zero, 2);
  const double shard = static_cast<double>(s.embedding + s.layers + s.head);  // rank 0's: no padding
  EXPECT_EQ(summary.at("traffic_by_rank").at(0).at("cross_replica").at("sent").get<double>(),
            5 * (2 * 4 * std::ceil(shard / 2) + 8));
  for (const auto& [operation, traffic] : summary.at("traffic").at("operations").items()) {
    EXPECT_EQ(operation.find("/in_replica"), std::string::npos) << operation;
  }
  const auto ddp_summary = nlohmann::json::parse(testing::read_file(ddp / "summary.json"));
  EXPECT_TRUE(ddp_summary.at("traffic").at("operations").contains("outer_pseudo_gradient/in_replica"));

  // The checkpoint is sharded over each replica's 2 ranks, the outer weights and momentum too
  // (per rank, its shard's part); consolidated, it is the model DDP inside trained.
  const fs::path checkpoint = zero / "checkpoints" / "step-000020";
  const CheckpointState state = read_checkpoint_state(checkpoint);
  EXPECT_EQ(state.placement, Placement::Sharded);
  EXPECT_EQ(state.world_size, 4);
  EXPECT_EQ(state.shard_ranks, 2);
  EXPECT_FALSE(fs::exists(checkpoint / "strategy.safetensors")) << "no rank holds the whole outer state";
  const auto outer_state = SafetensorsFile::load(checkpoint / "rank-00000" / "strategy.safetensors");
  EXPECT_EQ(tensor_from_file(outer_state, "outer.weights").numel(), static_cast<int64_t>(shard));
  EXPECT_EQ(tensor_from_file(outer_state, "outer.momentum").numel(), static_cast<int64_t>(shard));
  const LlamaModel from_shards = load_model(checkpoint);
  const LlamaModel from_ddp = load_model(ddp / "checkpoints" / "step-000020");
  for (size_t i = 0; i < from_ddp.parameters().size(); ++i) {
    EXPECT_TRUE(torch::allclose(from_shards.parameters()[i].tensor, from_ddp.parameters()[i].tensor, 1e-4, 1e-5))
        << from_ddp.parameters()[i].name;
  }

  // ZeRO++ inside replicas of whole nodes. 2 nodes x 2 ranks, a replica per node: hpZ's copies
  // change no loss. 4 nodes x 1 rank, replicas of 2 nodes: qgZ's int4 all-to-all runs across
  // each replica's 2 nodes instead of the reduce-scatter (its groups' layout is checked when
  // they are made). Its int4 gradients move this short run's validation losses by 2-4%
  // (measured; DiLoCo's outer momentum carries each window's difference on, where ZeRO-3 alone
  // with qgZ on 2 nodes x 1 rank moved them 0.7%), hence the 5%.
  const fs::path hpz = scratch_ / "hpz", qgz = scratch_ / "qgz";
  launch_nodes(2, 2, zero_train_args(hpz) + " --strategy diloco --replica-ranks node --sync-every 4 --inner zero3 "
                     "--zero-hpz-partition-size 2");
  EXPECT_EQ(losses_of(hpz), losses_of(zero));
  EXPECT_EQ(val_losses_of(hpz), val_losses_of(zero));
  EXPECT_GT(nlohmann::json::parse(testing::read_file(hpz / "summary.json")).at("zero_hpz_secondary_gathers"), 0);
  launch_nodes(4, 1, zero_train_args(qgz) + diloco + " --inner zero3 --zero-quantized-gradients");
  expect_same_losses(val_losses_of(zero), val_losses_of(qgz), 0.05, "validation loss with qgZ");
  const auto qgz_operations = nlohmann::json::parse(testing::read_file(qgz / "summary.json")).at("traffic").at("operations");
  EXPECT_TRUE(qgz_operations.contains("qgz_alltoall_cross"));
  EXPECT_FALSE(qgz_operations.contains("zero_reduce_scatter_gradients"));

  // Stopped at step 6, inside the window of steps 5-8 (the replicas' shards differ there),
  // then resumed: loss for loss the run above.
  auto result = launch(4, zero_train_args(resumed) + diloco + " --inner zero3 --stop-after 6");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(4, zero_train_args(resumed) + diloco + " --inner zero3 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(resumed), losses_of(zero));
  EXPECT_EQ(val_losses_of(resumed), val_losses_of(zero));

  // Its shards are of replicas of 2 ranks: replicas of 4 cannot resume from them.
  result = launch(4, zero_train_args(resumed, 30) + " --strategy diloco --replica-ranks 4 --sync-every 4 --inner zero3 --resume");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("its model is sharded over 2 ranks, and this job's replicas have 4"), std::string::npos)
      << result.output;
}

TEST_F(Zero3, PlanPredictsTheOuterExchangeInsideReplicasToTheByte) {
  // DiLoCo (fp32) and SparseLoCo (fixed-width indices: its payload's size depends on the shapes
  // alone) over 2 replicas of 2 ranks with ZeRO-3 inside, H = 4: each rank exchanges its own
  // shard's pieces. `strait plan --inner zero3`, given the run, predicts the bytes a replica
  // sends to the other per sync, which the ledger counts per rank (cross_replica: the outer
  // exchanges and the weight check).
  for (const std::string method : {"diloco", "sparseloco"}) {
    const fs::path run = scratch_ / method;
    const auto result = launch(4, zero_train_args(run, 8) + " --strategy " + method +
                                      " --replica-ranks 2 --sync-every 4 --inner zero3 --index-coding fixed");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
    ASSERT_EQ(summary.at("outer_syncs"), 2) << method;
    const auto& by_rank = summary.at("traffic_by_rank");
    const double replica_sent = by_rank.at(0).at("cross_replica").at("sent").get<double>() +
                                by_rank.at(1).at("cross_replica").at("sent").get<double>();
    const auto plan = testing::run_strait("plan --measured '" + run.string() +
                                          "' --nodes 2 --ranks-per-node 2 --link 1gbit --inner zero3 --sync-every 4 "
                                          "--index-coding fixed --json --method " + method);
    ASSERT_EQ(plan.exit_code, 0) << plan.output;
    const auto predicted = nlohmann::json::parse(plan.output).at("methods").at(0);
    EXPECT_NE(predicted.at("method").get<std::string>().find("(zero3 inside)"), std::string::npos);
    EXPECT_EQ(predicted.at("bytes_per_outer_sync").get<double>(), replica_sent / 2) << method;
  }
}

TEST_F(Zero3, BadSettingsAreRefusedBeforeTraining) {
  auto result = testing::run_strait(zero_train_args(scratch_ / "one") + " --strategy zero3");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("strategy zero3 shards the model over the job's ranks and needs at least 2"),
            std::string::npos)
      << result.output;
  EXPECT_FALSE(fs::exists(scratch_ / "one" / "metrics.jsonl"));
  result = testing::run_strait(zero_train_args(scratch_ / "wire") + " --strategy zero3 --zero-wire-dtype int8");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("zero_wire_dtype must be fp32 or bf16, got 'int8'"), std::string::npos) << result.output;
  result = testing::run_strait(zero_train_args(scratch_ / "inner") + " --strategy zero3 --inner ddp");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("inner 'ddp' needs an outer method"), std::string::npos) << result.output;
  result = launch(2, zero_train_args(scratch_ / "hpz") + " --strategy zero3 --zero-hpz-partition-size 3");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("zero_hpz_partition_size 3 must be 1 (off) or the ranks per node, 2 in this job"),
            std::string::npos)
      << result.output;
  result = launch(4, zero_train_args(scratch_ / "hpz-split") +
                        " --strategy diloco --inner zero3 --replica-ranks 2 --zero-hpz-partition-size 4");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("group a replica's ranks by node, but replicas of 2 ranks split nodes of 4"),
            std::string::npos)
      << result.output;
  result = testing::run_strait(zero_train_args(scratch_ / "qwz") + " --zero-quantized-weights");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("(ZeRO++) need --strategy zero3 or --inner zero3, not 'auto'"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace strait
