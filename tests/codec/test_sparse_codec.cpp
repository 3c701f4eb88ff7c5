// SparseLoCo's compressor against independent expectations: chunk shapes and k per chunk by the
// rules of ALGORITHMS.md section 3, top-k against a full sort, 2-bit quantization against a
// float64 hand computation, the error-feedback identity bit for bit, the packed size to the
// byte, aggregation, and every kind of malformed payload from a peer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include "strait/codec/sparse_codec.h"
#include "../../fuzz/sparse_fuzz_cases.h"
#include "sparse_test_support.h"
#include "strait/core/error.h"
#include "test_support.h"

namespace strait::codec {
namespace {

using testing::error_of;

TEST(SparseCodec, ChunksAreTilesOfAtMost64ByLargestDivisors) {
  Chunking matrix = chunking_for({128, 96});  // 128 -> 64, 96 -> 48 (its largest divisor <= 64)
  EXPECT_EQ(matrix.tile_rows, 64);
  EXPECT_EQ(matrix.tile_cols, 48);
  EXPECT_EQ(matrix.chunk_count(), 4);
  EXPECT_EQ(matrix.element(1, 0), 48);         // tile (0, 1), its first element
  EXPECT_EQ(matrix.element(1, 48), 96 + 48);   // its second row
  EXPECT_EQ(matrix.element(2, 0), 64 * 96);    // tile (1, 0)
  Chunking vector = chunking_for({100});       // rows of 50
  EXPECT_EQ(vector.chunk_size(), 50);
  EXPECT_EQ(vector.chunk_count(), 2);
  EXPECT_EQ(chunking_for({64}).chunk_size(), 64);
  EXPECT_EQ(chunking_for({257}).chunk_size(), 1);  // a prime above 64
  EXPECT_EQ(chunking_for({4096, 64}).chunk_size(), 4096);
  EXPECT_NE(error_of([] { chunking_for({3, 0}); }).find("dimension 0 is not positive"), std::string::npos);
}

TEST(SparseCodec, KeptPerChunkScalesKAndRoundsHalfToEven) {
  EXPECT_EQ(kept_per_chunk(4096, 64), 64);
  EXPECT_EQ(kept_per_chunk(3072, 64), 48);
  EXPECT_EQ(kept_per_chunk(96, 64), 2);   // 1.5 -> 2
  EXPECT_EQ(kept_per_chunk(160, 64), 2);  // 2.5 -> 2
  EXPECT_EQ(kept_per_chunk(32, 64), 1);   // 0.5 -> 0 -> at least 1
  EXPECT_EQ(kept_per_chunk(1, 4096), 1);  // never more than the chunk
}

TEST(SparseCodec, EachChunkKeepsExactlyItsKLargestMagnitudesLowerPositionsWinTies) {
  const std::vector<int64_t> shape = {128, 96};
  std::vector<float> values = testing::normal_floats(128 * 96, 1);
  // Rows 0 and 1 all ±9: chunk 0 (a 64 x 48 tile) has 96 tied values at positions 0..95.
  for (int i = 0; i < 2 * 96; ++i) values[i] = (i % 2 ? -1.0f : 1.0f) * 9.0f;
  SparseOptions options;
  const SparseTensor sent = compress(values.data(), shape, options);
  const Chunking chunking = chunking_for(shape);
  const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
  ASSERT_EQ(static_cast<int64_t>(sent.positions.size()), chunking.chunk_count() * keep);
  for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
    std::vector<int64_t> order(static_cast<size_t>(chunking.chunk_size()));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return std::fabs(values[chunking.element(c, a)]) > std::fabs(values[chunking.element(c, b)]);
    });
    std::vector<int64_t> expected(order.begin(), order.begin() + keep);
    std::sort(expected.begin(), expected.end());
    std::vector<int64_t> actual(sent.positions.begin() + c * keep, sent.positions.begin() + (c + 1) * keep);
    EXPECT_EQ(actual, expected) << "chunk " << c;
  }
  // Chunk 0 keeps 48 of its 96 tied values: positions 0..47, the lowest.
  EXPECT_EQ(keep, 48);
  for (int64_t i = 0; i < keep; ++i) EXPECT_EQ(sent.positions[i], i);
}

