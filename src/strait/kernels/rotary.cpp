// Head split plus rotary position embeddings, forward and backward, one pass over the rows each.
// Rotate-half with half = D/2, per head vector x at position p (c = cos[p], s = sin[p]):
//   forward:  y[d] = x[d] c[d] - x[d+half] s[d]        (d <  half)
//             y[d] = x[d] c[d] + x[d-half] s[d]        (d >= half)
//   backward: dx[d] = dy[d] c[d] + dy[d+half] s[d+half]  (d <  half)
//             dx[d] = dy[d] c[d] - dy[d-half] s[d-half]  (d >= half)
// Fusing the (B, T, 3C) -> 3 x (B, H, T, D) layout change into the same loop saves the copies the
// batched attention products would otherwise make of transposed q, k and v.
#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

struct HeadLayout {
  int64_t seq_len, num_heads, head_dim;
  // Offset of (batch, head, position) in a contiguous (B, H, T, D) tensor.
  int64_t offset(int64_t batch, int64_t head, int64_t position) const {
    return ((batch * num_heads + head) * seq_len + position) * head_dim;
  }
};

// Both directions in one loop over j < half: the lower output element j and the upper one
// j + half. Forward: sign +1, sines sin[j] (lower) and sin[j + half] (upper). Backward (the
// transposed rotation): sign -1 and the two halves' sines swapped.
template <typename T>
inline void rotate(const T* x, const float* cos, const float* sine_lower, const float* sine_upper, T* out,
                   int64_t half, float sign) {
#pragma omp simd
  for (int64_t j = 0; j < half; ++j) {
    const float low = load(x[j]), high = load(x[j + half]);
    out[j] = store<T>(low * cos[j] - sign * high * sine_lower[j]);
    out[j + half] = store<T>(high * cos[j + half] + sign * low * sine_upper[j]);
  }
}

template <typename T>
inline void copy_head(const T* x, T* out, int64_t head_dim) {
#pragma omp simd
  for (int64_t d = 0; d < head_dim; ++d) out[d] = x[d];
}

template <typename T>
STRAIT_VECTORIZED void rotary_forward_rows(const T* qkv, const float* cos, const float* sin, T* q, T* k, T* v,
                                           HeadLayout layout, int64_t start, int64_t first, int64_t end) {
  const int64_t D = layout.head_dim, C = layout.num_heads * D;
  for (int64_t row = first; row < end; ++row) {
    const int64_t batch = row / layout.seq_len, position = row % layout.seq_len;
    const float* c = cos + (start + position) * D;
    const float* s = sin + (start + position) * D;
    const T* source = qkv + row * 3 * C;
    for (int64_t head = 0; head < layout.num_heads; ++head) {
      const int64_t at = layout.offset(batch, head, position);
      rotate(source + head * D, c, s, s + D / 2, q + at, D / 2, 1.0f);
      rotate(source + C + head * D, c, s, s + D / 2, k + at, D / 2, 1.0f);
      copy_head(source + 2 * C + head * D, v + at, D);
    }
  }
}

template <typename T>
STRAIT_VECTORIZED void rotary_backward_rows(const T* dq, const T* dk, const T* dv, const float* cos, const float* sin,
                                            T* dqkv, HeadLayout layout, int64_t start, int64_t first, int64_t end) {
  const int64_t D = layout.head_dim, C = layout.num_heads * D;
  for (int64_t row = first; row < end; ++row) {
    const int64_t batch = row / layout.seq_len, position = row % layout.seq_len;
    const float* c = cos + (start + position) * D;
    const float* s = sin + (start + position) * D;
    T* target = dqkv + row * 3 * C;
    for (int64_t head = 0; head < layout.num_heads; ++head) {
      const int64_t at = layout.offset(batch, head, position);
      rotate(dq + at, c, s + D / 2, s, target + head * D, D / 2, -1.0f);
      rotate(dk + at, c, s + D / 2, s, target + C + head * D, D / 2, -1.0f);
      copy_head(dv + at, target + 2 * C + head * D, D);
    }
  }
}

