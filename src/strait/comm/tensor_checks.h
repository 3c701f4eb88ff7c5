// Argument checks shared by the collectives. Each throws strait::Error("<context>: <problem>"),
// and runs before anything reaches the wire, so a bad argument cannot desynchronise ranks.
#pragma once

#include <torch/types.h>

#include <string>

namespace strait::comm {

void require(bool ok, const std::string& context, const std::string& problem);

// Defined, on the CPU, contiguous and non-empty. `role` names the argument, e.g. "input".
void require_wire_tensor(const std::string& context, const std::string& role, const torch::Tensor& tensor);

// A wire tensor whose dtype the collectives can sum.
void require_summable(const std::string& context, const std::string& role, const torch::Tensor& tensor);

// Same dtype and `count` elements as `reference`.
void require_like(const std::string& context, const std::string& role, const torch::Tensor& tensor,
                  const torch::Tensor& reference, int64_t count);

// The dtype a sum of `dtype` values accumulates in: float32 for half and bfloat16.
torch::ScalarType accumulation_dtype(torch::ScalarType dtype);

}  // namespace strait::comm
