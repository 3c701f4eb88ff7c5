// How close training runs to the machine: a short measured matmul rate at start-up, the model's
// FLOPs per token, and model FLOPs utilisation (MFU) = achieved model FLOP/s / measured rate.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "strait/model/model_config.h"

namespace strait {

// True when the CPU has native bf16 dot products (avx512_bf16 or amx_bf16 in /proc/cpuinfo),
// where bf16 matrix products run several times faster than fp32.
bool cpu_has_fast_bf16();

// "fp32" or "bf16-mixed" for a configured "auto", "fp32" or "bf16-mixed" (Error otherwise).
std::string resolve_precision(const std::string& configured);

struct MatmulRates {
  double fp32_gflops = 0.0;
  double bf16_gflops = 0.0;
  double for_precision(const std::string& precision) const {
    return precision == "bf16-mixed" ? bf16_gflops : fp32_gflops;
  }
  nlohmann::json to_json() const { return {{"fp32", fp32_gflops}, {"bf16", bf16_gflops}}; }
};

// The best rate of square matrix products (n = 1024) with the current thread setting, over
// ~0.2 s per dtype.
MatmulRates measure_matmul_rates();

// Training FLOPs per token (forward + backward = 3 x forward):
//   6 * (parameters used in matrix products: every layer's projections and the LM head)
// + 12 * num_layers * seq_len * hidden_size   (q k^T and attention x v, counted in full, as in PaLM)
// The embedding lookup is not a matrix product and is not counted.
double training_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace strait
