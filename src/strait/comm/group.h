// A process group over a subset of the job's ranks, and the handle of a collective in flight.
//
// Intended usage (a DDP gradient bucket):
//   Work work = comm.world().all_reduce_sum(bucket);   // returns at once
//   ... more backward ...
//   work.wait();                                       // throws strait::Error on failure
//   bucket.div_(comm.world().size());                  // average = sum, then divide
//
// Contracts shared by every collective:
// - Every member must issue the same collectives on a group in the same order, with tensors
//   of the same dtype and size; a mismatch hangs until the timeout or fails in Gloo.
// - Arguments are validated before anything reaches the wire: a bad argument throws
//   strait::Error on the calling rank and leaves the group usable and in step.
// - Tensors must be defined, on the CPU, contiguous and non-empty. They (and all_gather_bytes'
//   output vector) must stay alive and untouched until wait() returns.
// - Data-moving collectives (broadcast, all_gather, all_to_all) move raw bytes, so any dtype
//   works. Reductions sum float, double, half, bfloat16, int8, uint8, int32 and int64.
//   This Gloo cannot reduce bfloat16, so all_reduce_sum converts it to float32, reduces and
//   converts back (one rounding; float32 bytes go on the wire and into the ledger).
// - `label` names the operation in the ledger (defaults: "allreduce", "broadcast",
//   "allgather", "alltoall", "reduce_scatter", "barrier").
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
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
// Work is done.
class [[nodiscard]] Work {
 public:
  Work() = default;
  void wait();

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

  // outputs[i] receives group rank i's `input`; `outputs` is resized by wait(). Every rank must
  // pass the same number of bytes: a contract, not checked (a mismatch fails in Gloo or hangs
  // until the timeout).
  Work all_gather_bytes(const std::vector<uint8_t>& input, std::vector<std::vector<uint8_t>>& outputs,
                        const std::string& label = "allgather");

  // Completes once every member has issued it and all their earlier collectives on this group
  // have completed.
  Work barrier();

 private:
  friend class Communicator;
  struct Impl;

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