TEST(SparseCodec, QuantizationUsesShiftScaleAndCentroidsOfTheKeptValues) {
  // One chunk of 4 with k = 4096 per 4096: every value is kept.
  const std::vector<float> values = {-3.0f, 0.5f, 1.0f, 10.0f};
  SparseOptions options;
  options.topk = 4096;
  const SparseTensor sent = compress(values.data(), {4}, options);
  const double mean = (-3.0 + 0.5 + 1.0 + 10.0) / 4;
  double squares = 0;
  for (float v : values) squares += (v - mean) * (v - mean);
  const double scale = 6.0 * std::sqrt(squares / 3) / 4;
  std::vector<double> totals(4, 0.0), members(4, 0.0);
  for (size_t i = 0; i < 4; ++i) {
    const int code = static_cast<int>(std::clamp(std::nearbyint((values[i] - mean) / scale + 2), 0.0, 3.0));
    EXPECT_EQ(sent.codes[i], code) << i;
    totals[code] += values[i] - mean;
    members[code] += 1;
  }
  EXPECT_FLOAT_EQ(sent.shift, static_cast<float>(mean));
  for (int c = 0; c < 4; ++c) {
    EXPECT_FLOAT_EQ(sent.centroids[c], members[c] ? static_cast<float>(totals[c] / members[c]) : 0.0f) << c;
  }
  EXPECT_EQ(sent.value(3), sent.centroids[sent.codes[3]] + sent.shift);
}

TEST(SparseCodec, ErrorFeedbackKeepsEveryUnsentBitOfTheBuffer) {
  // e_new == fl(fl(β e + Δ) − decoded) where a value was sent and fl(β e + Δ) elsewhere, bit for
  // bit: the buffer keeps both the unsent mass and the quantization error.
  const std::vector<int64_t> shape = {64, 80};
  std::vector<float> error = testing::normal_floats(64 * 80, 2), delta = testing::normal_floats(64 * 80, 3);
  const std::vector<float> before = error;
  SparseOptions options;
  const SparseTensor sent = error_feedback_step(error.data(), delta.data(), shape, options);
  std::vector<float> decoded(error.size(), 0.0f);
  add_decoded(sent, decoded.data());
  std::vector<bool> was_sent(error.size(), false);
  const Chunking chunking = chunking_for(shape);
  const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
  for (size_t i = 0; i < sent.positions.size(); ++i) {
    was_sent[chunking.element(static_cast<int64_t>(i) / keep, sent.positions[i])] = true;
  }
  for (size_t i = 0; i < error.size(); ++i) {
    const float accumulated = 0.95f * before[i] + delta[i];
    const float expected = was_sent[i] ? accumulated - decoded[i] : accumulated;
    ASSERT_EQ(error[i], expected) << "element " << i;
  }
}

TEST(SparseCodec, PayloadsRoundTripAndTakeTheFormulasBytes) {
  const std::vector<std::vector<int64_t>> shapes = {{64, 64}, {100}, {128, 96}};
  SparseOptions options;
  options.index_coding = IndexCoding::Fixed;
  std::vector<SparseTensor> tensors;
  for (size_t t = 0; t < shapes.size(); ++t) {
    const auto values = testing::normal_floats(static_cast<size_t>(shapes[t][0] * (shapes[t].size() > 1 ? shapes[t][1] : 1)),
                                      10 + static_cast<uint32_t>(t));
    tensors.push_back(compress(values.data(), shapes[t], options));
  }
  const std::vector<uint8_t> payload = pack(tensors, options);
  // By hand: 32 header bytes; per tensor 8 + 4 + 16 bytes and ceil(kept x (index bits + 2) / 8):
  // 64x64: 64 kept x 14 bits = 112; 100: 2 chunks of 50 keep 1 each x 8 bits = 2; 128x96: 4
  // chunks of 3072 keep 48 each, 192 x 14 bits = 336.
  EXPECT_EQ(payload.size(), 32u + (28 + 112) + (28 + 2) + (28 + 336));
  EXPECT_EQ(payload.size(), packed_size(shapes, options));
  testing::expect_same_tensors(unpack(payload.data(), payload.size(), shapes, options), tensors);
}

