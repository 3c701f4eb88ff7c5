#include "strait/model/llama.h"

#include <cmath>

#include "strait/core/error.h"
#include "strait/kernels/fused_ops.h"

namespace strait {

LlamaModel::LlamaModel(const ModelConfig& config) : config_(config) {
  config_.validate();
  const int64_t C = config_.hidden_size, F = config_.intermediate_size, V = config_.vocab_size;
  embed_tokens_ = add_parameter("model.embed_tokens.weight", {V, C});
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = add_parameter(prefix + "input_layernorm.weight", {C});
    layer.q_proj = add_parameter(prefix + "self_attn.q_proj.weight", {C, C});
    layer.k_proj = add_parameter(prefix + "self_attn.k_proj.weight", {C, C});
    layer.v_proj = add_parameter(prefix + "self_attn.v_proj.weight", {C, C});
    layer.o_proj = add_parameter(prefix + "self_attn.o_proj.weight", {C, C});
    layer.post_norm = add_parameter(prefix + "post_attention_layernorm.weight", {C});
    layer.gate_proj = add_parameter(prefix + "mlp.gate_proj.weight", {F, C});
    layer.up_proj = add_parameter(prefix + "mlp.up_proj.weight", {F, C});
    layer.down_proj = add_parameter(prefix + "mlp.down_proj.weight", {C, F});
    layers_.push_back(layer);
  }
  final_norm_ = add_parameter("model.norm.weight", {C});
  lm_head_ = config_.tie_embeddings ? embed_tokens_ : add_parameter("lm_head.weight", {V, C});

  // Rotary tables in Hugging Face's convention: frequency i applies to dimensions i and i + D/2
  // (rotate-half), not to adjacent pairs as in the original RoPE paper.
  const int64_t D = config_.head_dim();
  auto inv_freq = 1.0 / torch::pow(config_.rope_theta, torch::arange(0, D, 2, torch::kFloat64) / D);
  auto positions = torch::arange(config_.context_length, torch::kFloat64);
  auto freqs = torch::outer(positions, inv_freq);
  auto angles = torch::cat({freqs, freqs}, -1);
  rope_cos_ = angles.cos().to(torch::kFloat32);
  rope_sin_ = angles.sin().to(torch::kFloat32);
  init_weights(0);
}

torch::Tensor LlamaModel::add_parameter(const std::string& name, std::vector<int64_t> shape) {
  auto tensor = torch::empty(shape, torch::kFloat32).requires_grad_(true);
  parameters_.push_back({name, tensor});
  return tensor;
}

torch::Tensor LlamaModel::parameter(const std::string& name) const {
  for (const auto& parameter : parameters_) {
    if (parameter.name == name) return parameter.tensor;
  }
  throw Error("model has no parameter named '" + name + "'");
}

void LlamaModel::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& parameter : parameters_) {
    if (parameter.tensor.dim() == 1) {
      parameter.tensor.fill_(1.0);
    } else {
      parameter.tensor.normal_(0.0, 0.02, generator);
    }
  }
}

void LlamaModel::check_tokens(const torch::Tensor& tokens, int64_t start_position) const {
  if (tokens.dim() != 2 || tokens.scalar_type() != torch::kInt64) {
    throw Error("model input must be a (batch, time) int64 tensor");
  }
  const int64_t end = start_position + tokens.size(1);
  if (end > config_.context_length) {
    throw Error("sequence of " + std::to_string(end) + " tokens exceeds the model's context length " +
                std::to_string(config_.context_length));
  }
  if (tokens.numel() > 0) {
    const int64_t low = tokens.min().item<int64_t>(), high = tokens.max().item<int64_t>();
    if (low < 0 || high >= config_.vocab_size) {
      throw Error("token id " + std::to_string(low < 0 ? low : high) + " is outside the vocabulary [0, " +
                  std::to_string(config_.vocab_size) + ")");
    }
  }
}

torch::Tensor LlamaModel::norm(const torch::Tensor& x, const torch::Tensor& weight) const {
  return kernels::rms_norm(x, weight, config_.rms_norm_eps, compute_dtype_);
}

