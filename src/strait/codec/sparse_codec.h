// SparseLoCo's compressor (ALGORITHMS.md section 3) and its bit-packed wire format, on plain
// arrays of floats and bytes: no LibTorch, no training. A tensor is cut into chunks, each keeps
// its k largest magnitudes, the kept values are quantized to 2 bits with a per-tensor shift and
// centroid table, and an error-feedback buffer carries whatever was not sent to the next round.
//
// Intended usage (one replica, one outer step, every tensor of the model):
//   SparseOptions options;                                    // k = 64 per 4096, 4 bins, β 0.95
//   SparseTensor sent = error_feedback_step(error, delta, shape, options);   // e updated in place
//   std::vector<uint8_t> payload = pack({sent, ...}, options);
//   ... all-gather payloads ...
//   std::vector<SparseTensor> theirs = unpack(bytes, size, shapes, options);  // Error if malformed
//   SparseAggregate aggregate(shapes);  aggregate.add(theirs) for each replica;
//   aggregate.result(tensor, Aggregation::Mean, replicas, out);
//
// Chunks: a 2-D tensor (rows x cols; an N-D one as shape[0] x the rest) is cut into tiles of
// tile_rows x tile_cols, each dimension the whole of it when <= 64, else its largest divisor
// <= 64; a 1-D tensor of n into rows of the same width rule. A chunk is one tile's C elements in
// row-major order (C <= 4096). Each chunk keeps k_C = min(C, max(1, round_half_even(C k / 4096)))
// values: the largest magnitudes, equal magnitudes broken by the lower position.
//
// Quantization of the n values kept in a tensor: shift = their mean, σ their sample standard
// deviation (0 when n <= 1), scale = range σ / bins (1 when 0 or not finite), code =
// clamp(round_half_even((v − shift) / scale + bins / 2), 0, bins − 1); centroid[c] = the mean of
// v − shift over the values with code c (0 for none); a value decodes to centroid[code] + shift
// in float32.
//
// Wire format, version 1, little-endian, "fixed" index coding:
//   header (32 bytes): magic "SPLC", u16 version = 1, u8 index coding (0 = fixed), u8 bins,
//                      u32 k per 4096, u32 tensor count, u64 body bytes, u64 xxh64 of the body
//   body, per tensor:  u64 element count, f32 shift, f32 centroids[bins], then a bit stream
//                      (least significant bit first, padded to a byte): for every chunk its k_C
//                      positions at ceil(log2 C) bits each, increasing; then the 2-bit codes of
//                      all kept values, chunk by chunk.
// So a tensor costs 8 + 4 + 4 bins + ceil(K (ceil(log2 C) + 2) / 8) bytes, K = kept values
// (packed_size), against 4 × elements dense in float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace strait::codec {

struct SparseOptions {
  int64_t topk = 64;         // kept values per 4096 elements of a chunk
  int quant_bins = 4;        // 2-bit codes: the wire format stores 2 bits, so 4 at most
  double quant_range = 6.0;  // scale = range σ / bins
  double error_decay = 0.95;  // β: e ← β e + Δ
};

// How a tensor is cut into chunks (see the header comment).
struct Chunking {
  int64_t rows = 1, cols = 1;            // the tensor seen as rows x cols
  int64_t tile_rows = 1, tile_cols = 1;  // one chunk
  int64_t chunk_size() const { return tile_rows * tile_cols; }
  int64_t chunk_count() const { return (rows / tile_rows) * (cols / tile_cols); }
  // Bits of one position on the wire ("fixed" index coding): ceil(log2 chunk_size()).
  int index_bits() const;
  // Flat (row-major) index in the tensor of position `position` of chunk `chunk`.
  int64_t element(int64_t chunk, int64_t position) const;
};

// Throws strait::Error on an empty shape or a dimension < 1.
Chunking chunking_for(const std::vector<int64_t>& shape);
// k_C for a chunk of `chunk_size` elements at `topk` per 4096.
int64_t kept_per_chunk(int64_t chunk_size, int64_t topk);

// One tensor, compressed.
struct SparseTensor {
  std::vector<int64_t> shape;
  std::vector<uint16_t> positions;  // k_C per chunk, chunk by chunk, increasing within a chunk
  std::vector<uint8_t> codes;       // one per position, < bins
  float shift = 0.0f;
  std::vector<float> centroids;     // bins
  // Decoded value of the i-th kept element.
  float value(size_t i) const { return centroids[codes[i]] + shift; }
};

// Selects and quantizes `values` (the tensor of `shape`, row-major). Throws strait::Error on a
// non-finite value or bad options.
SparseTensor compress(const float* values, const std::vector<int64_t>& shape, const SparseOptions& options);
// Adds every kept value, decoded, to `out` at its element (out holds the tensor's elements).
void add_decoded(const SparseTensor& tensor, float* out);
// One error-feedback round for a tensor of `shape`: e ← β e + Δ, sent = compress(e),
// e ← e − decode(sent) (e keeps the unsent mass and the quantization error). Returns sent.
SparseTensor error_feedback_step(float* error, const float* delta, const std::vector<int64_t>& shape,
                                 const SparseOptions& options);

// The payload of `tensors` and its size by the formula.
std::vector<uint8_t> pack(const std::vector<SparseTensor>& tensors, const SparseOptions& options);
size_t packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options);

// Reads a payload from a peer (untrusted) that must hold tensors of `shapes`, compressed with
// `options`. Throws strait::Error naming what is wrong: magic, version, index coding, bins or k
// other than expected, a body size or checksum that disagrees, a tensor count or element count
// other than the model's, a non-finite shift or centroid, a position outside its chunk or not
// above the previous one, trailing or missing bytes.
std::vector<SparseTensor> unpack(const uint8_t* bytes, size_t size, const std::vector<std::vector<int64_t>>& shapes,
                                 const SparseOptions& options);

enum class Aggregation {
  Mean,  // a coordinate kept by m replicas gets the mean of their m values (SparseLoCo's reference)
  Sum,   // the sum of the replicas' values / R
};

// Sums the replicas' decoded values per coordinate, replica by replica in the order added.
class SparseAggregate {
 public:
  explicit SparseAggregate(const std::vector<std::vector<int64_t>>& shapes);
  // One replica's tensors, in model order.
  void add(const std::vector<SparseTensor>& tensors);
  // Tensor `index`'s aggregate into `out` (its elements), over `replicas` replicas (Sum).
  void result(size_t index, Aggregation aggregation, int64_t replicas, float* out) const;

 private:
  std::vector<std::vector<float>> sums_;
  std::vector<std::vector<int32_t>> counts_;
};

}  // namespace strait::codec
