#include "strait/comm/tensor_checks.h"

#include <algorithm>
#include <array>
#include <sstream>

#include "strait/core/error.h"

namespace strait::comm {

namespace {

// What Gloo sums natively, plus bfloat16, which all_reduce_sum routes through float32.
constexpr std::array<torch::ScalarType, 8> kSummable = {torch::kFloat, torch::kDouble, torch::kHalf,  torch::kBFloat16,
                                                        torch::kInt8,  torch::kUInt8,  torch::kInt32, torch::kInt64};

std::string summable_names() {
  std::ostringstream names;
  for (size_t i = 0; i < kSummable.size(); ++i) names << (i ? ", " : "") << c10::toString(kSummable[i]);
  return names.str();
}

}  // namespace

void require(bool ok, const std::string& context, const std::string& problem) {
  if (!ok) throw Error(context + ": " + problem);
}

void require_wire_tensor(const std::string& context, const std::string& role, const torch::Tensor& tensor) {
  require(tensor.defined(), context, role + " is an undefined tensor");
  require(tensor.device().is_cpu(), context, role + " is on " + tensor.device().str() + " (expected cpu)");
  require(tensor.is_contiguous(), context, role + " is not contiguous (call .contiguous() first)");
  require(tensor.numel() > 0, context, role + " has no elements");
}

void require_summable(const std::string& context, const std::string& role, const torch::Tensor& tensor) {
  require_wire_tensor(context, role, tensor);
  const bool summable = std::find(kSummable.begin(), kSummable.end(), tensor.scalar_type()) != kSummable.end();
  require(summable, context,
          role + " has dtype " + c10::toString(tensor.scalar_type()) + " (expected one of " + summable_names() + ")");
}

void require_like(const std::string& context, const std::string& role, const torch::Tensor& tensor,
                  const torch::Tensor& reference, int64_t count) {
  require_wire_tensor(context, role, tensor);
  require(tensor.scalar_type() == reference.scalar_type(), context,
          role + " has dtype " + c10::toString(tensor.scalar_type()) + " (expected " +
              c10::toString(reference.scalar_type()) + ")");
  require(tensor.numel() == count, context,
          role + " has " + std::to_string(tensor.numel()) + " elements (expected " + std::to_string(count) + ")");
}

void require_peer_byte_counts(const std::string& context, const std::vector<int64_t>& counts,
                              const std::vector<int>& members, int64_t max_bytes) {
  for (size_t i = 0; i < counts.size(); ++i) {
    require(counts[i] >= 0 && counts[i] <= max_bytes, context,
            "global rank " + std::to_string(members[i]) + " (group rank " + std::to_string(i) + ") announced " +
                std::to_string(counts[i]) + " bytes (expected 0 to max_bytes = " + std::to_string(max_bytes) + ")");
  }
}

torch::ScalarType accumulation_dtype(torch::ScalarType dtype) {
  return dtype == torch::kHalf || dtype == torch::kBFloat16 ? torch::kFloat : dtype;
}

}  // namespace strait::comm
