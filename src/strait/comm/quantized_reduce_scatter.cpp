#include "strait/comm/quantized_reduce_scatter.h"

#include <torch/torch.h>

#include "strait/comm/tensor_checks.h"
#include "strait/comm/topology.h"
#include "strait/core/error.h"

namespace strait::comm {

namespace {

const std::string kQgzContext = "qgz reduce-scatter";

std::string describe_group(const Group& group) {
  return group.name() + " (global ranks " + join_ranks(group.members()) + ")";
}

}  // namespace

QuantizedReduceScatter::QuantizedReduceScatter(Group& intra_node, Group& cross_node, size_t block_size)
    : intra_node_(intra_node), cross_node_(cross_node), codec_(codec::WireDtype::Int4, block_size) {
  // run() finds chunk b * k + j by arithmetic and sums what it receives in group rank order,
  // which is local-rank order and node order only with this layout: check it rather than
  // silently reduce the wrong chunks.
  const int k = intra_node.size(), node = cross_node.rank(), local = intra_node.rank();
  const int first = cross_node.members()[0] - local;  // of the ranks reduced over
  bool laid_out = true;
  for (int j = 0; j < k; ++j) laid_out = laid_out && intra_node.members()[j] == first + node * k + j;
  for (int b = 0; b < cross_node.size(); ++b) laid_out = laid_out && cross_node.members()[b] == first + b * k + local;
  require(laid_out, kQgzContext,
          "groups " + describe_group(intra_node) + " and " + describe_group(cross_node) +
              " are not this rank's node and its local index on every node (expected global rank = " +
              std::to_string(first) + " + node * " + std::to_string(k) + " + local)");
}

void QuantizedReduceScatter::run(const torch::Tensor& input, torch::Tensor& output) {
  require_wire_tensor(kQgzContext, "output", output);
  require(output.scalar_type() == torch::kFloat, kQgzContext,
          std::string("output has dtype ") + c10::toString(output.scalar_type()) + " (expected Float)");
  const int64_t k = intra_node_.size(), nodes = cross_node_.size(), chunk = output.numel();
  require_like(kQgzContext, "input", input, output, nodes * k * chunk);
  // chunks[b][j] is input's chunk b * k + j.
  const torch::Tensor chunks = input.view({nodes, k, chunk});
  // partials[b]: this node's sum of chunk b * k + local.
  torch::Tensor partials = torch::empty({nodes, chunk}, torch::kFloat);
  exchange(intra_node_, chunks.transpose(0, 1), partials, kIntraLabel);
  exchange(cross_node_, partials.view({nodes, 1, chunk}), output.view({1, chunk}), kCrossLabel);
}

void QuantizedReduceScatter::exchange(Group& group, const torch::Tensor& rows, torch::Tensor result,
                                      const char* label) const {
  if (group.size() == 1) {
    result.copy_(rows[0]);
    return;
  }
  const int64_t members = rows.size(0), count = rows.size(1), values = rows.size(2);
  const int64_t row_bytes = static_cast<int64_t>(codec_.encoded_size(values));
  // Every member sends every other the same number of bytes, as all_to_all requires: `count`
  // rows of `values` values each.
  torch::Tensor sent = torch::empty({members, count, row_bytes}, torch::kUInt8);
  torch::Tensor received = torch::empty_like(sent);
  for (int64_t p = 0; p < members; ++p) {
    for (int64_t r = 0; r < count; ++r) codec_.encode(rows[p][r].data_ptr<float>(), values, sent[p][r].data_ptr<uint8_t>());
  }
  group.all_to_all(sent, received, label).wait();
  // Summed one member at a time, in group rank order, so every run adds the same values in the
  // same order: the result is deterministic.
  torch::Tensor decoded = torch::empty({count, values}, torch::kFloat);
  result.zero_();
  for (int64_t p = 0; p < members; ++p) {
    for (int64_t r = 0; r < count; ++r) {
      try {
        codec_.decode(received[p][r].data_ptr<uint8_t>(), row_bytes, decoded[r].data_ptr<float>(), values);
      } catch (const Error& failure) {
        throw Error(kQgzContext + ": " + label + " on group " + group.name() + ": the bytes global rank " +
                    std::to_string(group.members()[p]) + " sent do not decode: " + failure.what());
      }
    }
    result.add_(decoded);
  }
}

QuantizedReduceScatter::Bytes QuantizedReduceScatter::bytes_sent(int64_t chunk_elements) const {
  require(chunk_elements > 0, kQgzContext,
          "chunk_elements is " + std::to_string(chunk_elements) + " (expected a positive count)");
  const uint64_t k = intra_node_.size(), nodes = cross_node_.size();
  const uint64_t encoded = codec_.encoded_size(static_cast<size_t>(chunk_elements));
  // A one-member group's phase is skipped: k - 1 or nodes - 1 is then 0.
  return {(k - 1) * nodes * encoded, (nodes - 1) * encoded};
}

}  // namespace strait::comm
