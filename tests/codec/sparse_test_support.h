// Helpers of the SparseLoCo codec tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <random>
#include <string>

#include "strait/codec/sparse_codec.h"
#include "strait/core/error.h"
#include "error_of.h"

namespace strait::testing {


// A tensor of `shape` as compress would shape it for `options`, with uniformly random positions
// (k_C distinct ones a chunk), codes and side information: positions independent of any
// values, so the index codings see every layout with equal chance.
inline codec::SparseTensor random_sparse_tensor(const std::vector<int64_t>& shape, const codec::SparseOptions& options,
                                                uint32_t seed) {
  using namespace codec;
  std::mt19937 random(seed);
  const Chunking chunking = chunking_for(shape);
  const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
  SparseTensor tensor;
  tensor.shape = shape;
  std::vector<uint16_t> all(static_cast<size_t>(chunking.chunk_size()));
  for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), random);
    std::sort(all.begin(), all.begin() + keep);
    tensor.positions.insert(tensor.positions.end(), all.begin(), all.begin() + keep);
  }
  std::uniform_int_distribution<int> code(0, options.quant_bins - 1);
  for (size_t i = 0; i < tensor.positions.size(); ++i) tensor.codes.push_back(static_cast<uint8_t>(code(random)));
  std::normal_distribution<float> normal;
  tensor.shift = normal(random);
  for (int c = 0; c < options.quant_bins; ++c) tensor.centroids.push_back(normal(random));
  return tensor;
}

// `actual` (what unpack returned) holds exactly `expected` (what was packed).
inline void expect_same_tensors(const std::vector<codec::SparseTensor>& actual,
                                const std::vector<codec::SparseTensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t t = 0; t < expected.size(); ++t) {
    EXPECT_EQ(actual[t].shape, expected[t].shape) << t;
    EXPECT_EQ(actual[t].positions, expected[t].positions) << t;
    EXPECT_EQ(actual[t].codes, expected[t].codes) << t;
    EXPECT_EQ(actual[t].shift, expected[t].shift) << t;
    EXPECT_EQ(actual[t].centroids, expected[t].centroids) << t;
  }
}

}  // namespace strait::testing
