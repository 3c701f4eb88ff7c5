// Gloo's ring all-reduce (gloo/allreduce.cc, ring(), as in Debian's libgloo0
// 0.0~git20220518) replayed step by step, counting the bytes of every send and receive it
// posts. Independent of the closed form that strait's ledger uses (gloo_algorithms.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

namespace strait::testing {

struct RingCount {
  uint64_t sent = 0;      // to rank - 1
  uint64_t received = 0;  // from rank + 1
};

inline RingCount replay_gloo_ring(int64_t rank, int64_t size, int64_t total, int64_t element) {
  auto round_up = [](int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; };
  const int64_t max_segment = element * std::max<int64_t>(1, (1024 * 1024) / element);
  const int64_t segments = round_up(std::max((total + max_segment - 1) / max_segment, 2 * size), size);
  const int64_t per_rank = segments / size;
  const int64_t segment_bytes = round_up((total + segments - 1) / segments, element);
  RingCount count;
  auto add = [&](uint64_t& counter, int64_t segment_index) {
    const int64_t offset = (segment_index * segment_bytes) % (segments * segment_bytes);
    const int64_t length = std::min(segment_bytes, total - offset);
    if (length > 0) counter += static_cast<uint64_t>(length);
  };
  for (int64_t i = 0; i < segments - per_rank; ++i) {  // reduce-scatter
    add(count.sent, (rank + 1) * per_rank + i);
    add(count.received, (rank + 2) * per_rank + i);
  }
  for (int64_t i = 0; i < segments - per_rank; ++i) {  // all-gather
    add(count.sent, rank * per_rank + i);
    add(count.received, (rank + 1) * per_rank + i);
  }
  return count;
}

}  // namespace strait::testing
