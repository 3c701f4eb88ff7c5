// A process group over a subset of the job's ranks, and the handle of a collective in flight.
//
// Intended usage (a DDP gradient bucket):
//   Work work = comm.world().all_reduce_sum(bucket);   // returns at once
//   ... more backward ...
//   work.wait();                                       // throws strait::Error on failure
//   bucket.div_(comm.world().size());                  // average = sum, then divide
//
// How a collective runs: the call validates its arguments and books its traffic in the ledger
// on the calling thread, queues the collective on the group's lane (lane.h) and returns. The
// lane, a thread of the group's own, starts the group's collectives on Gloo one at a time, in
// the order they were queued, waits for each, finishes it locally (e.g. reduce_scatter_sum's
// sum) and completes its Work.
//
// all_reduce_sum, all_gather and all_to_all (so reduce_scatter_sum too) are strait's own, on
// Gloo's point-to-point send and receive: they move exactly the bytes Gloo's algorithms move,
// between the same ranks (gloo_algorithms.h, which the ledger books), but post each step's
// receives before its sends, so that the two directions of a pair share a slow link instead of
// taking turns (docs/ARCHITECTURE.md). broadcast and barrier are Gloo's.
//
// Contracts shared by every collective:
// - A group's collectives are matched across ranks by their order on that group: every member
//   must issue the same collectives on a group in the same order, with tensors of the same
//   dtype and size; a mismatch hangs until the timeout, fails in Gloo, or (same sizes) silently
//   pairs the wrong buffers. So issue each group's collectives from one thread, in program
//   order; two threads that communicate at once use two groups (Communicator::make_group).
// - Arguments are validated before anything is queued: a bad argument throws strait::Error on
//   the calling rank and leaves the group usable and in step.
// - Tensors must be defined, on the CPU, contiguous and non-empty. They (and all_gather_bytes'
//   output vector) must stay alive and untouched until wait() returns: the lane reads and
//   writes them later, on its own thread.
// - Once a collective fails on the wire (a peer died, the timeout passed), the ranks are out of
//   step on that group: every later collective on it fails at once, naming the first failure.
// - Data-moving collectives (broadcast, all_gather, all_to_all) move raw bytes, so any dtype
//   works. Reductions sum float, double, half, bfloat16, int8, uint8, int32 and int64.
//   This Gloo cannot reduce bfloat16, so all_reduce_sum converts it to float32, reduces and
//   converts back (one rounding; float32 bytes go on the wire and into the ledger).
// - `label` names the operation in the ledger (defaults: "allreduce", "broadcast",
//   "allgather", "alltoall", "reduce_scatter", "barrier").
// - Destroying a group runs what is still queued (each collective is bounded by the timeout,
//   and fails at once after a failure), so it returns even when a peer has died.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strait/comm/ledger.h"

namespace c10d {
class Store;
}
namespace gloo::transport {
class Device;
}

namespace strait::comm {

// A collective in flight. wait() blocks until it completes; on failure (a peer died, the
// timeout passed) it throws strait::Error naming the collective, the group and this rank, then
// Gloo's reason (e.g. "Connection closed by peer [127.0.0.1]:41234" or "Timed out waiting
// 5000ms for recv operation to complete"), then the ranks this rank exchanges data with in the
// collective and the group's members: Gloo reports the lost peer only by socket address, and
// since it connects every pair of members, any member's death can surface in any collective.
// wait() may be called again: it returns, or rethrows the same error. A default-constructed
// Work is completed. Work may be waited on from any thread.
class [[nodiscard]] Work {
 public:
  Work() = default;
  void wait();
  // Does not block: true once the collective has finished, successfully or not.
  bool is_completed() const;

 private:
  friend class Group;
  struct Pending;
  explicit Work(std::shared_ptr<Pending> pending) : pending_(std::move(pending)) {}
  std::shared_ptr<Pending> pending_;
};

class Group {
 public:
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  const std::string& name() const;
  int rank() const;  // this rank's index in the group
  int size() const;
  const std::vector<int>& members() const;  // global ranks, indexed by group rank

  // Sums `tensor` over the group, in place.
  Work all_reduce_sum(const torch::Tensor& tensor, const std::string& label = "allreduce");

  // Copies group rank `root`'s `tensor` into every member's `tensor`.
  // Throws strait::Error if root is not in [0, size()).
  Work broadcast(const torch::Tensor& tensor, int root, const std::string& label = "broadcast");

