#include "strait/train/efficiency.h"

#include <chrono>
#include <fstream>
#include <limits>
#include <sstream>

#include <torch/torch.h>

#include "strait/core/error.h"

namespace strait {

bool cpu_has_fast_bf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line);
    std::string flag;
    while (flags >> flag) {
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    }
    return false;
  }
  return false;
}

std::string resolve_precision(const std::string& configured) {
  if (configured == "fp32" || configured == "bf16-mixed") return configured;
  if (configured == "auto") return cpu_has_fast_bf16() ? "bf16-mixed" : "fp32";
  throw Error("unknown precision '" + configured + "' (expected auto, fp32 or bf16-mixed)");
}

namespace {

// The best rate of single 1024^2 products over ~0.2 s: a peak to compare against, robust to the
// start-up noise (thread-pool spin-up, another process's burst) that an average would absorb.
double matmul_gflops(torch::ScalarType dtype) {
  using Clock = std::chrono::steady_clock;
  constexpr int64_t n = 1024;
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype), c = torch::empty({n, n}, dtype);
  torch::mm_out(c, a, b);  // warm-up: thread pool, packing buffers
  double best_seconds = std::numeric_limits<double>::infinity();
  const auto deadline = Clock::now() + std::chrono::milliseconds(200);
  for (int repetitions = 0; repetitions < 3 || Clock::now() < deadline; ++repetitions) {
    const auto start = Clock::now();
    torch::mm_out(c, a, b);
    best_seconds = std::min(best_seconds, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return 2.0 * n * n * n / best_seconds / 1e9;
}

}  // namespace

MatmulRates measure_matmul_rates() {
  MatmulRates rates;
  rates.fp32_gflops = matmul_gflops(torch::kFloat32);
  rates.bf16_gflops = matmul_gflops(torch::kBFloat16);
  return rates;
}

double training_flops_per_token(const ModelConfig& config, int64_t seq_len) {
  const double C = static_cast<double>(config.hidden_size), F = static_cast<double>(config.intermediate_size);
  const double L = static_cast<double>(config.num_layers), V = static_cast<double>(config.vocab_size);
  const double matmul_parameters = L * (4 * C * C + 3 * C * F) + V * C;
  return 6.0 * matmul_parameters + 12.0 * L * static_cast<double>(seq_len) * C;
}

}  // namespace strait
