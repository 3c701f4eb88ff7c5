// DiLoCo's outer step against its formula, and its exchange end to end: one replica with outer
// SGD at lr 1 and no momentum trains as one process does; two replicas stay bit-identical in
// every wire dtype, move the bytes the exchange's formula predicts, and resume exactly from
// checkpoints inside and at the end of an H window.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "strait/codec/wire_codec.h"
#include "strait/core/metrics.h"
#include "strait/model/model_config.h"
#include "strait/strategy/outer_sgd.h"
#include "strait/train/trainer.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::losses_of;

torch::Tensor flat_weights(const LlamaModel& model) {
  std::vector<torch::Tensor> parts;
  for (const auto& parameter : model.parameters()) parts.push_back(parameter.tensor.detach().reshape({-1}));
  return torch::cat(parts);
}

void set_weights(LlamaModel& model, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& parameter : model.parameters()) {
    const int64_t n = parameter.tensor.numel();
    parameter.tensor.view({n}).copy_(flat.narrow(0, offset, n));
    offset += n;
  }
}

TEST(OuterSgd, DilocoStepsFollowNesterovMomentumOnThePseudoGradient) {
  ModelConfig config = model_preset("nano", 256);
  LlamaModel model(config);
  model.init_weights(3);
  OuterSgdOptions options;
  options.sync_every = 2;
  options.lr = 0.7;
  options.momentum = 0.9;
  OuterSgd diloco(std::make_unique<ReplicaExchange>(nullptr, nullptr, codec::WireDtype::Fp32), options);
  diloco.prepare(model);
  diloco.start_from(model);

  // The reference, in float64: θ, m; each window the "inner steps" move the weights by a
  // random amount, then Δ = θ − θ_r, m = μ m + Δ, θ = θ − lr (Δ + μ m).
  torch::Tensor theta = flat_weights(model).to(torch::kDouble);
  torch::Tensor momentum = torch::zeros_like(theta);
  torch::manual_seed(5);
  for (int64_t window = 1; window <= 3; ++window) {
    const torch::Tensor inner = flat_weights(model) + 0.01 * torch::randn({theta.numel()});
    set_weights(model, inner);
    diloco.after_step(2 * window - 1, model, false);  // not due: nothing changes
    ASSERT_TRUE(torch::equal(flat_weights(model), inner)) << "window " << window;
    diloco.after_step(2 * window, model, false);
    const torch::Tensor delta = theta - inner.to(torch::kDouble);
    momentum = 0.9 * momentum + delta;
    theta = theta - 0.7 * (delta + 0.9 * momentum);
    const double error = (flat_weights(model).to(torch::kDouble) - theta).abs().max().item<double>();
    EXPECT_LT(error, 1e-6) << "window " << window;
    const nlohmann::json sync = diloco.take_sync_metrics();
    EXPECT_EQ(sync.at("step"), 2 * window);
    EXPECT_NEAR(sync.at("pseudo_gradient_norm").get<double>(), delta.norm().item<double>(), 1e-4);
  }
  EXPECT_TRUE(diloco.take_sync_metrics().empty()) << "taken once";
  // The state checkpoints keep: θ and m.
  const NamedTensors state = diloco.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "outer.weights");
  EXPECT_LT((state[1].second.to(torch::kDouble) - momentum).abs().max().item<double>(), 1e-6);
}

TEST(OuterSgd, OneReplicaWithOuterLrOneAndNoMomentumTrainsAsOneProcess) {
  // θ − (θ − θ_r) = θ_r up to one float32 rounding per sync.
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig single = testing::tiny_train_config(scratch / "data", scratch / "single");
  train(single, {false});
  TrainConfig diloco = testing::tiny_train_config(scratch / "data", scratch / "diloco");
  diloco.strategy = "diloco";
  diloco.sync_every = 4;
  diloco.outer_lr = 1.0;
  diloco.outer_momentum = 0.0;
  const auto summary = train(diloco, {false});
  EXPECT_EQ(summary.at("strategy"), "diloco(single x 1)");
  EXPECT_EQ(summary.at("outer_syncs"), 5);  // steps 4, 8, ..., 20
  const auto expected = losses_of(scratch / "single"), actual = losses_of(scratch / "diloco");
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << "step " << i + 1;
}

