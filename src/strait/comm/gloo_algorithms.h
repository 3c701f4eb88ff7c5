// Which bytes Gloo's algorithms move between which ranks: the models behind the ledger.
//
// Checked against the Gloo that Debian's LibTorch 1.13.1 links (libgloo0
// 0.0~git20220518.5b14351) and ProcessGroupGloo 1.13, which call the "new style" gloo::
// functions below. Ranks are group ranks; each function returns, for `rank`, one entry per peer
// it exchanges payload with (empty for a group of one or an empty buffer).
//
// - all-reduce (gloo/allreduce.cc, algorithm UNSPECIFIED = ring; strait runs the same ring
//   itself from Gloo's send and receive, a whole chunk per step, each step's receive posted
//   first, so only the chunks below matter to it): the buffer of T bytes is cut into S segments, S = roundUp(max(ceil(T / maxSeg), 2n), n) with maxSeg = 1 MiB rounded down
//   to whole elements, each of B = roundUp(ceil(T / S), element size) bytes (the tail clipped to
//   T). Rank c owns chunk c = segments [c·S/n, (c+1)·S/n), of length
//   chunk(c) = clamp(T − c·(S/n)·B, 0, (S/n)·B); trailing chunks may be short or empty.
//   Reduce-scatter then all-gather, each (n−1)·S/n segment steps, SENDING TO rank − 1 and
//   receiving from rank + 1 (Gloo's ring runs downwards):
//     sent to r−1       = 2T − chunk(r) − chunk(r−1)
//     received from r+1 = 2T − chunk(r) − chunk(r+1)
//   which is 2(n−1)/n·T each way when T divides evenly.
// - all-gather, list form (gloo/allgather.cc, ring; strait runs the same ring itself from
//   Gloo's send and receive, each step's receive posted first): n−1 steps, each forwarding one
//   rank's contribution to rank + 1 and receiving one from rank − 1: (n−1)·I bytes each way for
//   an input of I bytes.
// - broadcast (gloo/broadcast.cc, binomial tree): with v = (rank − root) mod n, in round i a
//   rank with v < 2^i sends the whole buffer to v + 2^i (if < n); every non-root receives it
//   once, from v − 2^⌊log2 v⌋; the root sends ⌈log2 n⌉ copies.
// - all-to-all with equal splits (gloo/alltoall.cc; strait sends the same chunks itself, every
//   receive posted before any send): one chunk sent directly to, and one received from, every
//   other rank.
// - barrier (gloo/barrier.cc, dissemination): zero-byte messages only.
#pragma once

#include <cstdint>
#include <vector>

#include "strait/comm/ledger.h"

namespace strait::comm::gloo_algorithms {

// Gloo's AllreduceOptionsImpl::kMaxSegmentSize, which ProcessGroupGloo leaves at its default.
constexpr uint64_t kMaxSegmentBytes = 1024 * 1024;

std::vector<PeerTraffic> ring_allreduce(int rank, int size, uint64_t bytes, uint64_t element_size);
std::vector<PeerTraffic> ring_allgather(int rank, int size, uint64_t input_bytes);
std::vector<PeerTraffic> binomial_broadcast(int rank, int size, int root, uint64_t bytes);
std::vector<PeerTraffic> direct_alltoall(int rank, int size, uint64_t chunk_bytes);

// The bytes of chunk `chunk` in Gloo's ring all-reduce of `bytes` bytes over `size` ranks.
uint64_t ring_allreduce_chunk_bytes(int chunk, int size, uint64_t bytes, uint64_t element_size);

}  // namespace strait::comm::gloo_algorithms