torch::Tensor LlamaModel::attention(const Layer& layer, const torch::Tensor& normed, int64_t start_position,
                                    torch::Tensor* cached_keys, torch::Tensor* cached_values) const {
  const int64_t B = normed.size(0), T = normed.size(1), H = config_.num_heads, D = config_.head_dim();
  // One (3C x C) product instead of three (C x C) ones: fewer, larger matrix products run
  // closer to the machine's peak; concatenating the weights costs a copy of 3C^2 floats.
  auto qkv = torch::linear(normed, compute(torch::cat({layer.q_proj, layer.k_proj, layer.v_proj})));
  auto [q, k, v] = kernels::rotary_heads(qkv, rope_cos_, rope_sin_, start_position, H);  // (B, H, T, D) each
  if (cached_keys != nullptr) {
    cached_keys->narrow(2, start_position, T).copy_(k);
    cached_values->narrow(2, start_position, T).copy_(v);
    k = cached_keys->narrow(2, 0, start_position + T);
    v = cached_values->narrow(2, 0, start_position + T);
  }
  const int64_t S = k.size(2);  // key positions 0 .. start_position + T - 1
  auto scores = torch::bmm(q.reshape({B * H, T, D}), k.reshape({B * H, S, D}).transpose(1, 2));
  // Scaling, the causal mask and the softmax in one pass, statistics in fp32 whatever the dtype.
  auto probabilities = kernels::causal_softmax(scores, 1.0 / std::sqrt(static_cast<double>(D)), start_position);
  auto context = torch::bmm(probabilities, v.reshape({B * H, S, D})).view({B, H, T, D});
  return torch::linear(context.transpose(1, 2).reshape({B, T, H * D}), compute(layer.o_proj));
}

void LlamaModel::set_compute_dtype(torch::ScalarType dtype) {
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16) {
    throw Error(std::string("unsupported compute dtype ") + c10::toString(dtype) + " (expected float32 or bfloat16)");
  }
  compute_dtype_ = dtype;
}

torch::Tensor LlamaModel::mlp(const Layer& layer, const torch::Tensor& normed) const {
  // Gate and up projections as one product, for the same reason as q, k and v.
  auto gate_up = torch::linear(normed, compute(torch::cat({layer.gate_proj, layer.up_proj})));
  return torch::linear(kernels::swiglu(gate_up), compute(layer.down_proj));
}

torch::Tensor LlamaModel::run_block(const Layer& layer, torch::Tensor x, int64_t start_position,
                                    torch::Tensor* cached_keys, torch::Tensor* cached_values) const {
  // The residual stream x stays fp32 (each block's output is added to it in fp32), so RMSNorm
  // statistics are fp32 too; the norms hand the matrix products their input in the compute dtype.
  x = x + attention(layer, norm(x, layer.input_norm), start_position, cached_keys, cached_values);
  return x + mlp(layer, norm(x, layer.post_norm));
}

torch::Tensor LlamaModel::logits(const torch::Tensor& x) const {
  return torch::linear(norm(x, final_norm_), compute(lm_head_)).to(torch::kFloat32);
}

torch::Tensor LlamaModel::decode(const torch::Tensor& tokens, KVCache* cache) const {
  const int64_t start = cache != nullptr ? cache->length : 0;
  check_tokens(tokens, start);
  auto x = torch::embedding(embed_tokens_, tokens);
  for (size_t i = 0; i < layers_.size(); ++i) {
    torch::Tensor* keys = cache != nullptr ? &cache->keys[i] : nullptr;
    torch::Tensor* values = cache != nullptr ? &cache->values[i] : nullptr;
    x = run_block(layers_[i], x, start, keys, values);
  }
  if (cache != nullptr) cache->length += tokens.size(1);
  return logits(x);
}

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens) const { return decode(tokens, nullptr); }

torch::Tensor LlamaModel::loss(const torch::Tensor& inputs, const torch::Tensor& targets) const {
  auto x = embed(inputs);
  for (int64_t i = 0; i < config_.num_layers; ++i) x = block(i, x);
  return head_loss(x, targets);
}

torch::Tensor LlamaModel::embed(const torch::Tensor& tokens) const {
  check_tokens(tokens, 0);
  return torch::embedding(embed_tokens_, tokens);
}

torch::Tensor LlamaModel::block(int64_t layer, const torch::Tensor& x) const {
  if (layer < 0 || layer >= config_.num_layers) {
    throw Error("layer " + std::to_string(layer) + " is outside the model's " + std::to_string(config_.num_layers) +
                " layers");
  }
  return run_block(layers_[static_cast<size_t>(layer)], x, 0, nullptr, nullptr);
}

torch::Tensor LlamaModel::head_loss(const torch::Tensor& x, const torch::Tensor& targets) const {
  return torch::cross_entropy_loss(logits(x).view({-1, config_.vocab_size}), targets.reshape({-1}));
}

KVCache LlamaModel::make_cache(int64_t batch_size) const {
  KVCache cache;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    auto shape = std::vector<int64_t>{batch_size, config_.num_heads, config_.context_length, config_.head_dim()};
    cache.keys.push_back(torch::zeros(shape, compute_dtype_));
    cache.values.push_back(torch::zeros(shape, compute_dtype_));
  }
  return cache;
}

torch::Tensor LlamaModel::forward_cached(const torch::Tensor& tokens, KVCache& cache) const {
  torch::NoGradGuard no_grad;
  return decode(tokens, &cache);
}

}  // namespace strait
