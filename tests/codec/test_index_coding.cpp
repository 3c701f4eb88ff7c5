// The wire format's index codings (fixed, rice, bitmap, auto): round trips over chunk sizes and
// densities from one value a chunk to all of it, bit layouts and sizes computed by hand, auto
// against every single coding, the bits per index Rice reaches at SparseLoCo's densities, every
// malformed body a peer could send, and the fuzzer's seed corpus.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "../../fuzz/sparse_fuzz_cases.h"
#include "sparse_test_support.h"
#include "test_support.h"

namespace strait::codec {
namespace {

using testing::error_of;
using testing::random_sparse_tensor;

const IndexCoding kAllCodings[] = {IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap, IndexCoding::Auto};

SparseOptions with_coding(IndexCoding coding, int64_t topk = 64) {
  SparseOptions options;
  options.index_coding = coding;
  options.topk = topk;
  return options;
}

std::vector<std::vector<int64_t>> shapes_of(const std::vector<SparseTensor>& tensors) {
  std::vector<std::vector<int64_t>> shapes;
  for (const SparseTensor& tensor : tensors) shapes.push_back(tensor.shape);
  return shapes;
}

// pack → unpack gives the tensors back, in as many bytes as payload_stats says (and, for the
// shape-only codings, as packed_size says), never more than max_packed_size.
void expect_round_trip(const std::vector<SparseTensor>& tensors, const SparseOptions& options, const std::string& what) {
  SCOPED_TRACE(what + ", " + to_string(options.index_coding));
  const auto shapes = shapes_of(tensors);
  const std::vector<uint8_t> payload = pack(tensors, options);
  EXPECT_EQ(payload.size(), payload_stats(tensors, options).bytes);
  EXPECT_LE(payload.size(), max_packed_size(shapes, options));
  if (options.index_coding == IndexCoding::Fixed || options.index_coding == IndexCoding::Bitmap) {
    EXPECT_EQ(payload.size(), packed_size(shapes, options));
  }
  testing::expect_same_tensors(unpack(payload.data(), payload.size(), shapes, options), tensors);
}

// One chunk of `shape` with exactly `positions` kept (k_C must be positions.size()).
SparseTensor with_positions(const std::vector<int64_t>& shape, std::vector<uint16_t> positions,
                            const SparseOptions& options) {
  SparseTensor tensor = random_sparse_tensor(shape, options, 7);
  tensor.positions = std::move(positions);
  tensor.codes.assign(tensor.positions.size(), 1);
  return tensor;
}

TEST(IndexCoding, NamesRoundTripAndABadNameListsTheValidOnes) {
  for (IndexCoding coding : kAllCodings) EXPECT_EQ(index_coding(to_string(coding)), coding);
  EXPECT_EQ(to_string(IndexCoding::Rice), "rice");
  EXPECT_EQ(error_of([] { index_coding("golomb"); }),
            "sparse codec: index coding 'golomb' is not one of fixed, rice, bitmap, auto");
  EXPECT_EQ(SparseOptions{}.index_coding, IndexCoding::Auto);
}

TEST(IndexCoding, EveryCodingRoundTripsChunksOf1To4096AtEveryDensity) {
  // Chunks of 1 ({1} and 257 of them in {257}), 7, 15 ({3, 5}), 64 and 4096 ({64, 64}).
  const std::vector<std::vector<int64_t>> shapes = {{1}, {7}, {64}, {64, 64}, {257}, {3, 5}};
  for (int64_t topk : {1, 64, 96, 1024, 4096}) {  // from k_C = 1 everywhere to k_C = C
    for (IndexCoding coding : kAllCodings) {
      const SparseOptions options = with_coding(coding, topk);
      std::vector<SparseTensor> tensors;
      for (size_t t = 0; t < shapes.size(); ++t) {
        tensors.push_back(random_sparse_tensor(shapes[t], options, static_cast<uint32_t>(100 * topk + t)));
      }
      expect_round_trip(tensors, options, "random positions, k " + std::to_string(topk));
      const auto values = testing::normal_floats(64 * 64, static_cast<uint32_t>(topk));
      expect_round_trip({compress(values.data(), {64, 64}, options)}, options, "compressed, k " + std::to_string(topk));
    }
  }
}

TEST(IndexCoding, FirstAndLastPositionsOfAChunkRoundTrip) {
  for (IndexCoding coding : kAllCodings) {
    // k = 2 per 4096 keeps 2 of 4096; 128 keeps 2 of 64; 1170 keeps 2 of 7 (1.9995).
    for (auto [size, topk] : {std::pair<int64_t, int64_t>{4096, 2}, {64, 128}, {7, 1170}}) {
      const std::vector<int64_t> shape = size == 4096 ? std::vector<int64_t>{64, 64} : std::vector<int64_t>{size};
      const auto last = static_cast<uint16_t>(size - 1);
      const SparseOptions two = with_coding(coding, topk);
      expect_round_trip({with_positions(shape, {0, last}, two)}, two, "0 and C-1 of " + std::to_string(size));
      expect_round_trip({with_positions(shape, {static_cast<uint16_t>(last - 1), last}, two)}, two,
                        "the last two of " + std::to_string(size));
      const SparseOptions one = with_coding(coding, 1);
      expect_round_trip({with_positions(shape, {0}, one)}, one, "only 0 of " + std::to_string(size));
      expect_round_trip({with_positions(shape, {last}, one)}, one, "only C-1 of " + std::to_string(size));
    }
  }
}

TEST(IndexCoding, BitLayoutsAndSizesMatchAHandEncoding) {
  // One chunk of 7 keeps 2 (k = 1170 per 4096): positions 1 and 5, codes 3 and 1. The bit
  // stream starts after 32 header + 8 count + 4 shift + 16 centroid bytes.
  constexpr size_t kStream = 60;
  auto stream_of = [](IndexCoding coding) {
    const SparseOptions options = with_coding(coding, 1170);
    SparseTensor tensor = with_positions({7}, {1, 5}, options);
    tensor.codes = {3, 1};
    const std::vector<uint8_t> payload = pack({tensor}, options);
    EXPECT_EQ(payload.size(), kStream + 2) << to_string(coding);
    return std::vector<uint8_t>(payload.begin() + kStream, payload.end());
  };
  // fixed, 3 bits each: 1 = 100, 5 = 101, then codes 11 and 10 (least significant bit first):
  // 1001011110 -> bytes 0b11101001, 0b01.
  EXPECT_EQ(stream_of(IndexCoding::Fixed), (std::vector<uint8_t>{0xE9, 0x01}));
  // rice: r = 1 (2 x 2 <= 7 - 2 < 2 x 4); gap 1 -> 0 then 1; gap 3 -> 10 then 1; then the codes:
  // 01101 1110 -> 0b11110110, 0b0.
  EXPECT_EQ(stream_of(IndexCoding::Rice), (std::vector<uint8_t>{0xF6, 0x00}));
  // bitmap: 0100010, then the codes: 0100010 1110 -> 0b10100010, 0b011.
  EXPECT_EQ(stream_of(IndexCoding::Bitmap), (std::vector<uint8_t>{0xA2, 0x03}));
  // All three take 2 bytes: auto takes the lowest number, fixed.
  const SparseOptions automatic = with_coding(IndexCoding::Auto, 1170);
  const auto payload = pack({with_positions({7}, {1, 5}, automatic)}, automatic);
  EXPECT_EQ(payload[6], 0) << "the header's index coding";
  EXPECT_EQ(payload_stats({with_positions({7}, {1, 5}, automatic)}, automatic).coding, IndexCoding::Fixed);

  // A chunk of 64 keeping 4 (k = 256): r = 3 (4 x 8 <= 60 < 4 x 16); positions 0, 9, 10, 63
  // have gaps 0, 8, 0, 52: 4 x (3 + 1) bits + quotients 0 + 1 + 0 + 6 = 23 bits, against fixed's
  // 4 x 6 = 24 and bitmap's 64; with 8 code bits, 4, 4 and 9 bytes of stream.
  const std::vector<std::pair<IndexCoding, int64_t>> expected = {
      {IndexCoding::Fixed, 24}, {IndexCoding::Rice, 23}, {IndexCoding::Bitmap, 64}};
  for (auto [coding, bits] : expected) {
    const SparseOptions options = with_coding(coding, 256);
    const PayloadStats stats = payload_stats({with_positions({64}, {0, 9, 10, 63}, options)}, options);
    EXPECT_EQ(stats.index_bits, bits) << to_string(coding);
    EXPECT_EQ(stats.kept, 4);
    EXPECT_DOUBLE_EQ(stats.bits_per_index(), bits / 4.0);
    EXPECT_EQ(stats.bytes, 32 + 28 + static_cast<size_t>((bits + 8 + 7) / 8)) << to_string(coding);
    EXPECT_EQ(stats.tensors.at(0).bytes, stats.bytes - 32);
  }
  EXPECT_EQ(max_packed_size({{64}}, with_coding(IndexCoding::Rice, 256)), 32u + 28 + 4);  // 23 is rice's worst here
  EXPECT_EQ(max_packed_size({{64}}, with_coding(IndexCoding::Auto, 256)), packed_size({{64}}, with_coding(IndexCoding::Fixed, 256)));
  EXPECT_EQ(error_of([] { packed_size({{64}}, with_coding(IndexCoding::Rice)); }),
            "sparse codec: the size of a rice payload depends on the positions; use payload_stats(tensors, "
            "options).bytes, or max_packed_size(shapes, options) for a bound");
}

TEST(IndexCoding, AutoIsNeverLargerThanAnySingleCoding) {
  const std::vector<std::vector<std::vector<int64_t>>> shape_sets = {
      {{64, 64}, {100}}, {{257}}, {{64}, {7}, {1}}, {{128, 96}, {3, 5}}};
  for (int64_t topk : {1, 16, 64, 96, 512, 2048, 4096}) {
    for (size_t s = 0; s < shape_sets.size(); ++s) {
      std::vector<SparseTensor> tensors;
      for (size_t t = 0; t < shape_sets[s].size(); ++t) {
        tensors.push_back(random_sparse_tensor(shape_sets[s][t], with_coding(IndexCoding::Auto, topk),
                                               static_cast<uint32_t>(1000 * s + topk + t)));
      }
      const size_t automatic = payload_stats(tensors, with_coding(IndexCoding::Auto, topk)).bytes;
      size_t smallest = SIZE_MAX;
      for (IndexCoding single : {IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap}) {
        const size_t bytes = payload_stats(tensors, with_coding(single, topk)).bytes;
        EXPECT_LE(automatic, bytes) << "set " << s << ", k " << topk << ", " << to_string(single);
        smallest = std::min(smallest, bytes);
      }
      EXPECT_EQ(automatic, smallest) << "set " << s << ", k " << topk;
    }
  }
  // Chunks of one element: fixed codes their only position in 0 bits, rice in 1.
  const SparseOptions automatic = with_coding(IndexCoding::Auto);
  EXPECT_EQ(payload_stats({random_sparse_tensor({257}, automatic, 1)}, automatic).coding, IndexCoding::Fixed);
  EXPECT_EQ(payload_stats({random_sparse_tensor({64, 64}, automatic, 1)}, automatic).coding, IndexCoding::Rice);
}

TEST(IndexCoding, RiceNeedsAbout7Point5BitsPerIndexAtK64And6Point9AtK96) {
  // Top-k of Gaussian noise: positions spread uniformly over 64 chunks of 4096. Measured (this
  // data): k = 64: fixed 12, rice 7.49, bitmap 64, auto 7.49 (rice); k = 96: fixed 12, rice 6.86,
  // bitmap 42.67, auto 6.86 (rice). ALGORITHMS.md expected ~7-8 bits.
  const std::vector<float> values = testing::normal_floats(64 * 4096, 9);
  for (auto [topk, rice_at_most] : {std::pair<int64_t, double>{64, 7.6}, {96, 7.0}}) {
    const SparseTensor sent = compress(values.data(), {64, 4096}, with_coding(IndexCoding::Auto, topk));
    std::map<IndexCoding, double> bits;
    for (IndexCoding coding : kAllCodings) bits[coding] = payload_stats({sent}, with_coding(coding, topk)).bits_per_index();
    std::cout << "k " << topk << " per 4096, bits per index: fixed " << bits[IndexCoding::Fixed] << ", rice "
              << bits[IndexCoding::Rice] << ", bitmap " << bits[IndexCoding::Bitmap] << ", auto "
              << bits[IndexCoding::Auto] << "\n";
    EXPECT_EQ(bits[IndexCoding::Fixed], 12.0);
    EXPECT_DOUBLE_EQ(bits[IndexCoding::Bitmap], 4096.0 / topk);
    EXPECT_LT(bits[IndexCoding::Rice], rice_at_most);
    EXPECT_GT(bits[IndexCoding::Rice], rice_at_most - 0.5);  // the entropy of the gaps is not much lower
    EXPECT_EQ(bits[IndexCoding::Auto], bits[IndexCoding::Rice]);
  }
}

// One chunk of 64 keeping 4 (k = 256 per 4096) with 3 bins; payloads changed by hand and
// resealed (body size and checksum right again), as a peer that encodes wrongly would send them.
class MalformedBody : public ::testing::Test {
 protected:
  static SparseOptions options(IndexCoding coding) {
    SparseOptions o = with_coding(coding, 256);
    o.quant_bins = 3;
    return o;
  }
  static std::vector<uint8_t> payload(IndexCoding coding, std::vector<uint16_t> positions) {
    return pack({with_positions({64}, std::move(positions), options(coding))}, options(coding));
  }
  // unpack's error for `bytes` after `change` and a reseal, under `coding`.
  static std::string error(std::vector<uint8_t> bytes, IndexCoding coding,
                           const std::function<void(std::vector<uint8_t>&)>& change) {
    change(bytes);
    fuzz::reseal(bytes);
    return error_of([&] { unpack(bytes.data(), bytes.size(), {{64}}, options(coding)); });
  }
  static constexpr size_t kStream = 32 + 8 + 4 + 12;  // header, count, shift, 3 centroids
};

TEST_F(MalformedBody, RiceCodesThatLeaveTheChunkAreRefused) {
  const auto rice = payload(IndexCoding::Rice, {0, 9, 10, 63});  // 23 index bits, see above
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto&) {}), "(no error)");
  // Every bit 1: the first quotient's run of ones passes the chunk's end after 8 ones (8 x 8 > 62).
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { std::fill(b.begin() + kStream, b.end(), 0xFF); }),
            "sparse payload: tensor 0: chunk 0: Rice code of position 0 runs past the chunk of 64");
  // The last gap's low bits (stream bits 20-22, 52 = 6 x 8 + 4) made 7: position 10 + 1 + 55.
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { b[kStream + 2] |= 0x30; }),
            "sparse payload: tensor 0: chunk 0: Rice gap puts position 3 at 66, outside the chunk of 64");
  // Bit 31 is padding after 23 index and 8 code bits.
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { b[kStream + 3] |= 0x80; }),
            "sparse payload: tensor 0: nonzero padding bits after its bit stream");
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { b.pop_back(); }),
            "sparse payload: tensor 0: the body ends inside its bit stream");
  // Positions 0-3 take 16 + 8 bits, a byte less than rice's worst case here: room for a byte
  // that is not part of any tensor.
  EXPECT_EQ(error(payload(IndexCoding::Rice, {0, 1, 2, 3}), IndexCoding::Rice, [](auto& b) { b.push_back(0); }),
            "sparse payload: 1 trailing bytes after the last tensor");
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { b.push_back(0); }),
            "sparse payload: 61 bytes, more than the 60 that the model's rice payload can take");
  EXPECT_EQ(error(rice, IndexCoding::Rice, [](auto& b) { b.resize(40); }),
            "sparse payload: tensor 0: the body ends inside its header");
}

