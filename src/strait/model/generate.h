// Text generation with incremental decoding: the prompt is run once to fill the key/value
// cache, then each new token costs one position of compute.
#pragma once

#include <cstdint>
#include <vector>

#include "strait/model/llama.h"

namespace strait {

struct SamplingOptions {
  int64_t max_new_tokens = 200;
  double temperature = 0.8;  // 0 = greedy (argmax)
  int64_t top_k = 40;        // 0 = sample from the whole vocabulary
  uint64_t seed = 1;
  bool use_cache = true;     // false recomputes the whole sequence every step (for checking)
};

// Returns the new tokens only. Errors: an empty prompt, token ids outside the vocabulary, or a
// prompt + max_new_tokens longer than the model's context length.
std::vector<int64_t> generate(const LlamaModel& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options);

}  // namespace strait
