// Every fused kernel against the composite ATen expression it replaces, evaluated in float64
// with autograd: outputs and gradients, fp32 (tight) and bf16 (one rounding of the output),
// plus the building blocks (bf16 rounding, exp) against c10 and libm.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "strait/core/error.h"
#include "strait/kernels/fused_ops.h"
#include "strait/kernels/row_kernels.h"

namespace strait::kernels {
namespace {

torch::Tensor random(std::vector<int64_t> shape, uint64_t seed, double scale = 1.0) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, generator, torch::kFloat64) * scale;
}

// Relative error of `actual` against a float64 reference, measured against the reference's scale.
double relative_error(const torch::Tensor& actual, const torch::Tensor& reference) {
  auto difference = (actual.to(torch::kFloat64) - reference).abs().max().item<double>();
  return difference / std::max(reference.abs().max().item<double>(), 1e-30);
}

// fp32 results: a few float ulps of accumulated rounding; bf16: outputs rounded to 8 bits of
// mantissa (2^-8 relative), gradients computed from bf16 inputs.
double tolerance(torch::ScalarType dtype) { return dtype == torch::kFloat32 ? 2e-6 : 1.6e-2; }

class FusedOps : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(FusedOps, RmsNormMatchesTheComposite) {
  const auto dtype = GetParam();
  auto x64 = random({3, 37, 96}, 1, 3.0).requires_grad_(true);
  auto w64 = (1.0 + random({96}, 2, 0.1)).requires_grad_(true);
  auto upstream = random({3, 37, 96}, 3).to(dtype);
  const double eps = 1e-5;
  auto reference = w64 * (x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + eps));
  reference.backward(upstream.to(torch::kFloat64));

  auto x = x64.detach().to(torch::kFloat32).requires_grad_(true);
  auto w = w64.detach().to(torch::kFloat32).requires_grad_(true);
  auto y = rms_norm(x, w, eps, dtype);
  ASSERT_EQ(y.scalar_type(), dtype);
  y.backward(upstream);
  EXPECT_LT(relative_error(y, reference.detach()), tolerance(dtype));
  EXPECT_LT(relative_error(x.grad(), x64.grad()), tolerance(dtype));
  EXPECT_LT(relative_error(w.grad(), w64.grad()), tolerance(dtype));
  EXPECT_EQ(x.grad().scalar_type(), torch::kFloat32);
}

TEST_P(FusedOps, SwigluMatchesTheComposite) {
  const auto dtype = GetParam();
  auto gate_up64 = random({5, 11, 2 * 77}, 4, 4.0).to(dtype).to(torch::kFloat64).requires_grad_(true);
  auto upstream = random({5, 11, 77}, 5).to(dtype);
  auto halves = gate_up64.chunk(2, -1);
  auto reference = torch::silu(halves[0]) * halves[1];
  reference.backward(upstream.to(torch::kFloat64));

  auto gate_up = gate_up64.detach().to(dtype).requires_grad_(true);
  auto hidden = swiglu(gate_up);
  ASSERT_EQ(hidden.sizes(), reference.sizes());
  hidden.backward(upstream);
  EXPECT_LT(relative_error(hidden, reference.detach()), tolerance(dtype));
  EXPECT_LT(relative_error(gate_up.grad(), gate_up64.grad()), tolerance(dtype));
}

torch::Tensor rotate_half_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  return x * cos + torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1) * sin;
}

