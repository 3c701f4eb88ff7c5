// The worker's scenarios for ZeRO++'s quantized reduce-scatter (comm/quantized_reduce_scatter.h):
// "qgz" runs it on exactly quantizable and on random inputs and reports each rank's input,
// output, bytes_sent() and ledger, then (one node, or one rank per node) has rank 0 send bytes
// that do not decode.
#include <torch/torch.h>

#include "strait/comm/quantized_reduce_scatter.h"
#include "strait/core/error.h"
#include "worker.h"

namespace strait::comm_worker {

namespace {

using comm::Communicator;
using comm::QuantizedReduceScatter;

// Values that survive both int4 quantizations exactly, for a node of k ranks: element e of
// chunk c from local rank l of node b is (base + d) * (c + 1), with base in [-4, 4] and d in
// [-3, 3] except at the first element of every block (each chunk is quantized on its own, so
// blocks start at e % block == 0), where base = 7 and d = 0: every block holds its largest
// magnitude 7 (c + 1) and multiples of a seventh of it. Local ranks 0 and 1 add opposite d, so
// a node's partial sum is k * base * (c + 1) (with k = 1: (base + d) * (c + 1)), again multiples
// of a seventh of the block's largest magnitude 7 k (c + 1), which it holds.
torch::Tensor qgz_exact_input(const comm::Topology& topology, int64_t chunk, int64_t block) {
  torch::Tensor input = torch::empty({topology.world_size, chunk}, torch::kFloat);
  auto at = input.accessor<float, 2>();
  const int b = topology.node_rank, l = topology.local_rank;
  for (int64_t c = 0; c < topology.world_size; ++c) {
    for (int64_t e = 0; e < chunk; ++e) {
      const bool block_start = e % block == 0;
      const int64_t base = block_start ? 7 : (5 * c + 3 * e + 2 * b) % 9 - 4;
      const int64_t offset = block_start ? 0 : (e + c + b) % 7 - 3;
      const int64_t d = l == 0 ? offset : l == 1 ? -offset : 0;
      at[c][e] = static_cast<float>((base + d) * (c + 1));
    }
  }
  return input.view({-1});
}

json qgz_case(Communicator& comm, const std::string& mode, int64_t block, int64_t chunk) {
  QuantizedReduceScatter qgz(comm.intra_node(), comm.cross_node(), static_cast<size_t>(block));
  const int world = comm.topology().world_size;
  torch::manual_seed(1000 + comm.topology().rank);
  const torch::Tensor input =
      mode == "exact" ? qgz_exact_input(comm.topology(), chunk, block) : torch::randn({world * chunk}, torch::kFloat);
  torch::Tensor output = torch::full({chunk}, -1.0f);
  const auto before = comm.ledger().snapshot();
  qgz.run(input, output);
  const auto booked = comm.ledger().snapshot() - before;
  const auto bytes = qgz.bytes_sent(chunk);
  return {{"mode", mode},
          {"block", block},
          {"elements", chunk},
          {"input", values(input)},
          {"output", values(output)},
          {"bytes_sent", {{"intra_node", bytes.intra_node}, {"cross_node", bytes.cross_node}}},
          {"ledger", booked.to_json()}};
}

// What an fp32 reduce-scatter over the world books, for the same chunk size.
json flat_reduce_scatter_ledger(Communicator& comm, int64_t chunk) {
  const auto before = comm.ledger().snapshot();
  comm.world().reduce_scatter_sum(torch::ones({comm.world().size() * chunk}), torch::empty({chunk})).wait();
  return (comm.ledger().snapshot() - before).to_json();
}

// Rank `liar` takes part in the one phase that runs with bytes of 0xFF, whose scales read as
// NaN; the others call run() as usual and report what it threw.
json qgz_garbage_round(Communicator& comm, int liar) {
  QuantizedReduceScatter qgz(comm.intra_node(), comm.cross_node());
  constexpr int64_t chunk = 100;
  if (comm.topology().rank != liar) {
    torch::Tensor output = torch::empty({chunk});
    return {{"error", rejection([&] { qgz.run(torch::randn({comm.topology().world_size * chunk}), output); })}};
  }
  const bool intra = comm.intra_node().size() > 1;
  comm::Group& group = intra ? comm.intra_node() : comm.cross_node();
  const auto bytes = qgz.bytes_sent(chunk);
  const int64_t per_peer = (intra ? bytes.intra_node : bytes.cross_node) / (group.size() - 1);
  const torch::Tensor garbage = torch::full({group.size() * per_peer}, 0xFF, torch::kUInt8);
  const torch::Tensor received = torch::empty_like(garbage);
  group.all_to_all(garbage, received, intra ? QuantizedReduceScatter::kIntraLabel : QuantizedReduceScatter::kCrossLabel)
      .wait();
  return {{"lied_on", group.name()}};
}

json qgz_cases(Communicator& comm, const Options&) {
  QuantizedReduceScatter qgz(comm.intra_node(), comm.cross_node());
  const int world = comm.topology().world_size;
  torch::Tensor output = torch::empty({4});
  json result;
  // Rejected before anything is sent: the cases below then prove the groups still in step.
  result["rejected"] = {
      {"input_size", rejection([&] { qgz.run(torch::zeros({world * 4 + 1}), output); })},
      {"input_dtype", rejection([&] { qgz.run(torch::zeros({world * 4}, torch::kDouble), output); })},
      {"swapped_groups", rejection([&] { QuantizedReduceScatter{comm.cross_node(), comm.intra_node()}; })}};
  // Blocks of 8 cut chunks of 20 into 8 + 8 + 4; chunks of 1 and 5 are shorter than a block.
  result["cases"] = {qgz_case(comm, "exact", 8, 1), qgz_case(comm, "exact", 8, 20),
                     qgz_case(comm, "random", 256, 1001), qgz_case(comm, "random", 256, 5)};
  result["flat_reduce_scatter_1001"] = flat_reduce_scatter_ledger(comm, 1001);
  // Last, with one phase only: a peer's bad bytes then fail every other rank in the same
  // all-to-all. With two phases, the ranks of other nodes would go on to phase 2 and wait for
  // the failed ones until the timeout.
  if (comm.intra_node().size() == 1 || comm.cross_node().size() == 1) result["garbage"] = qgz_garbage_round(comm, 0);
  return result;
}

}  // namespace

const std::map<std::string, Scenario>& qgz_scenarios() {
  static const std::map<std::string, Scenario> table = {{"qgz", qgz_cases}};
  return table;
}

}  // namespace strait::comm_worker
