// bf16-mixed training: bf16 matrix products, fp32 everything else. It must stay close to fp32.
#include <gtest/gtest.h>

#include "strait/core/error.h"
#include "strait/core/metrics.h"
#include "strait/model/llama.h"
#include "strait/train/efficiency.h"
#include "strait/train/trainer.h"
#include "train/fixtures.h"

namespace strait {
namespace {

TEST(Precision, GradientsOfOneStepAgreeWithFp32WithinBf16Tolerance) {
  ModelConfig config = model_preset("nano", 256);
  config.context_length = 32;
  LlamaModel fp32(config), bf16(config);
  fp32.init_weights(8);
  bf16.init_weights(8);
  bf16.set_compute_dtype(torch::kBFloat16);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(5);
  auto tokens = torch::randint(256, {4, 33}, generator, torch::kInt64);
  auto inputs = tokens.narrow(1, 0, 32), targets = tokens.narrow(1, 1, 32);
  auto loss32 = fp32.loss(inputs, targets), loss16 = bf16.loss(inputs, targets);
  loss32.backward();
  loss16.backward();
  EXPECT_NEAR(loss16.item<double>(), loss32.item<double>(), 0.01 * loss32.item<double>());
  for (size_t i = 0; i < fp32.parameters().size(); ++i) {
    const auto& name = fp32.parameters()[i].name;
    auto g32 = fp32.parameters()[i].tensor.grad(), g16 = bf16.parameters()[i].tensor.grad();
    ASSERT_EQ(g16.scalar_type(), torch::kFloat32) << name << ": gradients must stay fp32";
    // bf16 keeps 8 significant bits (relative rounding 2^-9 per operation): the direction and size
    // of every gradient must survive, individual elements may move by a few percent.
    const double cosine = torch::cosine_similarity(g16.flatten(), g32.flatten(), 0).item<double>();
    const double norm_ratio = (g16.norm() / g32.norm()).item<double>();
    EXPECT_GT(cosine, 0.99) << name;
    EXPECT_NEAR(norm_ratio, 1.0, 0.03) << name;
  }
  // And bf16 really computes in bf16: the losses differ.
  EXPECT_NE(loss16.item<double>(), loss32.item<double>());
}

TEST(Precision, Bf16MixedTrainingTracksFp32ValidationLoss) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data", 60000, 8000);
  TrainConfig fp32 = testing::tiny_train_config(scratch / "data", scratch / "fp32");
  fp32.steps = 300;
  fp32.warmup_steps = 30;
  fp32.eval_every = 0;
  fp32.eval_batches = 10;
  fp32.checkpoint_every = 0;
  TrainConfig bf16 = fp32;
  bf16.out = (scratch / "bf16").string();
  bf16.precision = "bf16-mixed";
  const double val32 = train(fp32, {false}).at("final_val_loss").get<double>();
  const auto summary16 = train(bf16, {false});
  const double val16 = summary16.at("final_val_loss").get<double>();
  EXPECT_LT(val32, 2.5);  // it learned something: ln(256) = 5.5 at the start
  EXPECT_NEAR(val16, val32, 0.02 * val32);
  EXPECT_EQ(summary16.at("precision"), "bf16-mixed");
}

TEST(Precision, AutoPicksBf16OnlyWhereTheCpuHasIt) {
  EXPECT_EQ(resolve_precision("auto"), cpu_has_fast_bf16() ? "bf16-mixed" : "fp32");
  EXPECT_EQ(resolve_precision("fp32"), "fp32");
  EXPECT_THROW(resolve_precision("fp16"), Error);
}

TEST(Efficiency, FlopsPerTokenFollowTheFormula) {
  ModelConfig config = model_preset("small", 256);
  const double C = 256, F = 688, L = 6, V = 256, T = 128;
  EXPECT_DOUBLE_EQ(training_flops_per_token(config, 128), 6 * (L * (4 * C * C + 3 * C * F) + V * C) + 12 * L * T * C);
}

TEST(Efficiency, MetricsCarryMfuAndTheSummaryTheMeasuredRates) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig config = testing::tiny_train_config(scratch / "data", scratch / "run");
  config.steps = 3;
  auto summary = train(config, {false});
  EXPECT_GT(summary.at("matmul_gflops").at("fp32").get<double>(), 1.0);
  EXPECT_GT(summary.at("matmul_gflops").at("bf16").get<double>(), 1.0);
  const double mfu = summary.at("mfu").get<double>();
  EXPECT_GT(mfu, 0.0);
  EXPECT_LT(mfu, 1.5);  // a tiny model is far from peak; above 1 would mean a wrong formula
  for (const auto& line : read_metrics(scratch / "run" / "metrics.jsonl")) EXPECT_TRUE(line.contains("mfu"));
}

}  // namespace
}  // namespace strait
