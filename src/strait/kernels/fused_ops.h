// Fused operations of the Llama block and its optimizer, each one pass over memory (forward and backward),
// differentiable through LibTorch's autograd. They accept fp32 or bf16 activations and always
// compute in fp32, rounding only their outputs; the composite ATen expressions each replaces are
// written next to it and are what tests/kernels checks them against.
#pragma once

#include <array>

#include <torch/torch.h>

namespace strait::kernels {

// RMSNorm over the last dimension, (x / sqrt(mean(x^2) + eps)) * weight, of fp32 x (..., C) with
// an fp32 weight (C), written in `out_dtype` (float32 or bfloat16): the norm feeds a matrix
// product in the compute dtype, so the cast is fused into it. Gradients reach x and weight in fp32.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, torch::ScalarType out_dtype);

// SwiGLU of a fused gate/up projection: gate_up (..., 2F) -> silu(gate_up[..., :F]) * gate_up[..., F:],
// in gate_up's dtype; the gradient comes back as one (..., 2F) tensor, ready for the fused product.
torch::Tensor swiglu(const torch::Tensor& gate_up);

// Splits a fused projection qkv (B, T, 3C) into heads q, k, v, each (B, H, T, D) contiguous with
// C = H * D, and applies rotary position embeddings to q and k for positions start .. start+T-1
// (Hugging Face's rotate-half convention, `cos` and `sin` fp32 tables (>= start+T, D)):
//   rotate(x) = x * cos + cat(-x[..., D/2:], x[..., :D/2]) * sin.
std::array<torch::Tensor, 3> rotary_heads(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                                          int64_t start, int64_t num_heads);

// Softmax of scale * scores (N, T, S) over the last dimension with a causal mask: query row i
// (at position start + i) sees keys 0 .. start + i; the other probabilities are exactly 0 and
// are never computed. S must be start + T.
torch::Tensor causal_softmax(const torch::Tensor& scores, double scale, int64_t start);

// The scalars of one AdamW step (see train/optimizer.h): weight_decay is 0 for tensors that are
// not decayed; step_size = lr / (1 - beta1^t); bias_correction2_sqrt = sqrt(1 - beta2^t).
struct AdamWCoefficients {
  float lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt;
};

// One AdamW update of `param` and its moments in place, from `grad`; all float32, same size.
void adamw_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg, torch::Tensor& exp_avg_sq,
                  const AdamWCoefficients& coefficients);

}  // namespace strait::kernels
