// `strait eval` semantics: consecutive non-overlapping windows of the context length from the
// start of the shard, window j predicting tokens j*T+1 .. j*T+T.
#include <gtest/gtest.h>

#include "strait/core/error.h"
#include "strait/data/shard.h"
#include "strait/train/evaluate.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

TEST(Evaluate, MeanLossOverConsecutiveWindows) {
  testing::ScratchDir scratch;
  const int64_t T = 16;
  std::vector<uint16_t> tokens = testing::patterned_tokens(5 * T + 7, 3);  // 5 whole windows fit
  tokens[3] = 40000 % 256;  // ids must stay below the byte vocabulary
  data::write_shard(scratch / "shard.bin", tokens);
  ModelConfig config = model_preset("nano", 256);
  config.context_length = T;
  LlamaModel model(config);
  model.init_weights(4);

  // Independent expectation: each window's loss computed on its own, averaged.
  torch::NoGradGuard no_grad;
  std::vector<int64_t> all(tokens.begin(), tokens.end());
  auto sequence = torch::tensor(all, torch::kInt64);
  double expected = 0.0;
  for (int64_t j = 0; j < 5; ++j) {
    auto inputs = sequence.narrow(0, j * T, T).view({1, T});
    auto targets = sequence.narrow(0, j * T + 1, T).view({1, T});
    expected += model.loss(inputs, targets).item<double>() / 5.0;
  }
  auto result = evaluate_shard(model, scratch / "shard.bin", 0, 2);
  EXPECT_EQ(result.windows, 5);
  EXPECT_EQ(result.tokens, 5 * T);
  EXPECT_NEAR(result.loss, expected, 1e-6 * expected);

  auto capped = evaluate_shard(model, scratch / "shard.bin", 2, 8);
  EXPECT_EQ(capped.windows, 2);
}

TEST(Evaluate, RejectsShardsTooShortOrOutsideTheVocabulary) {
  testing::ScratchDir scratch;
  ModelConfig config = model_preset("nano", 100);
  config.context_length = 16;
  LlamaModel model(config);
  data::write_shard(scratch / "short.bin", std::vector<uint16_t>(16, 1));
  EXPECT_THROW(evaluate_shard(model, scratch / "short.bin", 0, 1), Error);
  std::vector<uint16_t> tokens(64, 1);
  tokens[10] = 100;
  data::write_shard(scratch / "big.bin", tokens);
  try {
    evaluate_shard(model, scratch / "big.bin", 0, 1);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("100"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace strait