TEST_P(FusedOps, RotaryHeadsMatchTheComposite) {
  const auto dtype = GetParam();
  const int64_t B = 2, T = 9, H = 3, D = 16, C = H * D, start = 5;
  // Tables as the model builds them (frequency i on dimensions i and i + D/2), 20 positions.
  auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, D, 2, torch::kFloat64) / D);
  auto freqs = torch::outer(torch::arange(20, torch::kFloat64), inv_freq);
  auto angles = torch::cat({freqs, freqs}, -1);
  auto cos = angles.cos().to(torch::kFloat32), sin = angles.sin().to(torch::kFloat32);

  auto qkv64 = random({B, T, 3 * C}, 6).to(dtype).to(torch::kFloat64).requires_grad_(true);
  auto heads = [&](const torch::Tensor& part) { return part.view({B, T, H, D}).transpose(1, 2); };
  auto parts = qkv64.chunk(3, -1);
  auto cos_rows = cos.narrow(0, start, T).to(torch::kFloat64), sin_rows = sin.narrow(0, start, T).to(torch::kFloat64);
  std::vector<torch::Tensor> reference = {rotate_half_reference(heads(parts[0]), cos_rows, sin_rows),
                                          rotate_half_reference(heads(parts[1]), cos_rows, sin_rows), heads(parts[2])};
  std::vector<torch::Tensor> upstream;
  for (int i = 0; i < 3; ++i) upstream.push_back(random({B, H, T, D}, 7 + i).to(dtype));
  torch::autograd::backward(reference, {upstream[0].to(torch::kFloat64), upstream[1].to(torch::kFloat64),
                                        upstream[2].to(torch::kFloat64)});

  auto qkv = qkv64.detach().to(dtype).requires_grad_(true);
  auto fused = rotary_heads(qkv, cos, sin, start, H);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(fused[i].is_contiguous());
    EXPECT_LT(relative_error(fused[i], reference[i].detach()), tolerance(dtype)) << "output " << i;
  }
  EXPECT_TRUE(torch::equal(fused[2], qkv.detach().chunk(3, -1)[2].view({B, T, H, D}).transpose(1, 2)));
  torch::autograd::backward({fused[0], fused[1], fused[2]}, upstream);
  EXPECT_LT(relative_error(qkv.grad(), qkv64.grad()), tolerance(dtype));
}

