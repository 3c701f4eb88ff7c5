// Properties of the model itself: causality, learning, incremental decoding.
#include <gtest/gtest.h>

#include "strait/core/error.h"
#include "strait/model/generate.h"
#include "strait/model/llama.h"
#include "strait/train/optimizer.h"

namespace strait {
namespace {

ModelConfig nano_config() {
  ModelConfig config = model_preset("nano", 256);
  config.context_length = 32;
  return config;
}

torch::Tensor random_tokens(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(vocab, {batch, length}, generator, torch::kInt64);
}

TEST(Llama, PresetsHaveTheAdvertisedSizes) {
  EXPECT_NEAR(model_preset("nano", 256).num_parameters(), 1e5, 0.5e5);
  EXPECT_NEAR(model_preset("micro", 256).num_parameters(), 1e6, 0.2e6);
  EXPECT_NEAR(model_preset("small", 256).num_parameters(), 5e6, 0.5e6);
  EXPECT_NEAR(model_preset("base", 256).num_parameters(), 25e6, 2.5e6);
  LlamaModel model(nano_config());
  int64_t counted = 0;
  for (const auto& parameter : model.parameters()) counted += parameter.tensor.numel();
  EXPECT_EQ(counted, model.config().num_parameters());
}

TEST(Llama, ParametersUseHuggingFaceNames) {
  ModelConfig config = nano_config();
  LlamaModel untied(config);
  EXPECT_EQ(untied.parameters().front().name, "model.embed_tokens.weight");
  EXPECT_EQ(untied.parameters()[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(untied.parameters().back().name, "lm_head.weight");
  config.tie_embeddings = true;
  LlamaModel tied(config);
  EXPECT_EQ(tied.parameters().back().name, "model.norm.weight");
  EXPECT_EQ(untied.parameters().size(), tied.parameters().size() + 1);
}

TEST(Llama, ChangingTokenTNeverChangesEarlierLogits) {
  LlamaModel model(nano_config());
  model.init_weights(7);
  torch::NoGradGuard no_grad;
  auto tokens = random_tokens(2, 32, 256, 1);
  auto reference = model.forward(tokens);
  for (int64_t t : {0, 5, 17, 31}) {
    auto changed = tokens.clone();
    changed.select(1, t).add_(1).remainder_(256);
    auto logits = model.forward(changed);
    if (t > 0) {
      EXPECT_TRUE(torch::equal(logits.narrow(1, 0, t), reference.narrow(1, 0, t))) << "position " << t;
    }
    EXPECT_FALSE(torch::allclose(logits.select(1, t), reference.select(1, t))) << "position " << t;
  }
}

TEST(Llama, OverfitsOneSmallBatch) {
  torch::set_num_threads(1);
  LlamaModel model(nano_config());
  model.init_weights(3);
  Optimizer optimizer(model.parameters(), {0.9, 0.95, 1e-8, 0.0});
  auto tokens = random_tokens(2, 33, 256, 2);
  auto inputs = tokens.narrow(1, 0, 32), targets = tokens.narrow(1, 1, 32);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    optimizer.zero_grad();
    auto loss = model.loss(inputs, targets);
    loss.backward();
    optimizer.step(1e-2);
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_GT(first, 5.0);  // ~ln(256) at initialisation
  EXPECT_LT(last, 0.05);
}

TEST(Llama, CachedGreedyGenerationEqualsFullRecomputation) {
  LlamaModel model(nano_config());
  model.init_weights(11);
  std::vector<int64_t> prompt = {72, 101, 108, 108, 111};
  SamplingOptions options;
  options.temperature = 0.0;
  options.max_new_tokens = 27;  // fills the context exactly
  options.use_cache = true;
  auto cached = generate(model, prompt, options);
  options.use_cache = false;
  auto recomputed = generate(model, prompt, options);
  EXPECT_EQ(cached.size(), 27u);
  EXPECT_EQ(cached, recomputed);
}

TEST(Llama, CachedLogitsMatchFullForward) {
  LlamaModel model(nano_config());
  model.init_weights(5);
  auto tokens = random_tokens(1, 20, 256, 9);
  torch::NoGradGuard no_grad;
  auto full = model.forward(tokens);
  KVCache cache = model.make_cache(1);
  auto head = model.forward_cached(tokens.narrow(1, 0, 12), cache);
  auto tail = model.forward_cached(tokens.narrow(1, 12, 8), cache);
  EXPECT_TRUE(torch::allclose(torch::cat({head, tail}, 1), full, 1e-5, 1e-5));
}

TEST(Llama, SampledGenerationIsReproducibleFromTheSeed) {
  LlamaModel model(nano_config());
  model.init_weights(13);
  SamplingOptions options;
  options.max_new_tokens = 20;
  options.temperature = 1.0;
  options.top_k = 10;
  options.seed = 42;
  auto first = generate(model, {65}, options);
  EXPECT_EQ(first, generate(model, {65}, options));
  options.seed = 43;
  EXPECT_NE(first, generate(model, {65}, options));
}

TEST(Llama, RejectsTokensOutsideTheVocabularyAndOverlongSequences) {
  LlamaModel model(nano_config());
  torch::NoGradGuard no_grad;
  auto bad = torch::full({1, 4}, 256, torch::kInt64);
  try {
    model.forward(bad);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("token id 256 is outside the vocabulary [0, 256)"), std::string::npos);
  }
  try {
    model.forward(torch::zeros({1, 33}, torch::kInt64));
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("33 tokens exceeds the model's context length 32"), std::string::npos);
  }
  SamplingOptions options;
  options.max_new_tokens = 30;
  EXPECT_THROW(generate(model, {1, 2, 3}, options), Error);
}

}  // namespace
}  // namespace strait
