#include "strait/comm/gloo_algorithms.h"

#include <algorithm>
#include <map>

namespace strait::comm::gloo_algorithms {

namespace {

uint64_t ceil_div(uint64_t value, uint64_t divisor) { return (value + divisor - 1) / divisor; }
uint64_t round_up(uint64_t value, uint64_t multiple) { return ceil_div(value, multiple) * multiple; }
int wrap(int rank, int size) { return ((rank % size) + size) % size; }

// Merges entries for the same peer (in a ring of two, the successor is the predecessor).
class PeerTally {
 public:
  void send(int peer, uint64_t bytes) { peers_[peer].sent += bytes; }
  void receive(int peer, uint64_t bytes) { peers_[peer].received += bytes; }

  std::vector<PeerTraffic> entries() const {
    std::vector<PeerTraffic> result;
    for (const auto& [peer, traffic] : peers_) {
      if (traffic.sent + traffic.received > 0) result.push_back({peer, traffic.sent, traffic.received});
    }
    return result;
  }

 private:
  std::map<int, PeerTraffic> peers_;
};

}  // namespace

uint64_t ring_allreduce_chunk_bytes(int chunk, int size, uint64_t bytes, uint64_t element_size) {
  const uint64_t n = static_cast<uint64_t>(size);
  const uint64_t max_segment = element_size * std::max<uint64_t>(1, kMaxSegmentBytes / element_size);
  const uint64_t segments = round_up(std::max(ceil_div(bytes, max_segment), 2 * n), n);
  const uint64_t segment_bytes = round_up(ceil_div(bytes, segments), element_size);
  const uint64_t chunk_capacity = (segments / n) * segment_bytes;
  const uint64_t start = static_cast<uint64_t>(chunk) * chunk_capacity;
  return start >= bytes ? 0 : std::min(chunk_capacity, bytes - start);
}

std::vector<PeerTraffic> ring_allreduce(int rank, int size, uint64_t bytes, uint64_t element_size) {
  PeerTally tally;
  if (size > 1) {
    auto chunk = [&](int c) { return ring_allreduce_chunk_bytes(wrap(c, size), size, bytes, element_size); };
    tally.send(wrap(rank - 1, size), 2 * bytes - chunk(rank) - chunk(rank - 1));
    tally.receive(wrap(rank + 1, size), 2 * bytes - chunk(rank) - chunk(rank + 1));
  }
  return tally.entries();
}

std::vector<PeerTraffic> ring_allgather(int rank, int size, uint64_t input_bytes) {
  PeerTally tally;
  if (size > 1) {
    const uint64_t steps = static_cast<uint64_t>(size - 1);
    tally.send(wrap(rank + 1, size), steps * input_bytes);
    tally.receive(wrap(rank - 1, size), steps * input_bytes);
  }
  return tally.entries();
}

std::vector<PeerTraffic> binomial_broadcast(int rank, int size, int root, uint64_t bytes) {
  PeerTally tally;
  const int virtual_rank = wrap(rank - root, size);
  for (int step = 1; step < size; step *= 2) {
    if (virtual_rank < step && virtual_rank + step < size) {
      tally.send(wrap(virtual_rank + step + root, size), bytes);
    } else if (virtual_rank >= step && virtual_rank < 2 * step) {
      tally.receive(wrap(virtual_rank - step + root, size), bytes);
    }
  }
  return tally.entries();
}

std::vector<PeerTraffic> direct_alltoall(int rank, int size, uint64_t chunk_bytes) {
  PeerTally tally;
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    tally.send(peer, chunk_bytes);
    tally.receive(peer, chunk_bytes);
  }
  return tally.entries();
}

}  // namespace strait::comm::gloo_algorithms
