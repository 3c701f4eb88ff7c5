// SwiGLU on a fused gate/up projection, forward and backward, one pass over the rows each.
//   forward:  s = sigmoid(g),  h = g * s * u
//   backward: dg = dh * u * s * (1 + g * (1 - s)),  du = dh * g * s
// The backward writes dg and du side by side into one (..., 2F) gradient, which is what the fused
// gate/up matrix product's backward consumes (autograd's chunk() would allocate and fill it).
#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

template <typename T>
STRAIT_VECTORIZED void swiglu_forward_rows(const T* gate_up, T* hidden, int64_t first, int64_t end, int64_t F) {
  for (int64_t row = first; row < end; ++row) {
    const T* gate = gate_up + row * 2 * F;
    const T* up = gate + F;
    T* out = hidden + row * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float g = load(gate[j]);
      out[j] = store<T>(g * sigmoid(g) * load(up[j]));
    }
  }
}

template <typename T>
STRAIT_VECTORIZED void swiglu_backward_rows(const T* gate_up, const T* d_hidden, T* d_gate_up, int64_t first,
                                            int64_t end, int64_t F) {
  for (int64_t row = first; row < end; ++row) {
    const T* gate = gate_up + row * 2 * F;
    const T* up = gate + F;
    const T* upstream = d_hidden + row * F;
    T* d_gate = d_gate_up + row * 2 * F;
    T* d_up = d_gate + F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float g = load(gate[j]), u = load(up[j]), dh = load(upstream[j]);
      const float s = sigmoid(g);
      d_gate[j] = store<T>(dh * u * s * (1.0f + g * (1.0f - s)));
      d_up[j] = store<T>(dh * g * s);
    }
  }
}

class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& input) {
    auto gate_up = input.contiguous();
    const int64_t F = gate_up.size(-1) / 2, rows = gate_up.numel() / std::max<int64_t>(1, 2 * F);
    auto shape = gate_up.sizes().vec();
    shape.back() = F;
    auto hidden = torch::empty(shape, gate_up.options());
    dispatch_float_or_bf16(gate_up.scalar_type(), "swiglu", [&](auto tag) {
      using T = decltype(tag);
      for_each_row_range(rows, 2 * F, [&](int64_t first, int64_t end) {
        swiglu_forward_rows(gate_up.data_ptr<T>(), hidden.data_ptr<T>(), first, end, F);
      });
    });
    context->save_for_backward({gate_up});
    return hidden;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grads) {
    const auto gate_up = context->get_saved_variables()[0];
    auto d_hidden = grads[0].to(gate_up.scalar_type()).contiguous();
    const int64_t F = gate_up.size(-1) / 2, rows = gate_up.numel() / std::max<int64_t>(1, 2 * F);
    auto d_gate_up = torch::empty_like(gate_up);
    dispatch_float_or_bf16(gate_up.scalar_type(), "swiglu backward", [&](auto tag) {
      using T = decltype(tag);
      for_each_row_range(rows, 2 * F, [&](int64_t first, int64_t end) {
        swiglu_backward_rows(gate_up.data_ptr<T>(), d_hidden.data_ptr<T>(), d_gate_up.data_ptr<T>(), first, end, F);
      });
    });
    return {d_gate_up};
  }
};

}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate_up) {
  if (gate_up.dim() < 1 || gate_up.size(-1) % 2 != 0) {
    throw Error("swiglu: last dimension of " + c10::str(gate_up.sizes()) + " must be even (gate and up halves)");
  }
  return SwigluFunction::apply(gate_up);
}

}  // namespace strait::kernels
