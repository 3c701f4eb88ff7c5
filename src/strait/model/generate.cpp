#include "strait/model/generate.h"

#include "strait/core/error.h"

namespace strait {

namespace {

int64_t sample(const torch::Tensor& logits, const SamplingOptions& options, at::Generator& generator) {
  if (options.temperature <= 0.0) return logits.argmax().item<int64_t>();
  auto scaled = logits.to(torch::kFloat64) / options.temperature;
  if (options.top_k > 0 && options.top_k < scaled.size(0)) {
    const double threshold = std::get<0>(scaled.topk(options.top_k)).min().item<double>();
    scaled = scaled.masked_fill(scaled < threshold, -std::numeric_limits<double>::infinity());
  }
  return torch::multinomial(torch::softmax(scaled, 0), 1, false, generator).item<int64_t>();
}

}  // namespace

std::vector<int64_t> generate(const LlamaModel& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options) {
  const int64_t context = model.config().context_length;
  if (prompt.empty()) throw Error("the prompt is empty; generation needs at least one token");
  if (options.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (total > context) {
    throw Error("prompt of " + std::to_string(prompt.size()) + " tokens + " + std::to_string(options.max_new_tokens) +
                " new tokens exceeds the model's context length " + std::to_string(context) +
                "; shorten the prompt or lower --max-tokens");
  }
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<int64_t> sequence = prompt;
  std::vector<int64_t> generated;
  KVCache cache = model.make_cache(1);
  auto as_tensor = [](std::vector<int64_t> tokens) {
    const auto n = static_cast<int64_t>(tokens.size());
    return torch::tensor(tokens, torch::kInt64).view({1, n});
  };
  // With the cache, the first call feeds the whole prompt, later calls just the newest token.
  torch::Tensor logits = options.use_cache ? model.forward_cached(as_tensor(prompt), cache) : torch::Tensor();
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    if (!options.use_cache) logits = model.forward(as_tensor(sequence));
    const int64_t next = sample(logits[0][logits.size(1) - 1], options, generator);
    generated.push_back(next);
    sequence.push_back(next);
    if (options.use_cache && i + 1 < options.max_new_tokens) logits = model.forward_cached(as_tensor({next}), cache);
  }
  return generated;
}

}  // namespace strait
