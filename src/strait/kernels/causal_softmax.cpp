// Scaled, causally masked softmax over attention scores, forward and backward, one pass over the
// rows each. Row i of a (T, S) block is the query at position start + i; it sees keys
// 0 .. start + i (`visible` = start + i + 1 of them) and the rest of its row is 0:
//   forward:  p[j] = exp(a[j] - max a) / sum_k exp(a[k] - max a),  a = scale * scores
//   backward: d scores[j] = scale * p[j] * (dp[j] - sum_k p[k] dp[k])
// Masked entries are never exponentiated, so with start = 0 half of the work is skipped, and
// the mask is never materialised.
#include <vector>

#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

struct CausalRows {
  int64_t queries, keys, start;  // T, S, position of the first query
  int64_t visible(int64_t row) const { return start + row % queries + 1; }
};

template <typename T>
STRAIT_VECTORIZED void causal_softmax_forward_rows(const T* scores, T* probabilities, float* exponentials,
                                                   CausalRows rows, float scale, int64_t first, int64_t end) {
  const int64_t S = rows.keys;
  for (int64_t row = first; row < end; ++row) {
    const T* in = scores + row * S;
    T* out = probabilities + row * S;
    const int64_t visible = rows.visible(row);
    float maximum = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : maximum)
    for (int64_t j = 0; j < visible; ++j) {
      const float scaled = scale * load(in[j]);
      maximum = scaled > maximum ? scaled : maximum;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < visible; ++j) {
      exponentials[j] = exp_approx(scale * load(in[j]) - maximum);
      sum += exponentials[j];
    }
    const float inverse_sum = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) out[j] = store<T>(exponentials[j] * inverse_sum);
#pragma omp simd
    for (int64_t j = visible; j < S; ++j) out[j] = store<T>(0.0f);
  }
}

template <typename T>
STRAIT_VECTORIZED void causal_softmax_backward_rows(const T* probabilities, const T* d_probabilities, T* d_scores,
                                                    CausalRows rows, float scale, int64_t first, int64_t end) {
  const int64_t S = rows.keys;
  for (int64_t row = first; row < end; ++row) {
    const T* p = probabilities + row * S;
    const T* dp = d_probabilities + row * S;
    T* out = d_scores + row * S;
    const int64_t visible = rows.visible(row);
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < visible; ++j) dot += load(p[j]) * load(dp[j]);
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) out[j] = store<T>(scale * load(p[j]) * (load(dp[j]) - dot));
#pragma omp simd
    for (int64_t j = visible; j < S; ++j) out[j] = store<T>(0.0f);
  }
}

class CausalSoftmaxFunction : public torch::autograd::Function<CausalSoftmaxFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& input, double scale,
                               int64_t start) {
    auto scores = input.contiguous();
    const CausalRows rows{scores.size(1), scores.size(2), start};
    auto probabilities = torch::empty_like(scores);
    dispatch_float_or_bf16(scores.scalar_type(), "causal_softmax", [&](auto tag) {
      using T = decltype(tag);
      for_each_row_range(scores.numel() / rows.keys, rows.keys, [&](int64_t first, int64_t end) {
        std::vector<float> exponentials(rows.keys);
        causal_softmax_forward_rows(scores.data_ptr<T>(), probabilities.data_ptr<T>(), exponentials.data(), rows,
                                    static_cast<float>(scale), first, end);
      });
    });
    context->save_for_backward({probabilities});
    context->saved_data["scale"] = scale;
    context->saved_data["start"] = start;
    return probabilities;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grads) {
    const auto probabilities = context->get_saved_variables()[0];
    const double scale = context->saved_data["scale"].toDouble();
    const CausalRows rows{probabilities.size(1), probabilities.size(2), context->saved_data["start"].toInt()};
    auto d_probabilities = grads[0].to(probabilities.scalar_type()).contiguous();
    auto d_scores = torch::empty_like(probabilities);
    dispatch_float_or_bf16(probabilities.scalar_type(), "causal_softmax backward", [&](auto tag) {
      using T = decltype(tag);
      for_each_row_range(probabilities.numel() / rows.keys, rows.keys, [&](int64_t first, int64_t end) {
        causal_softmax_backward_rows(probabilities.data_ptr<T>(), d_probabilities.data_ptr<T>(), d_scores.data_ptr<T>(),
                                     rows, static_cast<float>(scale), first, end);
      });
    });
    return {d_scores, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor causal_softmax(const torch::Tensor& scores, double scale, int64_t start) {
  if (scores.dim() != 3 || start < 0 || scores.size(2) != start + scores.size(1)) {
    throw Error("causal_softmax: expected scores (N, T, start + T) with start = " + std::to_string(start) +
                ", got " + c10::str(scores.sizes()));
  }
  return CausalSoftmaxFunction::apply(scores, scale, start);
}

}  // namespace strait::kernels