TEST(SparseCodec, AtK96Per4096AFullChunkTensorIsAtLeast97TimesSmallerThanFloat32) {
  // The paper's accounting: 12-bit index + 2-bit code per kept value = 32 / (96/4096 x 14) = 97.5x;
  // side information (28 bytes a tensor) costs a little of it.
  SparseOptions options;
  options.topk = 96;
  options.index_coding = IndexCoding::Fixed;
  const std::vector<std::vector<int64_t>> shapes = {{64, 4096}};
  const double dense = 4.0 * 64 * 4096;
  const double packed = static_cast<double>(packed_size(shapes, options)) - 32;
  EXPECT_EQ(packed, 28 + 64 * 96 * 14 / 8);
  EXPECT_GT(dense / packed, 97.0);
}

TEST(SparseCodec, AggregationTakesTheMeanOverTheReplicasThatKeptACoordinateOrTheSumOverAll) {
  // Shape {8}: one chunk of 8. Replica A keeps 1 and 3, replica B keeps 3 and 6.
  auto tensor = [](std::vector<uint16_t> positions, std::vector<uint8_t> codes) {
    SparseTensor t;
    t.shape = {8};
    t.positions = std::move(positions);
    t.codes = std::move(codes);
    t.shift = 1.0f;
    t.centroids = {-2.0f, 0.0f, 2.0f, 4.0f};  // decodes to -1, 1, 3, 5
    return t;
  };
  SparseAggregate aggregate(std::vector<std::vector<int64_t>>{{8}});
  aggregate.add({tensor({1, 3}, {0, 3})});  // -1 at 1, 5 at 3
  aggregate.add({tensor({3, 6}, {2, 1})});  // 3 at 3, 1 at 6
  std::vector<float> mean(8), sum(8);
  aggregate.result(0, Aggregation::Mean, 2, mean.data());
  aggregate.result(0, Aggregation::Sum, 2, sum.data());
  EXPECT_EQ(mean, (std::vector<float>{0, -1, 0, 4, 0, 0, 1, 0}));
  EXPECT_EQ(sum, (std::vector<float>{0, -0.5f, 0, 4, 0, 0, 0.5f, 0}));
}

class MalformedPayload : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.quant_bins = 3;  // so that a 2-bit code can be out of range
    options_.index_coding = IndexCoding::Fixed;
    const auto values = testing::normal_floats(50, 4);
    payload_ = pack({compress(values.data(), shapes_[0], options_)}, options_);
  }

  std::string unpack_error(std::vector<uint8_t> bytes) const {
    return error_of([&] { unpack(bytes.data(), bytes.size(), shapes_, options_); });
  }

  // The payload with its body changed by `change` and the checksum made to match again, as a
  // peer that encodes wrongly (not a line error) would send it.
  std::vector<uint8_t> with_body(const std::function<void(std::vector<uint8_t>&)>& change) const {
    std::vector<uint8_t> bytes = payload_;
    change(bytes);
    fuzz::reseal(bytes);
    return bytes;
  }

  // Byte offset of the bit stream: 32 header + 8 count + 4 shift + 4 x 3 centroids.
  static constexpr size_t kBits = 32 + 8 + 4 + 12;
  const std::vector<std::vector<int64_t>> shapes_ = {{50}};  // one chunk of 50: one value, 6-bit index
  SparseOptions options_;
  std::vector<uint8_t> payload_;
};