  // outputs[i] receives group rank i's `input`. `outputs` must hold size() tensors of
  // input's dtype and number of elements.
  Work all_gather(const torch::Tensor& input, std::vector<torch::Tensor>& outputs,
                  const std::string& label = "allgather");

  // input and output: size() equal chunks of the same dtype and number of elements (which must
  // divide by size()). Chunk j of `input` goes to group rank j; chunk i of `output` comes from
  // group rank i.
  Work all_to_all(const torch::Tensor& input, const torch::Tensor& output, const std::string& label = "alltoall");

  // input: (size() * chunk) elements; output: (chunk) elements of the same dtype. Group rank i
  // receives the sum over ranks of chunk i. Built on all_to_all then a local sum (accumulated in
  // float32 for half and bfloat16), since this Gloo has no reduce_scatter: on the wire it costs
  // what all_to_all costs.
  Work reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output,
                          const std::string& label = "reduce_scatter");

  // The same result as reduce_scatter_sum, as a ring: in n - 1 steps each rank adds its own
  // chunk to a partial sum received from rank - 1 and passes it on to rank + 1, so that rank r
  // ends with chunk r's sum (added in ring order from rank r + 1, in float32 for half and
  // bfloat16). It sends the bytes of a ring all-gather of one chunk, (n - 1) chunks to rank + 1,
  // where reduce_scatter_sum sends one chunk to every other rank: across a node boundary in node
  // order only one rank per node sends, so a node sends (n - 1) chunks across instead of
  // k (n - k). Partial sums travel in the input's dtype (one rounding a step for bfloat16).
  Work ring_reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output,
                               const std::string& label = "reduce_scatter");

  // outputs[i] receives group rank i's `input`; `outputs` is replaced when the Work completes.
  // Each rank may pass a different number of bytes, 0 included. Two phases, one Work: an
  // all-gather of every rank's byte count (booked as label + "/sizes": an 8-byte count from
  // each rank), then an all-gather of the inputs zero-padded to the largest count L (booked as
  // `label`: L bytes from each rank; a call that moves nothing when L is 0), trimmed to each
  // rank's count.
  // Peers' counts are not trusted: a negative one, or one above `max_bytes` (which bounds the
  // memory the padded phase allocates: size() * L bytes), fails the Work with strait::Error
  // naming the rank and its count, on every rank alike (all see the same counts; pass the same
  // max_bytes everywhere), before the second phase, so the group stays in step. The caller's
  // `input` is copied at once and need not outlive the call.
  static constexpr int64_t kDefaultMaxGatherBytes = int64_t{1} << 30;
  Work all_gather_bytes(const std::vector<uint8_t>& input, std::vector<std::vector<uint8_t>>& outputs,
                        const std::string& label = "allgather", int64_t max_bytes = kDefaultMaxGatherBytes);

  // Completes once every member has issued it and all their earlier collectives on this group
  // have completed.
  Work barrier();

 private:
  friend class Communicator;
  struct Impl;

  // A collective validated and booked in the ledger on the calling thread, not yet queued:
  // calling it runs the collective on the calling thread (start, wait, finish) and throws
  // strait::Error with the message Work::wait() would throw. Communicator chains several steps,
  // on groups that only it uses, into one task (hierarchical_all_reduce_sum).
  using Step = std::function<void()>;
  // Both reduce-scatters' argument checks: summable input of size() equal chunks, output one chunk.
  void require_reduce_scatter_arguments(const std::string& context, const torch::Tensor& input,
                                        const torch::Tensor& output) const;
  Step prepare_all_reduce_sum(const torch::Tensor& tensor, const std::string& label);
  Step prepare_all_gather(const torch::Tensor& input, const std::vector<torch::Tensor>& outputs,
                          const std::string& label);
  Step prepare_reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output, const std::string& label);

  // Queues `task` on this group's lane; the returned Work completes when it has run, failed
  // with the message of whatever it threw.
  Work submit(std::function<void()> task);

  // Connects this rank to the other members; blocks until they all call it. `store` is
  // namespaced to this group. Throws strait::Error naming the group on timeout or failure.
  static std::unique_ptr<Group> connect(std::string name, std::vector<int> members, int global_rank,
                                        const c10::intrusive_ptr<c10d::Store>& store,
                                        const std::shared_ptr<gloo::transport::Device>& device,
                                        std::chrono::milliseconds timeout, Ledger& ledger);
  explicit Group(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace strait::comm