TEST_F(MalformedBody, BitmapsWithOtherThanKSetBitsAreRefused) {
  const auto bitmap = payload(IndexCoding::Bitmap, {0, 9, 10, 63});
  EXPECT_EQ(error(bitmap, IndexCoding::Bitmap, [](auto&) {}), "(no error)");
  EXPECT_EQ(error(bitmap, IndexCoding::Bitmap, [](auto& b) { b[kStream] |= 0x02; }),
            "sparse payload: tensor 0: chunk 0: bitmap has 5 bits set (expected 4)");
  EXPECT_EQ(error(bitmap, IndexCoding::Bitmap, [](auto& b) { b[kStream] &= 0xFE; }),
            "sparse payload: tensor 0: chunk 0: bitmap has 3 bits set (expected 4)");
  EXPECT_EQ(error(bitmap, IndexCoding::Bitmap, [](auto& b) { b.pop_back(); }),
            "sparse payload: tensor 0: the body ends inside its bit stream");
}

TEST_F(MalformedBody, FixedPositionsMustBeInsideAndIncreasing) {
  const auto fixed = payload(IndexCoding::Fixed, {0, 9, 10, 63});
  EXPECT_EQ(error(fixed, IndexCoding::Fixed, [](auto&) {}), "(no error)");
  // Position 1 (stream bits 6-11) made 0, equal to position 0.
  EXPECT_EQ(error(fixed, IndexCoding::Fixed, [](auto& b) {
              b[kStream] &= 0x3F;
              b[kStream + 1] &= 0xF0;
            }),
            "sparse payload: tensor 0: chunk 0: positions repeat or are out of order");
  EXPECT_EQ(error(fixed, IndexCoding::Fixed, [](auto& b) { b.pop_back(); }),
            "sparse payload: tensor 0: the body ends inside its bit stream");
}

