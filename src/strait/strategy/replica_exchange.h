// The mean of a flat float32 tensor over replicas, in a chosen wire dtype, so that every rank
// ends with the same bits: the outer exchange of local SGD and DiLoCo.
//
// With replicas of N ranks that each hold the whole tensor, the rank at position p of its
// replica exchanges only the p-th of N shards of it, with the ranks at position p of the other
// replicas (the `across` group), so every value crosses the replica boundary once per replica; an
// all-gather inside the replica (its fast links) then assembles the whole mean on every rank.
// When each rank holds only its part (ZeRO-3 inside), that part is its shard and nothing needs
// assembling.
//
// The shard's exchange is "quantize once at the owner" (as PCCL does): every rank encodes each
// owner's slice of its shard (codec/wire_codec.h) and sends it there (all-to-all); each owner
// decodes the R contributions, sums them in float32 in a fixed order, divides by R, encodes the
// mean once and all-gathers it; every rank decodes the same bytes, so the results agree bit for
// bit whatever the dtype. On the wire: 2 (R - 1) / R x the encoded shard per rank, as a ring
// all-reduce of the encoded bytes would move.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "strait/codec/wire_codec.h"
#include "strait/comm/group.h"
#include "strait/model/tensor_io.h"

namespace strait {

// What an outer method asks of an exchange: turn one fragment of every replica's flat values
// (pseudo-gradients, or weights for local SGD) into the one result that every rank applies, the
// same bits everywhere. The dense mean below, or SparseLoCo's error-fed sparse aggregate
// (sparse_exchange.h).
class OuterExchange {
 public:
  virtual ~OuterExchange() = default;
  // The shapes of the tensors that make up each fragment, in the order of its flat values;
  // called once, before the first aggregate or a checkpoint load into rank_state().
  virtual void prepare(const std::vector<std::vector<std::vector<int64_t>>>& fragment_shapes) = 0;
  // Replaces `flat` (fragment `fragment`'s values on this replica, 1-D float32, contiguous) by
  // the aggregate over the replicas and returns the bytes this rank sent to other replicas. Every
  // rank of the job calls it in the same order; `label` names it in the ledger. Figures of the
  // exchange beyond its bytes (e.g. the payload's size) are added to `figures`.
  virtual int64_t aggregate(size_t fragment, const torch::Tensor& flat, const std::string& label,
                            nlohmann::json& figures) = 0;
  // The ranks of this rank's position in every replica (null for one process); the outer method
  // checks over it that the replicas agree.
  virtual comm::Group* across() = 0;
  // This rank's own state (checkpoints keep it per rank; loading into it restores it).
  virtual NamedTensors rank_state() = 0;
};

class ReplicaExchange final : public OuterExchange {
 public:
  // `replica`: this rank's replica; `across`: the ranks of this rank's position in every
  // replica. Both must outlive this object; both null for a job of one process (one replica of
  // one rank: the mean is the tensor itself, as decoded from the wire dtype). `replica` null with
  // `across` given: each rank's values are its own part of the replica's (its ZeRO-3 shard), and
  // they are exchanged whole across replicas, with nothing to assemble inside the replica.
  ReplicaExchange(comm::Group* replica, comm::Group* across, codec::WireDtype dtype);

  // Replaces `flat` (1-D float32, contiguous) by its mean over the replicas, as decoded from
  // the wire, and returns the bytes this rank sent to other replicas. Every rank of the job must
  // call it in the same order. `label` names it in the ledger (label + "/alltoall",
  // "/allgather", and "/in_replica" for the replica's all-gather). Throws strait::Error as the
  // collectives and the codec do (a peer's malformed bytes).
  int64_t mean(const torch::Tensor& flat, const std::string& label);

  // The mean; the dense exchange keeps no state and treats every fragment alike.
  void prepare(const std::vector<std::vector<std::vector<int64_t>>>&) override {}
  int64_t aggregate(size_t, const torch::Tensor& flat, const std::string& label, nlohmann::json&) override {
    return mean(flat, label);
  }
  // Which replica each member of `across` belongs to is its group rank (null for one process).
  comm::Group* across() override { return across_; }
  NamedTensors rank_state() override { return {}; }

 private:
  int64_t mean_of_shard(const torch::Tensor& shard, const std::string& label);

  comm::Group* replica_;
  comm::Group* across_;
  codec::WireCodec codec_;
};

}  // namespace strait
