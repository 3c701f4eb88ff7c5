// The mean of a flat float32 tensor over replicas, in a chosen wire dtype, so that every rank
// ends with the same bits: the outer exchange of local SGD and DiLoCo.
//
// With replicas of N ranks, the rank at position p of its replica exchanges only the p-th of N
// shards of the tensor, with the ranks at position p of the other replicas (the `across` group),
// so every value crosses the replica boundary once per replica; an all-gather inside the replica
// (its fast links) then assembles the whole mean on every rank.
//
// The shard's exchange is "quantize once at the owner" (as PCCL does): every rank encodes each
// owner's slice of its shard (codec/wire_codec.h) and sends it there (all-to-all); each owner
// decodes the R contributions, sums them in float32 in a fixed order, divides by R, encodes the
// mean once and all-gathers it; every rank decodes the same bytes, so the results agree bit for
// bit whatever the dtype. On the wire: 2 (R - 1) / R x the encoded shard per rank, as a ring
// all-reduce of the encoded bytes would move.
#pragma once

#include <string>

#include <torch/types.h>

#include "strait/codec/wire_codec.h"
#include "strait/comm/group.h"

namespace strait {

class ReplicaExchange {
 public:
  // `replica`: this rank's replica; `across`: the ranks of this rank's position in every
  // replica. Both must outlive this object; both null for a job of one process (one replica of
  // one rank: the mean is the tensor itself, as decoded from the wire dtype).
  ReplicaExchange(comm::Group* replica, comm::Group* across, codec::WireDtype dtype);

  // Replaces `flat` (1-D float32, contiguous) by its mean over the replicas, as decoded from
  // the wire, and returns the bytes this rank sent to other replicas. Every rank of the job must
  // call it in the same order. `label` names it in the ledger (label + "/alltoall",
  // "/allgather", and "/in_replica" for the replica's all-gather). Throws strait::Error as the
  // collectives and the codec do (a peer's malformed bytes).
  int64_t mean(const torch::Tensor& flat, const std::string& label);

  // Which replica each member of `across` belongs to is its group rank (null for one process).
  comm::Group* across() { return across_; }

 private:
  int64_t mean_of_shard(const torch::Tensor& shard, const std::string& label);

  comm::Group* replica_;
  comm::Group* across_;
  codec::WireCodec codec_;
};

}  // namespace strait
