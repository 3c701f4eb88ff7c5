// SparseLoCo's outer exchange (ALGORITHMS.md section 3): each replica sends the top-k entries of
// an error-feedback buffer, quantized to 2 bits, in the codec's bit-packed wire format
// (codec/sparse_codec.h), and every replica all-gathers everyone's payload and aggregates them.
//
// Per fragment f (one buffer per fragment, so streaming fragments each keep their own error),
// on every call with this replica's pseudo-gradient Δ:
//   e_f ← β e_f + Δ;  sent = top-k + 2-bit quantization of e_f, tensor by tensor;
//   e_f ← e_f − decode(sent);  payload = pack(sent);
// the payloads of all replicas are all-gathered (replica order), unpacked (a peer's malformed
// payload is an Error naming its replica and rank) and aggregated per coordinate: the mean over
// the replicas that kept it (Aggregation::Mean), or the sum / R. Every replica decodes the same
// bytes in the same order, so every rank ends with the same bits.
//
// A replica of several ranks holds the same Δ on every rank (its inner method keeps them in
// step), so every rank updates the same error buffer; only the rank at position 0 of each replica
// crosses the replica boundary (all-gather over its `across` group), and broadcasts the dense
// aggregate inside its replica (fast links). With ZeRO-3 inside (`replica` null), each rank's Δ
// is its own shard's, so every rank compresses and exchanges its shard with the same shard of
// the other replicas. The error buffers are per-rank state: a replica's ranks hold identical
// copies (or each its shard's), replicas differ.
#pragma once

#include <vector>

#include "strait/codec/sparse_codec.h"
#include "strait/strategy/replica_exchange.h"

namespace strait {

class SparseExchange final : public OuterExchange {
 public:
  // `replica`, `across`: as for ReplicaExchange (both null for one process; `replica` null for
  // ZeRO-3 inside).
  SparseExchange(comm::Group* replica, comm::Group* across, codec::SparseOptions options,
                 codec::Aggregation aggregation);

  void prepare(const std::vector<std::vector<std::vector<int64_t>>>& fragment_shapes) override;
  // Adds to `figures`, summed over the fragments of one sync: "payload_bytes" (this replica's
  // upload), "dense_bytes" (the same values in float32), "kept_values", "index_bits",
  // "bits_per_index" (what the index coding achieved) and "codec_ms" (the CPU time of encoding
  // this payload and decoding the gathered ones, the wait for them left out).
  int64_t aggregate(size_t fragment, const torch::Tensor& flat, const std::string& label,
                    nlohmann::json& figures) override;
  comm::Group* across() override { return across_; }
  // "outer.error.<f>": fragment f's error buffer, flat in the fragment's order.
  NamedTensors rank_state() override;

 private:
  // Decodes and aggregates `payloads` (replica order) into `flat`.
  void aggregate_payloads(size_t fragment, const std::vector<std::vector<uint8_t>>& payloads,
                          const torch::Tensor& flat) const;

  comm::Group* replica_;
  comm::Group* across_;
  codec::SparseOptions options_;
  codec::Aggregation aggregation_;
  std::vector<std::vector<std::vector<int64_t>>> shapes_;  // per fragment, per tensor
  std::vector<torch::Tensor> errors_;                      // per fragment, float32, flat
};

}  // namespace strait
