// What the SparseLoCo payload fuzzer (fuzz/sparse_unpack_fuzz.cpp) decodes, shared with the
// codec tests that keep its seed corpus (fuzz/corpus/) valid. A fuzz input is one selector byte
// and a payload: the low 7 bits pick a case (modulo the case count), the high bit asks for the
// payload's body size and checksum to be recomputed first, so that mutations reach the body's
// decoder instead of stopping at the checksum.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "strait/codec/sparse_codec.h"
#include "strait/core/checksum.h"

namespace strait::codec::fuzz {

struct FuzzCase {
  std::vector<std::vector<int64_t>> shapes;
  SparseOptions options;
};

constexpr uint8_t kResealBit = 0x80;

// Chunks of 1, 7, 15, 50, 64 and 4096 elements, from every value kept (k_C = C) to one a chunk,
// 3 and 4 bins, in each index coding.
inline std::vector<FuzzCase> fuzz_cases() {
  struct ShapeSet {
    std::vector<std::vector<int64_t>> shapes;
    int64_t topk;
    int bins;
  };
  const std::vector<ShapeSet> sets = {
      {{{1}, {7}}, 4096, 4},          // every value kept
      {{{64}, {3, 5}}, 1024, 4},      // 16 of 64, 4 of 15
      {{{64, 64}, {50}}, 64, 3},      // 64 of 4096, 1 of 50; 3 bins leave code 3 invalid
  };
  std::vector<FuzzCase> cases;
  for (const ShapeSet& set : sets) {
    for (IndexCoding coding : {IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap, IndexCoding::Auto}) {
      FuzzCase& c = cases.emplace_back();
      c.shapes = set.shapes;
      c.options.topk = set.topk;
      c.options.quant_bins = set.bins;
      c.options.index_coding = coding;
    }
  }
  return cases;
}

// Makes a payload's header agree with its body again: body size and checksum, as a peer that
// encodes wrongly (not a line error) would send it. Payloads shorter than the header are left.
inline void reseal(std::vector<uint8_t>& payload) {
  if (payload.size() < 32) return;
  const uint64_t body = payload.size() - 32, checksum = xxh64(payload.data() + 32, body);
  std::memcpy(payload.data() + 16, &body, 8);
  std::memcpy(payload.data() + 24, &checksum, 8);
}

}  // namespace strait::codec::fuzz