TEST_P(FusedOps, CausalSoftmaxMatchesTheMaskedComposite) {
  const auto dtype = GetParam();
  for (int64_t start : {0, 6}) {
    const int64_t N = 4, T = 13, S = start + T;
    const double scale = 0.3;
    auto scores64 = random({N, T, S}, 10 + start, 5.0).to(dtype).to(torch::kFloat64).requires_grad_(true);
    auto future = torch::full({T, S}, -std::numeric_limits<double>::infinity(), torch::kFloat64).triu(start + 1);
    auto reference = torch::softmax(scores64 * scale + future, -1);
    auto upstream = random({N, T, S}, 20 + start).to(dtype);
    reference.backward(upstream.to(torch::kFloat64));

    auto scores = scores64.detach().to(dtype).requires_grad_(true);
    auto probabilities = causal_softmax(scores, scale, start);
    probabilities.backward(upstream);
    EXPECT_LT(relative_error(probabilities, reference.detach()), tolerance(dtype)) << "start " << start;
    EXPECT_LT(relative_error(scores.grad(), scores64.grad()), tolerance(dtype)) << "start " << start;
    // Masked entries are exactly zero, forward and backward.
    auto masked = torch::ones({T, S}, torch::kBool).triu(start + 1).expand({N, T, S});
    EXPECT_EQ(probabilities.masked_select(masked).abs().max().item<double>(), 0.0);
    EXPECT_EQ(scores.grad().masked_select(masked).abs().max().item<double>(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedOps, ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(FusedOps, RmsNormWeightGradientAgreesAcrossThreadCounts) {
  // The dw reduction of RMSNorm is the only cross-row sum: 1 and 2 threads agree to rounding.
  auto x = random({64, 128}, 30).to(torch::kFloat32);
  auto w = torch::ones({128}, torch::kFloat32);
  auto upstream = random({64, 128}, 31).to(torch::kFloat32);
  std::vector<torch::Tensor> weight_grads;
  const int threads = at::get_num_threads();
  for (int count : {1, 2}) {
    at::set_num_threads(count);
    auto xi = x.clone().requires_grad_(true), wi = w.clone().requires_grad_(true);
    rms_norm(xi, wi, 1e-5, torch::kFloat32).backward(upstream);
    weight_grads.push_back(wi.grad());
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::allclose(weight_grads[0], weight_grads[1], 1e-5, 1e-6));
}

TEST(FusedOps, Bf16StoreRoundsExactlyLikeC10) {
  // Ties, values near the largest bf16, infinities, NaN, denormals and random values.
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 3.3895314e38f, 3.4e38f,
                               std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               1e-40f, -1e-40f};
  auto generator = at::make_generator<at::CPUGeneratorImpl>(40);
  auto samples = torch::randn({10000}, generator) * 1000;
  for (int64_t i = 0; i < samples.numel(); ++i) values.push_back(samples[i].item<float>());
  for (float value : values) {
    EXPECT_EQ(store<c10::BFloat16>(value).x, c10::BFloat16(value).x) << value;
    EXPECT_EQ(load(store<c10::BFloat16>(value)), static_cast<float>(c10::BFloat16(value))) << value;
  }
  EXPECT_TRUE(std::isnan(load(store<c10::BFloat16>(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(FusedOps, ExpApproximationIsWithinTwoUlps) {
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double exact = std::exp(static_cast<double>(x));
    EXPECT_LE(std::abs(exp_approx(x) - exact) / exact, 2.4e-7) << x;
  }
  EXPECT_EQ(exp_approx(0.0f), 1.0f);
  EXPECT_GT(exp_approx(-1000.0f), 0.0f);  // clamped, no underflow to garbage
  EXPECT_TRUE(std::isfinite(exp_approx(1000.0f)));
}

TEST(FusedOps, AdamWUpdateMatchesTheOperatorByOperatorFormula) {
  // Five steps of torch.optim.AdamW's arithmetic written with ATen operators in float64.
  auto param = random({300, 7}, 50).to(torch::kFloat32);
  auto m = torch::zeros_like(param), v = torch::zeros_like(param);
  auto param64 = param.to(torch::kFloat64), m64 = m.to(torch::kFloat64), v64 = v.to(torch::kFloat64);
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  for (int t = 1; t <= 5; ++t) {
    auto grad = random({300, 7}, 60 + t).to(torch::kFloat32);
    const double correction1 = 1 - std::pow(beta1, t), correction2 = 1 - std::pow(beta2, t);
    AdamWCoefficients coefficients{static_cast<float>(lr),
                                   static_cast<float>(beta1),
                                   static_cast<float>(beta2),
                                   static_cast<float>(eps),
                                   static_cast<float>(weight_decay),
                                   static_cast<float>(lr / correction1),
                                   static_cast<float>(std::sqrt(correction2))};
    adamw_update(param, grad, m, v, coefficients);
    auto g64 = grad.to(torch::kFloat64);
    param64.mul_(1 - lr * weight_decay);
    m64.mul_(beta1).add_(g64, 1 - beta1);
    v64.mul_(beta2).addcmul_(g64, g64, 1 - beta2);
    param64.addcdiv_(m64, (v64.sqrt() / std::sqrt(correction2)).add_(eps), -lr / correction1);
  }
  EXPECT_LT(relative_error(param, param64), 1e-6);
  EXPECT_LT(relative_error(m, m64), 1e-6);
  EXPECT_LT(relative_error(v, v64), 1e-6);
  auto transposed = torch::zeros({7, 300}).t();
  EXPECT_THROW(adamw_update(transposed, torch::zeros({300, 7}), m, v, {}), Error);
}

TEST(FusedOps, RejectShapesTheyCannotHandle) {
  auto x = torch::zeros({2, 8});
  EXPECT_THROW(rms_norm(x, torch::ones({7}), 1e-5, torch::kFloat32), Error);
  EXPECT_THROW(rms_norm(x.to(torch::kBFloat16), torch::ones({8}), 1e-5, torch::kFloat32), Error);
  EXPECT_THROW(swiglu(torch::zeros({2, 7})), Error);
  EXPECT_THROW(swiglu(torch::zeros({2, 8}, torch::kFloat64)), Error);
  auto tables = torch::zeros({4, 2});
  EXPECT_THROW(rotary_heads(torch::zeros({1, 3, 12}), tables, tables, 2, 2), Error);  // 5 positions > 4
  EXPECT_THROW(rotary_heads(torch::zeros({1, 3, 10}), tables, tables, 0, 2), Error);  // 10 != 3 * H * D
  EXPECT_THROW(causal_softmax(torch::zeros({1, 3, 4}), 1.0, 0), Error);               // S != start + T
}

}  // namespace
}  // namespace strait::kernels