TEST_F(MalformedPayload, EveryDefectIsNamed) {
  EXPECT_EQ(unpack_error(payload_), "(no error)");
  auto bytes = payload_;
  bytes[0] = 'X';
  EXPECT_EQ(unpack_error(bytes), "sparse payload: bad magic (not a SparseLoCo payload)");
  bytes = payload_;
  bytes[4] = 1;
  EXPECT_EQ(unpack_error(bytes), "sparse payload: version 1 (this build reads version 2)");
  bytes = payload_;
  bytes[6] = 1;
  EXPECT_EQ(unpack_error(bytes), "sparse payload: index coding rice (this run's is fixed)");
  bytes[6] = 3;
  EXPECT_EQ(unpack_error(bytes), "sparse payload: index coding 3 (valid: 0 fixed, 1 rice, 2 bitmap)");
  bytes = payload_;
  bytes.pop_back();
  EXPECT_NE(unpack_error(bytes).find("body bytes"), std::string::npos);
  EXPECT_NE(unpack_error({payload_.begin(), payload_.begin() + 10}).find("shorter than the 32-byte header"),
            std::string::npos);
  bytes = payload_;
  bytes.back() ^= 0x80;
  EXPECT_EQ(unpack_error(bytes), "sparse payload: checksum mismatch (corrupted in transit)");
  EXPECT_EQ(unpack_error(with_body([](auto& b) { b[32] = 51; })),
            "sparse payload: tensor 0: 51 elements (the model's has 50)");
  const float nan = std::nanf("");
  EXPECT_EQ(unpack_error(with_body([&](auto& b) { std::memcpy(b.data() + 40, &nan, 4); })),
            "sparse payload: tensor 0: shift is not finite");
  EXPECT_EQ(unpack_error(with_body([&](auto& b) { std::memcpy(b.data() + 48, &nan, 4); })),
            "sparse payload: tensor 0: a centroid is not finite");
  const float huge = 3e38f;
  EXPECT_EQ(unpack_error(with_body([&](auto& b) {
              std::memcpy(b.data() + 40, &huge, 4);
              std::memcpy(b.data() + 44, &huge, 4);
            })),
            "sparse payload: tensor 0: shift plus centroid overflows float32");
  // The 6-bit position set to 63 (> 49), then the 2-bit code set to 3 (>= 3 bins).
  EXPECT_EQ(unpack_error(with_body([](auto& b) { b[kBits] = static_cast<uint8_t>((b[kBits] & 0xC0) | 63); })),
            "sparse payload: tensor 0: chunk 0: position 63 outside its chunk of 50");
  EXPECT_EQ(unpack_error(with_body([](auto& b) { b[kBits] = static_cast<uint8_t>(b[kBits] | 0xC0); })),
            "sparse payload: tensor 0: code 3 >= 3 bins");
  SparseOptions other = options_;
  other.topk = 32;
  EXPECT_NE(error_of([&] { unpack(payload_.data(), payload_.size(), shapes_, other); }).find("k 64 per 4096 (expected 32)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { unpack(payload_.data(), payload_.size(), {{50}, {8}}, options_); })
                .find("1 tensors (the model has 2)"),
            std::string::npos);
}

TEST(SparseCodec, RepeatedPositionsInAChunkAreRejected) {
  // k = 256 per 4096 keeps 4 values of a chunk of 64 (6-bit indices): make the second equal the
  // first.
  SparseOptions options;
  options.topk = 256;
  options.index_coding = IndexCoding::Fixed;
  const auto values = testing::normal_floats(64, 5);
  auto bytes = pack({compress(values.data(), {64}, options)}, options);
  const size_t bits = 32 + 8 + 4 + 16;
  const uint32_t stream = bytes[bits] | (bytes[bits + 1] << 8);
  const uint32_t first = stream & 0x3F;
  const uint32_t repeated = (stream & ~(0x3Fu << 6)) | (first << 6);
  bytes[bits] = static_cast<uint8_t>(repeated);
  bytes[bits + 1] = static_cast<uint8_t>(repeated >> 8);
  fuzz::reseal(bytes);
  EXPECT_EQ(error_of([&] { unpack(bytes.data(), bytes.size(), {{64}}, options); }),
            "sparse payload: tensor 0: chunk 0: positions repeat or are out of order");
}

TEST(SparseCodec, NonFiniteInputIsRefused) {
  std::vector<float> values(8, 1.0f);
  values[5] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(error_of([&] { compress(values.data(), {8}, SparseOptions{}); }), "sparse codec: element 5 is not finite");
}

}  // namespace
}  // namespace strait::codec
