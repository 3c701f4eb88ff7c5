// Building blocks of strait's fused CPU kernels: element loads and stores that compute in fp32
// whatever the storage type (float or bfloat16), a branch-free exp the compiler can vectorize,
// and the parallel loop over rows every kernel uses.
//
// Why hand-written loops: in bf16-mixed training the matrix products run ~2x faster than in
// fp32, so the elementwise work around them (norms, rotary, SwiGLU, softmax) becomes a third of
// the step when it is left to chains of ATen operators, each a separate pass over memory with
// its own bf16 <-> fp32 conversions. One loop per operation reads each input once and rounds
// each output once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>

#include "strait/core/error.h"

// Row loops are compiled for AVX-512, AVX2 and baseline x86-64, picked once at load time by the
// CPU's features (GCC function multi-versioning), so the binary runs on any x86-64 machine.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define STRAIT_VECTORIZED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define STRAIT_VECTORIZED
#endif

namespace strait::kernels {

inline float load(float value) { return value; }
inline float load(c10::BFloat16 value) {
  uint32_t bits = static_cast<uint32_t>(value.x) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

template <typename T>
inline T store(float value);
template <>
inline float store<float>(float value) {
  return value;
}
// Round to nearest even, NaN kept a (quiet) NaN: the same rounding as c10::BFloat16's
// constructor, written without branches so that loops vectorize.
template <>
inline c10::BFloat16 store<c10::BFloat16>(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  c10::BFloat16 result;
  result.x = static_cast<uint16_t>(value != value ? 0x7FC0u : rounded);
  return result;
}

// exp(x) within 2 ulp for x in [-87, 88] (clamped outside: exp(-87.3) is the smallest normal
// float, exp(88.3) ~ 2e38 keeps n <= 127): exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2,
// p a degree-6 Taylor polynomial on |r| <= ln(2)/2. Written with ternaries and nearbyint, which
// GCC vectorizes (std::min/max by reference and floor it does not).
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = __builtin_nearbyintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-06f;  // ln 2 = hi + lo
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t scale_bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  return p * scale;
}

// Calls body(first_row, end_row) on disjoint row ranges in parallel, over ATen's intra-op
// threads (the same ones the matrix products use). The split depends only on the number of
// rows and threads, so results are reproducible for a given thread count.
template <typename Body>
void for_each_row_range(int64_t rows, int64_t row_length, const Body& body) {
  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_length));
  at::parallel_for(0, rows, rows_per_task, body);
}

// Calls body(T{}) with T = float or c10::BFloat16 for the tensor dtype `type`.
template <typename Body>
void dispatch_float_or_bf16(c10::ScalarType type, const char* operation, const Body& body) {
  if (type == c10::kFloat) {
    body(float{});
  } else if (type == c10::kBFloat16) {
    body(c10::BFloat16{});
  } else {
    throw Error(std::string(operation) + ": unsupported dtype " + c10::toString(type) + " (expected float32 or bfloat16)");
  }
}

}  // namespace strait::kernels
