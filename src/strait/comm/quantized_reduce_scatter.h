// ZeRO++'s qgZ: a gradient reduce-scatter over the job's world (or one replica's whole nodes)
// as a quantized, hierarchical all-to-all (ALGORITHMS.md section 1). Values cross the network as int4 codes with one float32
// scale per block (codec::WireCodec): each all-to-all moves about 1/8 of the bytes of a float32
// one. Across nodes a rank sends one encoded chunk to each other node, where a float32
// reduce-scatter over the world sends a float32 chunk to each of that node's k ranks: 1/(8k).
//
// Intended usage (one gradient bucket of a ZeRO-3 step, W = world size):
//   QuantizedReduceScatter qgz(comm.intra_node(), comm.cross_node());
//   torch::Tensor shard = torch::empty({bucket.numel() / W});   // chunk r of bucket -> rank r
//   qgz.run(bucket, shard);                                     // blocking
//   shard.div_(W);                                              // average = sum / W
//
// The algorithm, with k ranks per node, `nodes` nodes, N = k * nodes and S = output's elements
// (world rank = node * k + local, topology.h; for a replica, counted from its first rank):
//   1. inside the node: for each local index j, this rank int4-encodes the `nodes` chunks
//      {b * k + j : every node b} and sends them to local rank j, in one all_to_all on
//      intra_node (label kIntraLabel); it decodes the k bundles it receives and sums them in
//      float32, in local-rank order: the node's partial sums of chunks {b * k + local : b}.
//   2. across nodes: it re-encodes each partial in int4 and sends the partial of chunk
//      b * k + local to node b, in one all_to_all on cross_node (label kCrossLabel); it decodes
//      the `nodes` partials it receives and sums them in float32, in node order, into output.
// A phase whose group has one member is skipped, and with it that phase's quantization (one
// node: no phase 2; one rank per node: no phase 1, the chunks go to phase 2 unquantized).
// Every rank's own contribution goes through the codec like its peers' (the all_to_all hands a
// rank its own bundle), so the result depends only on the inputs, never on who computes it.
//
// Wire layout: every chunk (phase 1) and every partial (phase 2) is encoded as its own vector
// of S values, so quantization blocks start at each chunk's first element and never mix values
// bound for different ranks. A phase-1 bundle is the `nodes` encoded chunks in node order:
// nodes * encoded_size(S) bytes for every peer (equal to encoded_size(nodes * S) when S is a
// multiple of the block size); a phase-2 message is encoded_size(S) bytes.
//
// Error, per element, against the exact sum: each phase-1 quantization is off by at most half
// its block's scale (max |x| / 7 over the block), each phase-2 requantization by half the
// scale of the partial's block; the float32 sums add rounding of order eps * sum |x|.
//
// Threads: run() issues collectives on both groups and waits for them, so call it from the
// thread that issues those groups' other collectives (group.h), or give it groups of its own
// (Communicator::make_group).
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "strait/codec/wire_codec.h"
#include "strait/comm/group.h"

namespace strait::comm {

class QuantizedReduceScatter {
 public:
  // The ledger's names for the two all-to-alls, so that each phase's traffic is attributable.
  static constexpr const char* kIntraLabel = "qgz_alltoall_intra";
  static constexpr const char* kCrossLabel = "qgz_alltoall_cross";

  // The ranks reduced over are the world's, or a replica's: consecutive global ranks from F
  // (0 for the world), whole nodes. intra_node: this rank's node's ranks (k of them);
  // cross_node: the ranks with this rank's local index on every one of those nodes. Global ranks
  // are contiguous per node: rank = F + node * k + local, node counted from F's (see
  // comm/topology.h). Both groups must outlive this object.
  // Throws strait::Error if the groups' members do not have that layout (e.g. the two groups
  // swapped), or if block_size is 0.
  QuantizedReduceScatter(Group& intra_node, Group& cross_node,
                         size_t block_size = codec::WireCodec::kDefaultBlock);

  // input: N * S float32 elements, chunk r (elements [r S, (r+1) S)) destined for rank F + r.
  // output: S float32 elements, overwritten with the sum over all N ranks of their chunk for
  // this rank (see above for how, and for the error bound). Blocking: returns when output is
  // complete. Every one of the N ranks must call it, in the same order, with the same S.
  // Throws strait::Error:
  // - before anything is sent, if a tensor is undefined, not on the CPU, not contiguous, empty,
  //   not float32, or input does not hold N * output.numel() elements (the groups stay usable);
  // - if an input value, or a partial sum, is not finite (the codec cannot quantize it); this
  //   rank then stops before sending, so its peers fail at the groups' timeout;
  // - if a collective fails (Work::wait's message);
  // - if a peer's bytes do not decode (WireCodec::decode's message, prefixed with the group and
  //   the peer's global rank): a corrupt or malicious peer cannot inject non-finite values.
  void run(const torch::Tensor& input, torch::Tensor& output);

  // What one call sends from this rank, in bytes, per group (for tests and the planner): what
  // the ledger books under kIntraLabel (all intra-node) and kCrossLabel (all cross-node).
  //   intra_node = (k - 1) * nodes * encoded_size(S)   (0 when k == 1)
  //   cross_node = (nodes - 1) * encoded_size(S)       (0 when nodes == 1)
  // Each rank receives as many bytes as it sends.
  struct Bytes {
    uint64_t intra_node = 0, cross_node = 0;
  };
  Bytes bytes_sent(int64_t chunk_elements) const;

 private:
  // One phase: rows[p][r] (S float32 values, contiguous) is encoded and sent to group rank p;
  // result[r] receives the float32 sum, in group rank order, of what each member sent as its
  // row r. Skipped (result = rows[0], unquantized) when the group has one member.
  void exchange(Group& group, const torch::Tensor& rows, torch::Tensor result, const char* label) const;

  Group& intra_node_;
  Group& cross_node_;
  codec::WireCodec codec_;
};

}  // namespace strait::comm
