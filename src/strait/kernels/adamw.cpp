// AdamW's update of one parameter tensor in one pass: reads the parameter, its gradient and both
// moments once and writes the parameter and moments once, instead of the nine ATen passes the
// same arithmetic takes operator by operator. Per element, in torch.optim.AdamW's order:
//   p = p * (1 - lr * weight_decay)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps)
#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

STRAIT_VECTORIZED void adamw_elements(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                                      const AdamWCoefficients& c, int64_t first, int64_t end) {
  const float decay = 1.0f - c.lr * c.weight_decay;
#pragma omp simd
  for (int64_t i = first; i < end; ++i) {
    const float g = grad[i];
    const float m = exp_avg[i] * c.beta1 + g * (1.0f - c.beta1);
    const float v = exp_avg_sq[i] * c.beta2 + g * g * (1.0f - c.beta2);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float denominator = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
    param[i] = param[i] * decay - c.step_size * m / denominator;
  }
}

void require_float_contiguous(const torch::Tensor& tensor, int64_t numel, const char* what) {
  if (tensor.scalar_type() != torch::kFloat32 || !tensor.is_contiguous() || tensor.numel() != numel) {
    throw Error(std::string("adamw_update: ") + what + " must be a contiguous float32 tensor of " +
                std::to_string(numel) + " elements, got " + c10::toString(tensor.scalar_type()) + " " +
                c10::str(tensor.sizes()));
  }
}

}  // namespace

void adamw_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg, torch::Tensor& exp_avg_sq,
                  const AdamWCoefficients& coefficients) {
  const int64_t n = param.numel();
  require_float_contiguous(param, n, "parameter");
  require_float_contiguous(exp_avg, n, "first moment");
  require_float_contiguous(exp_avg_sq, n, "second moment");
  const auto g = grad.contiguous();
  require_float_contiguous(g, n, "gradient");
  torch::NoGradGuard no_grad;  // an in-place update of leaf parameters, outside the graph
  float* p = param.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const float* gradient = g.data_ptr<float>();
  for_each_row_range(n, 1, [&](int64_t first, int64_t end) {
    adamw_elements(p, gradient, m, v, coefficients, first, end);
  });
}

}  // namespace strait::kernels
