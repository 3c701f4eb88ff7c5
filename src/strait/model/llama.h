// A Llama-style decoder written directly on LibTorch tensors, with parameters named exactly as in
// Hugging Face's LlamaForCausalLM, so checkpoints map 1:1 onto model.safetensors.
//
// Intended usage:
//   LlamaModel model(config);
//   model.init_weights(seed);
//   torch::Tensor loss = model.loss(inputs, targets);   // inputs, targets: (B, T) int64
//   loss.backward();                                    // gradients land in model.parameters()
//   KVCache cache = model.make_cache(1);                // incremental decoding for generation
//   torch::Tensor next_logits = model.forward_cached(prompt, cache);
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "strait/model/model_config.h"

namespace strait {

struct NamedParameter {
  std::string name;      // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  torch::Tensor tensor;  // fp32 leaf tensor with requires_grad
};

// Keys and values of every layer for the positions decoded so far.
struct KVCache {
  std::vector<torch::Tensor> keys;    // per layer (B, H, context_length, D), in the compute dtype
  std::vector<torch::Tensor> values;  // per layer (B, H, context_length, D)
  int64_t length = 0;                 // positions filled
};

class LlamaModel {
 public:
  explicit LlamaModel(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  // In a fixed order: embedding, then layer by layer, final norm, LM head (absent when tied).
  const std::vector<NamedParameter>& parameters() const { return parameters_; }
  torch::Tensor parameter(const std::string& name) const;

  // Matrices ~ N(0, 0.02), norm weights = 1, from a generator seeded with `seed` (same weights
  // for the same seed whatever the thread count).
  void init_weights(uint64_t seed);

  // tokens (B, T) int64 with T <= context_length -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& tokens) const;
  // Mean next-token cross-entropy of forward(inputs) against targets (B, T).
  torch::Tensor loss(const torch::Tensor& inputs, const torch::Tensor& targets) const;

  // The same computation in stages, for a strategy that holds only some layers' weights at a
  // time (ZeRO-3): loss(inputs, targets) is exactly
  //   head_loss(block(L - 1, ... block(0, embed(inputs)) ...), targets).
  // embed: tokens (B, T) -> the fp32 residual stream (B, T, C); uses only the embedding.
  torch::Tensor embed(const torch::Tensor& tokens) const;
  // Transformer layer `layer` on the residual stream (B, T, C) at positions 0..T-1; uses only that
  // layer's weights.
  torch::Tensor block(int64_t layer, const torch::Tensor& x) const;
  // Final norm, LM head and the mean cross-entropy against targets (B, T); uses the final norm
  // and the LM head (the embedding when tied).
  torch::Tensor head_loss(const torch::Tensor& x, const torch::Tensor& targets) const;

  // Mixed precision: matrix products run in `dtype` (float32 or bfloat16) on copies of the fp32
  // weights cast each forward pass; weights, gradients, the residual stream, RMSNorm statistics,
  // softmax statistics and logits stay fp32.
  void set_compute_dtype(torch::ScalarType dtype);
  torch::ScalarType compute_dtype() const { return compute_dtype_; }

  KVCache make_cache(int64_t batch_size) const;
  // Appends tokens (B, t) at positions cache.length.. and returns their logits (B, t, V).
  torch::Tensor forward_cached(const torch::Tensor& tokens, KVCache& cache) const;

 private:
  struct Layer {
    torch::Tensor input_norm, q_proj, k_proj, v_proj, o_proj;  // (C), (C, C) x4
    torch::Tensor post_norm, gate_proj, up_proj, down_proj;     // (C), (F, C), (F, C), (C, F)
  };

  torch::Tensor compute(const torch::Tensor& x) const { return x.to(compute_dtype_); }
  torch::Tensor add_parameter(const std::string& name, std::vector<int64_t> shape);
  void check_tokens(const torch::Tensor& tokens, int64_t start_position) const;
  // RMSNorm of the fp32 residual stream, output in the compute dtype.
  torch::Tensor norm(const torch::Tensor& x, const torch::Tensor& weight) const;
  // normed (B, T, C) at positions start.. -> attention output (B, T, C), each query seeing the keys
  // at or before its position. With a cache, keys and values of earlier positions come from it
  // and the new ones are appended.
  torch::Tensor attention(const Layer& layer, const torch::Tensor& normed, int64_t start_position,
                          torch::Tensor* cached_keys, torch::Tensor* cached_values) const;
  torch::Tensor mlp(const Layer& layer, const torch::Tensor& normed) const;
  torch::Tensor run_block(const Layer& layer, torch::Tensor x, int64_t start_position, torch::Tensor* cached_keys,
                          torch::Tensor* cached_values) const;
  torch::Tensor logits(const torch::Tensor& x) const;
  torch::Tensor decode(const torch::Tensor& tokens, KVCache* cache) const;

  ModelConfig config_;
  std::vector<NamedParameter> parameters_;
  torch::Tensor embed_tokens_;  // (V, C)
  std::vector<Layer> layers_;
  torch::Tensor final_norm_;    // (C)
  torch::Tensor lm_head_;       // (V, C); the embedding itself when tied
  torch::Tensor rope_cos_;      // (context_length, D) = cos(cat(freqs, freqs))
  torch::Tensor rope_sin_;      // (context_length, D)
  torch::ScalarType compute_dtype_ = torch::kFloat32;
};

}  // namespace strait
