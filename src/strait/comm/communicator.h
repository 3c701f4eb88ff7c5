// strait's communicator: rendezvous, the job's process groups and the traffic ledger.
// Strategies talk to this interface only, never to c10d.
//
// Intended usage:
//   CommOptions options{Topology::of_rank(rank, world_size, local_world_size)};
//   options.master_port = 29500;
//   auto comm = Communicator::create(options);      // blocks until every rank has arrived
//   comm->check_consistency(config_hash);           // every rank runs the same configuration
//   comm->world().all_reduce_sum(gradients).wait();
//   Work work = comm->hierarchical_all_reduce_sum(gradients);   // fewer bytes across nodes
//   ...
//   work.wait();
//
// Groups: world() (every rank); intra_node() (the ranks of this rank's node); cross_node() (the
// ranks with this rank's local rank, one per node, ordered by node); groups made on demand
// (make_group). Each is its own ProcessGroupGloo on its own store prefix, with its own lane
// (group.h): collectives on different groups never wait on each other's order, so two threads
// that communicate at once use two groups. create() builds, on every rank in this order, one
// group private to wait_for_every_rank, world, intra-node, cross-node and three groups private
// to hierarchical_all_reduce_sum (the same
// intra-node and cross-node members); a rank builds only the groups it belongs to, so no rank
// waits on a group that another builds later.
//
// Threads: issue each group's collectives, and the hierarchical all-reduces, from one thread in
// program order (group.h); different groups, and the hierarchical all-reduce, may be used from
// different threads at once. check_consistency and make_group rendezvous through the store in
// an order every rank must share: call them from one thread.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "strait/comm/group.h"
#include "strait/comm/ledger.h"
#include "strait/comm/topology.h"

namespace strait::comm {

struct CommOptions {
  Topology topology;
  // The rendezvous store is served by rank 0 on master_port; the others connect to it.
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // The network interface Gloo uses (e.g. "eth0"). When empty Gloo binds to master_addr's
  // address, which suits jobs on one machine (loopback); jobs across machines must name one.
  std::string interface;
  // torchrun's agent already serves a store on master_port (it sets TORCHELASTIC_USE_AGENT_STORE);
  // rank 0 then joins it as a client, like every other rank.
  bool launcher_serves_store = false;
  // Bounds rendezvous, group connection and every collective.
  std::chrono::milliseconds timeout{60000};
  // Bounds wait_for_every_rank: how long ranks wait for the slowest of them (e.g. for a
  // checkpoint writer), meant to be far longer than `timeout`.
  std::chrono::milliseconds wait_timeout{3600000};
};

class Communicator {
 public:
  // Serves (rank 0) or joins the rendezvous store, checks that every rank agrees on world_size
  // and local_world_size, connects the groups and returns once every rank has all of them.
  // Throws strait::Error naming the address and port when rank 0 cannot serve the store (the
  // port is taken) or another rank cannot reach it within the timeout; naming the ranks and
  // values when ranks disagree; naming the ranks that did not arrive within the timeout.
  static std::unique_ptr<Communicator> create(const CommOptions& options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  Group& world();
  Group& intra_node();
  Group& cross_node();
  Ledger& ledger();
  const Topology& topology() const;

  // Builds a group of `global_ranks` (group rank i = the i-th smallest), named `name` in
  // messages, and returns once every member has called it; the communicator owns it, and the
  // reference stays valid as long as the communicator. Only members call it, and every member
  // makes the groups of one rank set in the same order: the n-th call for a rank set on one
  // rank joins the n-th on the others, so two calls give two distinct groups. Throws
  // strait::Error, before any rendezvous, if a rank is out of range or repeated or this rank is
  // not a member; as create() does if the members do not all arrive within the timeout.
  Group& make_group(std::vector<int> global_ranks, std::string name);

  // Every rank must call it. Compares world_size, local_world_size and `config_hash` across
  // ranks; on any difference throws strait::Error on every rank, naming the ranks that differ
  // and both values (e.g. "check_consistency: ranks disagree: rank 1 has config_hash=ab12 where
  // rank 0 has config_hash=cd34").
  void check_consistency(const std::string& config_hash);

  // Every rank must call it with the same `what`, from one thread. Returns once every rank has.
  // A barrier on a group of every rank that nothing else uses, connected with
  // CommOptions::wait_timeout instead of `timeout`: a live but slow rank (writing a checkpoint)
  // is waited for that long, while a dead one fails the wait at once (its connections close),
  // which a wait through the store could not see. Throws strait::Error naming `what` and the
  // barrier's failure.
  void wait_for_every_rank(const std::string& what);

  // Sums `tensor` (in place) over all ranks in three phases run as one Work; returns at once,
  // like a collective (the tensor must stay alive and untouched until wait() returns):
  //   1. reduce_scatter_sum inside the node (the tensor zero-padded to P = ceil(M / k) * k
  //      elements, k = local_world_size): this rank gets the node's sum of its slice of P / k;
  //   2. all_reduce_sum of that slice over cross_node()'s ranks;
  //   3. all_gather of the slices inside the node.
  // With one node, or one rank per node, it is a plain all_reduce_sum over every rank (world()'s
  // algorithm and result), booked in the ledger as "hierarchical_allreduce".
  // The phases run on three groups that nothing else uses (one per phase, so successive calls
  // pipeline: one call's cross-node phase overlaps the next one's reduce-scatter and the
  // previous one's all-gather), so hierarchical all-reduces issued from one thread never
  // interleave with collectives that other threads issue on world(), intra_node() or
  // cross_node(); issue the hierarchical all-reduces themselves from one thread, in program
  // order, like any group's collectives.
  // Bytes, with N nodes, e bytes per element (4 for bfloat16, reduced in float32) and slice
  // S = e * P / k bytes, each way, for one rank:
  //   intra-node: (k - 1) * S in phase 1 + (k - 1) * S in phase 3
  //   cross-node: phase 2's ring all-reduce of S bytes over N ranks: 2S - chunk(j) - chunk(j-1)
  //               sent, j = node_rank (gloo_algorithms.h), = 2 (N - 1) / N * S when even;
  // so k * 2 (N - 1) / N * S = 2 (N - 1) / N * e * P bytes leave each node, spread over its k
  // ranks. A flat ring over the world instead sends 2 (W - 1) / W * e * M bytes out of each
  // node (W = N * k), all through the one rank whose ring successor is on another node.
  // The ledger books the phases as "hierarchical_allreduce/reduce_scatter", ".../allreduce"
  // and ".../allgather".
  // Tolerance against world().all_reduce_sum: the summation order differs, so each element may
  // differ by up to (W - 1) * eps * (sum over ranks of |x|), eps being that of the dtype summed
  // in (float32 for bfloat16, plus one final rounding to bfloat16 on either path); results are
  // identical when every partial sum is exact (e.g. integer values below 2^24 in float32).
  // Throws strait::Error as the collectives do: a bad tensor at once, a failure from wait().
  Work hierarchical_all_reduce_sum(const torch::Tensor& tensor);

 private:
  struct State;
  explicit Communicator(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace strait::comm