class Diloco : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 40000, 8000); }

  std::string train_args(const fs::path& out, const std::string& extra = "") const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 12 --warmup-steps 3 --lr 3e-3 --threads 1 "
           "--precision fp32 --eval-every 6 --eval-batches 2 --checkpoint-every 3 --comm-timeout-s 20 "
           "--strategy diloco --sync-every 4 " + extra;
  }

  testing::CommandResult launch(int ranks, const std::string& arguments) const {
    return testing::run_strait("launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
                               std::to_string(testing::free_tcp_port()) + " -- " + arguments);
  }

  testing::ScratchDir scratch_;
};

TEST_F(Diloco, EveryWireDtypeKeepsReplicasIdenticalAndMovesTheBytesItsFormulaSays) {
  // Two one-rank replicas: per sync each rank sends one encoded slice (all-to-all) and its
  // encoded mean (all-gather), E bytes each, E = encoded size of half the parameters, plus the
  // 8-byte hash of the new weights. A failed hash check would stop the run.
  std::map<std::string, double> bytes;
  for (const std::string dtype : {"fp32", "bf16", "int8", "int4"}) {
    const fs::path run = scratch_ / dtype;
    auto result = launch(2, train_args(run, "--outer-dtype " + dtype));
    ASSERT_EQ(result.exit_code, 0) << dtype << "\n" << result.output;
    const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
    ASSERT_EQ(summary.at("outer_syncs"), 3) << dtype;
    const auto parameters = summary.at("parameters").get<size_t>();
    const size_t slice = (parameters + 1) / 2;
    const double encoded = static_cast<double>(codec::WireCodec(codec::parse_wire_dtype(dtype)).encoded_size(slice));
    bytes[dtype] = summary.at("cross_replica_bytes_sent").get<double>();
    EXPECT_EQ(bytes[dtype], 3 * 2 * (2 * encoded + 8)) << dtype;
    for (const auto& line : read_metrics(run / "metrics.jsonl")) {
      EXPECT_EQ(line.contains("outer_sync"), line.at("step").get<int>() % 4 == 0) << dtype << " step " << line.at("step");
    }
  }
  EXPECT_GT(bytes["fp32"] / bytes["int4"], 7.7);  // 1024 / 132: 8x less 4 scale bytes per 256 values
  EXPECT_GT(bytes["fp32"] / bytes["bf16"], 1.99);
}

TEST_F(Diloco, ReplicasWhoseWeightsDifferAfterASyncStopTheRunNamingThem) {
  // Rank 1's weights move by one float32 rounding after the outer step (fault injection), as a
  // silently corrupted exchange would leave them: the weight hashes differ and every rank stops.
  const fs::path run = scratch_ / "desync";
  const auto result = testing::run_command("STRAIT_TEST_DESYNC_RANK=1 '" STRAIT_BINARY "' launch --nproc-per-node 2 "
                                           "--master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                                           train_args(run, "--outer-dtype int8"));
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("diloco: after the outer step of step 4 the weights of replica 1 (rank 1) differ from "
                               "replica 0's (rank 0); the replicas would silently train apart"),
            std::string::npos)
      << result.output;
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step-000006")) << "the run stopped at its first sync";
}

TEST_F(Diloco, ResumesExactlyFromInsideAndTheEndOfAnHWindow) {
  const fs::path straight = scratch_ / "straight", resumed = scratch_ / "resumed";
  auto result = launch(2, train_args(straight, "--outer-dtype int4"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Stop at step 6 (inside the window 5..8), then at step 8 (its end), then finish.
  for (const std::string stop : {"--stop-after 6", "--stop-after 8 --resume", "--resume"}) {
    result = launch(2, train_args(resumed, "--outer-dtype int4 " + stop));
    ASSERT_EQ(result.exit_code, 0) << stop << "\n" << result.output;
  }
  EXPECT_EQ(losses_of(resumed), losses_of(straight));
  EXPECT_TRUE(fs::exists(scratch_ / "resumed" / "checkpoints" / "step-000012" / "strategy.safetensors"));
}

}  // namespace
}  // namespace strait
