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
// Wire format, version 2, little-endian:
//   header (32 bytes): magic "SPLC", u16 version = 2, u8 index coding of the body (0 fixed,
//                      1 rice, 2 bitmap), u8 bins, u32 k per 4096, u32 tensor count,
//                      u64 body bytes, u64 xxh64 of the body
//   body, per tensor:  u64 element count, f32 shift, f32 centroids[bins], then a bit stream
//                      (least significant bit first, zero-padded to a byte): for every chunk its
//                      k_C increasing positions in the index coding, then the 2-bit codes of all
//                      kept values, chunk by chunk.
// Index codings of one chunk of C elements keeping k_C positions p_0 < p_1 < ...:
//   fixed   each position in b = ceil(log2 C) bits: k_C b bits (the paper's accounting).
//   rice    the gaps g_i = p_i − p_{i−1} − 1 (p_{−1} = −1) Rice-coded with parameter r: g >> r
//           as that many 1 bits and a 0, then the low r bits of g. r is not sent: both ends
//           derive it from C and k_C as the largest r with k_C 2^r <= C − k_C (0 if none), i.e.
//           floor(log2 of the mean gap), which is the best single r for random positions at
//           k = 32 ... 1024 per 4096 (a per-chunk r would cost 4 bits a chunk and save ~0.01
//           bits an index there).
//   bitmap  C bits, bit j set when position j is kept; its size depends on the shape alone.
//   auto    (options only) the smallest of the three payloads as a whole, ties to the lower
//           number; the header's coding byte says which, so the choice costs nothing and auto
//           is never larger than any single coding. With this r a chunk's Rice code is at most
//           1 bit longer than fixed and never longer than bitmap (checked for every C <= 4096
//           and k_C against the worst positions), so a per-chunk choice with a tag of >= 1 bit
//           could never beat plain rice; auto picks fixed only when rice loses by up to a bit a
//           chunk (e.g. chunks of 1 element, which fixed codes in 0 bits).
// Encoding is canonical: unpack refuses what pack would not have written for what it decodes
// (auto's choice, nonzero padding), so every accepted payload re-packs to the same bytes.
// Version 1 (fixed only) is refused: payloads live for one exchange between replicas of one
// build, so none outlives the build that wrote it.
// Sizes: a tensor costs 8 + 4 + 4 bins + ceil((index bits + 2 K) / 8) bytes, K = kept values,
// against 4 × elements dense in float32. Fixed and bitmap depend only on the shapes
// (packed_size(shapes)); rice and auto depend on the positions (payload_stats(tensors).bytes),
// and max_packed_size(shapes) bounds every coding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace strait::codec {

// How positions travel (see the header comment); the values are the header's byte (Auto is
// an option only: the header holds what it picked).
enum class IndexCoding : uint8_t { Fixed = 0, Rice = 1, Bitmap = 2, Auto = 3 };

// "fixed", "rice", "bitmap", "auto".
std::string to_string(IndexCoding coding);
// The inverse; throws strait::Error naming `name` and the valid names.
IndexCoding index_coding(const std::string& name);

struct SparseOptions {
  int64_t topk = 64;         // kept values per 4096 elements of a chunk
  int quant_bins = 4;        // 2-bit codes: the wire format stores 2 bits, so 4 at most
  double quant_range = 6.0;  // scale = range σ / bins
  double error_decay = 0.95;  // β: e ← β e + Δ
  // Auto: never larger than fixed (the paper's 12 bits per index at C = 4096); rice, ~7.5 bits
  // per index at k = 64 on random positions, in practice.
  IndexCoding index_coding = IndexCoding::Auto;
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

// What a payload of some tensors costs on the wire, as pack writes it.
struct TensorWireStats {
  size_t bytes = 0;        // this tensor's part of the body
  int64_t kept = 0;        // values sent
  int64_t index_bits = 0;  // bits that say where they are
};
struct PayloadStats {
  IndexCoding coding = IndexCoding::Fixed;  // what the body uses (never Auto)
  size_t bytes = 0;                          // the whole payload, header included
  int64_t kept = 0;
  int64_t index_bits = 0;
  std::vector<TensorWireStats> tensors;      // in order
  double bits_per_index() const { return kept > 0 ? static_cast<double>(index_bits) / kept : 0.0; }
};

// The payload of `tensors` (as compress returned them). Throws strait::Error when a tensor's
// positions, codes or centroids do not fit its shape and `options`.
std::vector<uint8_t> pack(const std::vector<SparseTensor>& tensors, const SparseOptions& options);
// Size and bits per index of pack(tensors, options), without writing it. The SparseLoCo
// strategy logs payload_stats(sent, options).bits_per_index().
PayloadStats payload_stats(const std::vector<SparseTensor>& tensors, const SparseOptions& options);
// The size from the shapes alone, for the codings where it depends on nothing else (fixed,
// bitmap); throws strait::Error for rice and auto, whose size depends on the positions (use
// payload_stats(tensors, options).bytes).
size_t packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options);
// The largest payload any tensors of `shapes` can take (exact for fixed and bitmap; auto is at
// most fixed's size; rice at most k_C (r + 1) + ((C − k_C) >> r) bits a chunk): a buffer bound.
size_t max_packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options);
// The payload's expected size when every chunk keeps uniformly random positions (top-k of noise-
// like values): exact for fixed and bitmap, the expectation for rice (each gap's unary quotient
// averaged over the k_C-of-C draws without replacement), and for auto the smallest of the three.
// For planning (strait plan); the real payload of a given tensor is payload_stats' bytes.
double expected_packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options);

// Reads a payload from a peer (untrusted) that must hold tensors of `shapes`, compressed with
// `options` (with index coding Auto: in the coding auto picks for it). Throws strait::Error
// naming what is wrong: magic, version, index coding, bins or k other than expected, more bytes
// than `shapes` can take, a body size or checksum that disagrees, a tensor count or element
// count other than the model's, a non-finite shift or centroid, a position outside its chunk or
// not above the previous one, a Rice code running past its chunk, a bitmap with other than k_C
// bits set, a coding auto would not have picked, nonzero padding, trailing or missing bytes.
// Work and memory are bounded by `shapes`, not by the bytes.
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