class RotaryHeadsFunction : public torch::autograd::Function<RotaryHeadsFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* context, const torch::Tensor& input,
                                                const torch::Tensor& cos, const torch::Tensor& sin, int64_t start,
                                                int64_t num_heads) {
    auto qkv = input.contiguous();
    const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3;
    const HeadLayout layout{T, num_heads, C / num_heads};
    auto q = torch::empty({B, num_heads, T, layout.head_dim}, qkv.options());
    auto k = torch::empty_like(q), v = torch::empty_like(q);
    dispatch_float_or_bf16(qkv.scalar_type(), "rotary_heads", [&](auto tag) {
      using E = decltype(tag);
      for_each_row_range(B * T, 3 * C, [&](int64_t first, int64_t end) {
        rotary_forward_rows(qkv.data_ptr<E>(), cos.data_ptr<float>(), sin.data_ptr<float>(), q.data_ptr<E>(),
                            k.data_ptr<E>(), v.data_ptr<E>(), layout, start, first, end);
      });
    });
    context->save_for_backward({cos, sin});
    context->saved_data["start"] = start;
    context->saved_data["num_heads"] = num_heads;
    context->saved_data["qkv_shape"] = qkv.sizes().vec();
    context->saved_data["dtype"] = qkv.scalar_type();
    return {q, k, v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grads) {
    const auto saved = context->get_saved_variables();
    const auto shape = context->saved_data["qkv_shape"].toIntVector();
    const auto dtype = context->saved_data["dtype"].toScalarType();
    const int64_t start = context->saved_data["start"].toInt(), num_heads = context->saved_data["num_heads"].toInt();
    const int64_t B = shape[0], T = shape[1], C = shape[2] / 3;
    const HeadLayout layout{T, num_heads, C / num_heads};
    // An output nobody used has no gradient; it contributes zeros.
    std::array<torch::Tensor, 3> d_heads;
    for (size_t i = 0; i < d_heads.size(); ++i) {
      d_heads[i] = grads[i].defined() ? grads[i].to(dtype).contiguous()
                                      : torch::zeros({B, num_heads, T, layout.head_dim}, torch::dtype(dtype));
    }
    auto dqkv = torch::empty(shape, torch::dtype(dtype));
    dispatch_float_or_bf16(dtype, "rotary_heads backward", [&](auto tag) {
      using E = decltype(tag);
      for_each_row_range(B * T, 3 * C, [&](int64_t first, int64_t end) {
        rotary_backward_rows(d_heads[0].data_ptr<E>(), d_heads[1].data_ptr<E>(), d_heads[2].data_ptr<E>(),
                             saved[0].data_ptr<float>(), saved[1].data_ptr<float>(), dqkv.data_ptr<E>(), layout,
                             start, first, end);
      });
    });
    return {dqkv, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::array<torch::Tensor, 3> rotary_heads(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                                          int64_t start, int64_t num_heads) {
  if (qkv.dim() != 3 || num_heads <= 0 || qkv.size(2) % (3 * num_heads) != 0) {
    throw Error("rotary_heads: expected qkv (B, T, 3 * H * D) with H = " + std::to_string(num_heads) + ", got " +
                c10::str(qkv.sizes()));
  }
  const int64_t head_dim = qkv.size(2) / (3 * num_heads);
  if (head_dim % 2 != 0 || cos.scalar_type() != torch::kFloat32 || sin.scalar_type() != torch::kFloat32 ||
      cos.dim() != 2 || !cos.is_contiguous() || !sin.is_contiguous() || cos.sizes() != sin.sizes() ||
      cos.size(1) != head_dim || start < 0 || cos.size(0) < start + qkv.size(1)) {
    throw Error("rotary_heads: cos/sin tables " + c10::str(cos.sizes()) + " do not cover " +
                std::to_string(start + qkv.size(1)) + " positions of an even head dimension " +
                std::to_string(head_dim) + " in float32");
  }
  auto heads = RotaryHeadsFunction::apply(qkv, cos, sin, start, num_heads);
  return {heads[0], heads[1], heads[2]};
}

}  // namespace strait::kernels
