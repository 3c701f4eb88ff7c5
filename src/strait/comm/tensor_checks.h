// Argument checks shared by the collectives. Each throws strait::Error("<context>: <problem>"),
// and runs before anything reaches the wire, so a bad argument cannot desynchronise ranks;
// require_peer_byte_counts checks what peers announced, on every rank alike.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace strait::comm {

void require(bool ok, const std::string& context, const std::string& problem);

// Defined, on the CPU, contiguous and non-empty. `role` names the argument, e.g. "input".
void require_wire_tensor(const std::string& context, const std::string& role, const torch::Tensor& tensor);

// A wire tensor whose dtype the collectives can sum.
void require_summable(const std::string& context, const std::string& role, const torch::Tensor& tensor);

// Same dtype and `count` elements as `reference`.
void require_like(const std::string& context, const std::string& role, const torch::Tensor& tensor,
                  const torch::Tensor& reference, int64_t count);

// counts[i]: the byte count group rank i (global rank members[i]) announced. Each must lie in
// [0, max_bytes]; the first that does not is named with its ranks and value.
void require_peer_byte_counts(const std::string& context, const std::vector<int64_t>& counts,
                              const std::vector<int>& members, int64_t max_bytes);

// The dtype a sum of `dtype` values accumulates in: float32 for half and bfloat16.
torch::ScalarType accumulation_dtype(torch::ScalarType dtype);

}  // namespace strait::comm
