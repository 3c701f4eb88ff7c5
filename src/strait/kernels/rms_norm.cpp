// RMSNorm, forward and backward, one pass over the rows each.
//   forward:  rstd = 1 / sqrt(mean(x^2) + eps),  y = (x * rstd) * w
//   backward: g = dy * w,  dx = rstd * g - x * rstd^3 * mean(g * x),  dw = sum over rows of dy * x * rstd
#include <vector>

#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

template <typename Out>
STRAIT_VECTORIZED void rms_norm_forward_rows(const float* x, const float* weight, Out* y, float* rstd, int64_t first,
                                             int64_t end, int64_t C, float eps) {
  for (int64_t row = first; row < end; ++row) {
    const float* x_row = x + row * C;
    Out* y_row = y + row * C;
    float sum_of_squares = 0.0f;
#pragma omp simd reduction(+ : sum_of_squares)
    for (int64_t j = 0; j < C; ++j) sum_of_squares += x_row[j] * x_row[j];
    const float inverse_rms = 1.0f / std::sqrt(sum_of_squares / static_cast<float>(C) + eps);
    rstd[row] = inverse_rms;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) y_row[j] = store<Out>((x_row[j] * inverse_rms) * weight[j]);
  }
}

template <typename Out>
STRAIT_VECTORIZED void rms_norm_backward_rows(const float* x, const float* weight, const float* rstd, const Out* dy,
                                              float* dx, float* dweight_partial, int64_t first, int64_t end,
                                              int64_t C) {
  for (int64_t row = first; row < end; ++row) {
    const float* x_row = x + row * C;
    const Out* dy_row = dy + row * C;
    float* dx_row = dx + row * C;
    const float inverse_rms = rstd[row];
    float dot = 0.0f;  // sum of g * x
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < C; ++j) dot += load(dy_row[j]) * weight[j] * x_row[j];
    const float correction = inverse_rms * inverse_rms * inverse_rms * dot / static_cast<float>(C);
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
      const float upstream = load(dy_row[j]);
      dx_row[j] = inverse_rms * upstream * weight[j] - x_row[j] * correction;
      dweight_partial[j] += upstream * x_row[j] * inverse_rms;
    }
  }
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& input,
                               const torch::Tensor& weight, double eps, c10::ScalarType out_dtype) {
    auto x = input.contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(1, C);
    auto y = torch::empty(x.sizes(), x.options().dtype(out_dtype));
    auto rstd = torch::empty({rows}, x.options());
    auto w = weight.contiguous();
    dispatch_float_or_bf16(out_dtype, "rms_norm", [&](auto tag) {
      using Out = decltype(tag);
      for_each_row_range(rows, C, [&](int64_t first, int64_t end) {
        rms_norm_forward_rows(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<Out>(), rstd.data_ptr<float>(),
                              first, end, C, static_cast<float>(eps));
      });
    });
    context->save_for_backward({x, w, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grads) {
    const auto saved = context->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto& rstd = saved[2];
    auto dy = grads[0].contiguous();
    const int64_t C = x.size(-1), rows = rstd.numel();
    auto dx = torch::empty_like(x);
    // One dw accumulator per intra-op thread, summed in thread order afterwards: no atomics,
    // and the same result for the same thread count.
    auto dweight_partials = torch::zeros({at::get_num_threads(), C}, x.options());
    dispatch_float_or_bf16(dy.scalar_type(), "rms_norm backward", [&](auto tag) {
      using Out = decltype(tag);
      for_each_row_range(rows, C, [&](int64_t first, int64_t end) {
        float* partial = dweight_partials.data_ptr<float>() + at::get_thread_num() * C;
        rms_norm_backward_rows(x.data_ptr<float>(), w.data_ptr<float>(), rstd.data_ptr<float>(), dy.data_ptr<Out>(),
                               dx.data_ptr<float>(), partial, first, end, C);
      });
    });
    return {dx, dweight_partials.sum(0), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, torch::ScalarType out_dtype) {
  if (x.scalar_type() != torch::kFloat32 || weight.scalar_type() != torch::kFloat32) {
    throw Error("rms_norm: input and weight must be float32 (the residual stream and master weights)");
  }
  if (weight.dim() != 1 || x.dim() < 1 || x.size(-1) != weight.size(0)) {
    throw Error("rms_norm: weight of shape " + c10::str(weight.sizes()) + " does not match input " +
                c10::str(x.sizes()));
  }
  return RmsNormFunction::apply(x, weight, eps, out_dtype);
}

}  // namespace strait::kernels