TEST_F(MalformedBody, TheHeadersCodingMustBeTheRunsOrWhatAutoPicks) {
  // Positions 0, 9, 10, 63: fixed's 24 index bits and rice's 23 both make 4 bytes with the
  // codes, so auto picks fixed; a rice body is valid under rice but not under auto.
  const auto rice = payload(IndexCoding::Rice, {0, 9, 10, 63});
  EXPECT_EQ(error(rice, IndexCoding::Auto, [](auto&) {}),
            "sparse payload: body in rice coding where auto picks fixed (smaller, or as small and first in fixed, rice, "
            "bitmap)");
  EXPECT_EQ(error(rice, IndexCoding::Fixed, [](auto&) {}), "sparse payload: index coding rice (this run's is fixed)");
  EXPECT_EQ(error(payload(IndexCoding::Auto, {0, 9, 10, 63}), IndexCoding::Auto, [](auto&) {}), "(no error)");
  EXPECT_EQ(error(rice, IndexCoding::Auto, [](auto& b) { b[6] = 3; }),
            "sparse payload: index coding 3 (valid: 0 fixed, 1 rice, 2 bitmap)");
}

TEST(FuzzSeedCorpus, HoldsAValidPayloadOfEveryFuzzCase) {
  // fuzz/corpus/case-NN: the selector byte (case NN, reseal bit set) and a payload of case NN.
  // STRAIT_WRITE_FUZZ_SEEDS=1 rewrites them (after a wire format change).
  namespace fs = std::filesystem;
  const fs::path corpus = fs::path(STRAIT_SOURCE_DIR) / "fuzz" / "corpus";
  const auto cases = fuzz::fuzz_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path seed = corpus / ("case-" + std::string(i < 10 ? "0" : "") + std::to_string(i));
    if (std::getenv("STRAIT_WRITE_FUZZ_SEEDS")) {
      std::vector<SparseTensor> tensors;
      for (const auto& shape : cases[i].shapes) tensors.push_back(random_sparse_tensor(shape, cases[i].options, i));
      std::vector<uint8_t> bytes = {static_cast<uint8_t>(fuzz::kResealBit | i)};
      const auto payload = pack(tensors, cases[i].options);
      bytes.insert(bytes.end(), payload.begin(), payload.end());
      std::ofstream(seed, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    std::ifstream file(seed, std::ios::binary);
    ASSERT_TRUE(file) << seed << " is missing (STRAIT_WRITE_FUZZ_SEEDS=1 writes it)";
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    ASSERT_GE(bytes.size(), 2u) << seed;
    EXPECT_EQ(bytes[0], fuzz::kResealBit | i) << seed;
    EXPECT_EQ(error_of([&] { unpack(bytes.data() + 1, bytes.size() - 1, cases[i].shapes, cases[i].options); }),
              "(no error)")
        << seed;
  }
}

}  // namespace
}  // namespace strait::codec
