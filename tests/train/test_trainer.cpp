// The training loop end to end: determinism, resume, accumulation, schedule and optimizer maths.
#include <gtest/gtest.h>

#include <cmath>

#include "strait/core/error.h"
#include "strait/core/metrics.h"
#include "strait/train/checkpoint.h"
#include "strait/train/optimizer.h"
#include "strait/train/trainer.h"
#include "train/fixtures.h"

namespace strait {
namespace {

using testing::losses_of;

TEST(Trainer, LossFallsAndRunDirectoryHasEverything) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig config = testing::tiny_train_config(scratch / "data", scratch / "run");
  config.steps = 60;
  auto summary = train(config, {false});
  auto losses = losses_of(scratch / "run");
  ASSERT_EQ(losses.size(), 60u);
  EXPECT_GT(losses.front(), 5.0);
  EXPECT_LT(losses.back(), 3.0);
  for (const char* name : {"config.json", "train_config.json", "summary.json", "metrics.jsonl"}) {
    EXPECT_TRUE(std::filesystem::exists(scratch / "run" / name)) << name;
  }
  EXPECT_TRUE(std::filesystem::exists(checkpoint_dir(scratch / "run", 60) / "model.safetensors"));
  EXPECT_LT(summary.at("final_val_loss").get<double>(), 3.0);
  // keep_checkpoints = 3: steps 10..60 were saved, the three newest remain.
  EXPECT_FALSE(std::filesystem::exists(checkpoint_dir(scratch / "run", 30)));
  EXPECT_TRUE(std::filesystem::exists(checkpoint_dir(scratch / "run", 40)));
}

TEST(Trainer, ResumedRunMatchesUninterruptedRunLossForLoss) {
  for (const std::string optimizer : {"adamw", "sgd"}) {
    testing::ScratchDir scratch;
    testing::make_byte_dataset(scratch / "data");
    TrainConfig straight = testing::tiny_train_config(scratch / "data", scratch / "straight");
    straight.optimizer = optimizer;
    train(straight, {false});

    TrainConfig interrupted = testing::tiny_train_config(scratch / "data", scratch / "resumed");
    interrupted.optimizer = optimizer;
    interrupted.stop_after = 10;
    train(interrupted, {false});
    EXPECT_EQ(losses_of(scratch / "resumed").size(), 10u);
    interrupted.stop_after = 0;
    interrupted.resume = true;
    train(interrupted, {false});

    auto expected = losses_of(scratch / "straight"), actual = losses_of(scratch / "resumed");
    ASSERT_EQ(expected.size(), 20u) << optimizer;
    ASSERT_EQ(actual.size(), 20u) << optimizer;
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(expected[i], actual[i]) << optimizer << " step " << i + 1;
  }
}

TEST(Trainer, ResumeDropsMetricsWrittenAfterTheCheckpoint) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig config = testing::tiny_train_config(scratch / "data", scratch / "run");
  config.steps = 15;
  train(config, {false});  // checkpoints at 10 and 15
  std::filesystem::remove_all(checkpoint_dir(scratch / "run", 15));  // as if killed before step 15's checkpoint
  config.resume = true;
  train(config, {false});
  auto lines = read_metrics(scratch / "run" / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 15u);
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i].at("step").get<int64_t>(), static_cast<int64_t>(i + 1));
}

TEST(Trainer, GradientAccumulationEqualsTheLargerBatch) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig whole = testing::tiny_train_config(scratch / "data", scratch / "whole");
  whole.steps = 8;
  train(whole, {false});
  TrainConfig accumulated = whole;
  accumulated.out = (scratch / "accumulated").string();
  accumulated.batch_size = 2;
  accumulated.grad_accum = 2;
  train(accumulated, {false});
  auto expected = losses_of(scratch / "whole"), actual = losses_of(scratch / "accumulated");
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]);
}

TEST(Trainer, SameSeedSameThreadsGivesIdenticalRuns) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig first = testing::tiny_train_config(scratch / "data", scratch / "a");
  first.steps = 5;
  train(first, {false});
  TrainConfig second = first;
  second.out = (scratch / "b").string();
  train(second, {false});
  EXPECT_EQ(losses_of(scratch / "a"), losses_of(scratch / "b"));
  second.out = (scratch / "c").string();
  second.seed = 2;
  train(second, {false});
  EXPECT_NE(losses_of(scratch / "a"), losses_of(scratch / "c"));
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  EXPECT_DOUBLE_EQ(learning_rate(0, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(9, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(10, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_NEAR(learning_rate(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);  // halfway: (1 + 0.1) / 2
  EXPECT_NEAR(learning_rate(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
}

TEST(Optimizer, ClippingScalesToTheMaximumNorm) {
  auto a = torch::zeros({2}, torch::requires_grad()), b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  std::vector<NamedParameter> parameters = {{"a", a}, {"b", b}};
  EXPECT_NEAR(clip_grad_norm(parameters, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(clip_grad_norm(parameters, 10.0), 1.0, 1e-5);  // already below: untouched
}

TEST(Optimizer, AdamWFirstStepsFollowTheFormula) {
  // One matrix (decayed) and one vector (not decayed), constant gradient g: after t steps with
  // bias correction m_hat = g and v_hat = g^2, so each step moves by lr * g / (|g| + eps).
  auto matrix = torch::ones({1, 1}, torch::requires_grad()), vector = torch::ones({1}, torch::requires_grad());
  Optimizer optimizer({{"m", matrix}, {"v", vector}}, {0.9, 0.95, 1e-8, 0.1});
  double expected_matrix = 1.0, expected_vector = 1.0;
  const double lr = 0.01, g = 0.5;
  for (int t = 0; t < 3; ++t) {
    matrix.mutable_grad() = torch::full({1, 1}, g);
    vector.mutable_grad() = torch::full({1}, g);
    optimizer.step(lr);
    expected_matrix = expected_matrix * (1 - lr * 0.1) - lr * g / (g + 1e-8);
    expected_vector = expected_vector - lr * g / (g + 1e-8);
  }
  EXPECT_NEAR(matrix.item<double>(), expected_matrix, 1e-6);
  EXPECT_NEAR(vector.item<double>(), expected_vector, 1e-6);
  EXPECT_EQ(optimizer.step_count(), 3);
}

TEST(Optimizer, SgdStepsFollowTorchOptimSgd) {
  // torch.optim.SGD(lr, weight_decay): d = g + wd θ; θ ← θ − lr d. Norms (vectors) are not decayed.
  auto matrix = torch::ones({1, 1}, torch::requires_grad()), vector = torch::ones({1}, torch::requires_grad());
  Optimizer optimizer({{"m", matrix}, {"v", vector}}, {0.9, 0.95, 1e-8, 0.1, OptimizerKind::Sgd});
  double expected_matrix = 1.0, expected_vector = 1.0;
  const double lr = 0.1, g = 0.5;
  for (int t = 0; t < 3; ++t) {
    matrix.mutable_grad() = torch::full({1, 1}, g);
    vector.mutable_grad() = torch::full({1}, g);
    optimizer.step(lr);
    expected_matrix -= lr * (g + 0.1 * expected_matrix);
    expected_vector -= lr * g;
  }
  EXPECT_NEAR(matrix.item<double>(), expected_matrix, 1e-6);
  EXPECT_NEAR(vector.item<double>(), expected_vector, 1e-6);
  EXPECT_TRUE(optimizer.exp_avg().empty()) << "SGD keeps no state";
}

}  // namespace
}  // namespace strait
