#include "strait/codec/sparse_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "strait/core/checksum.h"
#include "strait/core/error.h"

namespace strait::codec {

namespace {

constexpr char kMagic[4] = {'S', 'P', 'L', 'C'};
constexpr uint16_t kVersion = 2;
constexpr size_t kHeaderBytes = 32;
constexpr int kCodeBits = 2;
constexpr std::array<IndexCoding, 3> kBodyCodings = {IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap};
constexpr const char* kCodingNames[] = {"fixed", "rice", "bitmap", "auto"};
constexpr int64_t kMaxTile = 64;

// The whole dimension when it is <= 64, else its largest divisor <= 64.
int64_t tile_extent(int64_t extent) {
  if (extent <= kMaxTile) return extent;
  for (int64_t d = kMaxTile; d > 1; --d) {
    if (extent % d == 0) return d;
  }
  return 1;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

void check_options(const SparseOptions& options) {
  if (options.topk < 1 || options.topk > 4096) {
    throw Error("sparse codec: topk must be in [1, 4096] per 4096 elements, got " + std::to_string(options.topk));
  }
  if (options.quant_bins < 1 || options.quant_bins > (1 << kCodeBits)) {
    throw Error("sparse codec: quant_bins must be in [1, 4] (codes are 2 bits), got " +
                std::to_string(options.quant_bins));
  }
  if (!(options.quant_range > 0) || !std::isfinite(options.quant_range)) {
    throw Error("sparse codec: quant_range must be a positive number, got " + std::to_string(options.quant_range));
  }
}

// A tensor's part of the body: element count, shift, centroids, then its bit stream padded to a
// byte.
size_t tensor_bytes(int64_t index_bits, int64_t kept, const SparseOptions& options) {
  const int64_t bits = index_bits + kept * kCodeBits;
  return 8 + 4 + 4 * static_cast<size_t>(options.quant_bins) + static_cast<size_t>((bits + 7) / 8);
}

// Rice parameter of a chunk of `chunk_size` keeping `keep`: the largest r with keep 2^r <=
// chunk_size − keep (the gaps' total), i.e. floor(log2 of the mean gap); 0 when the mean gap is
// below 1. Derived, not sent (see the header comment).
int rice_parameter(int64_t chunk_size, int64_t keep) {
  int r = 0;
  while ((keep << (r + 1)) <= chunk_size - keep) ++r;
  return r;
}

// Bits of one chunk's `keep` increasing positions in `coding` (not Auto).
int64_t chunk_index_bits(IndexCoding coding, const Chunking& chunking, const uint16_t* positions, int64_t keep) {
  if (coding == IndexCoding::Fixed) return keep * chunking.index_bits();
  if (coding == IndexCoding::Bitmap) return chunking.chunk_size();
  const int r = rice_parameter(chunking.chunk_size(), keep);
  int64_t bits = keep * (r + 1), previous = -1;
  for (int64_t i = 0; i < keep; ++i) {
    bits += (positions[i] - previous - 1) >> r;  // the unary quotient
    previous = positions[i];
  }
  return bits;
}

// The most bits a chunk's positions can take in `coding` (not Auto). Rice: the quotients sum to
// at most (C − k_C) >> r, because the gaps sum to at most C − k_C.
int64_t max_chunk_index_bits(IndexCoding coding, const Chunking& chunking, int64_t keep) {
  if (coding != IndexCoding::Rice) return chunk_index_bits(coding, chunking, nullptr, keep);
  const int r = rice_parameter(chunking.chunk_size(), keep);
  return keep * (r + 1) + ((chunking.chunk_size() - keep) >> r);
}

// What pack writes: the body's coding and each tensor's size in it.
struct PayloadPlan {
  IndexCoding coding = IndexCoding::Fixed;
  std::vector<TensorWireStats> tensors;
  size_t bytes = kHeaderBytes;
};

// Throws unless `tensor` is what compress makes for its shape with `options`: k_C positions per
// chunk, increasing and inside it, a code below bins for each, bins centroids.
void check_tensor(const SparseTensor& tensor, size_t index, const SparseOptions& options) {
  const Chunking chunking = chunking_for(tensor.shape);
  const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
  const std::string which = "sparse codec: tensor " + std::to_string(index) + ": ";
  if (static_cast<int64_t>(tensor.positions.size()) != chunking.chunk_count() * keep ||
      tensor.codes.size() != tensor.positions.size() ||
      tensor.centroids.size() != static_cast<size_t>(options.quant_bins)) {
    throw Error(which + std::to_string(tensor.positions.size()) + " positions, " + std::to_string(tensor.codes.size()) +
                " codes and " + std::to_string(tensor.centroids.size()) + " centroids; its shape and options take " +
                std::to_string(chunking.chunk_count() * keep) + ", as many and " + std::to_string(options.quant_bins));
  }
  for (size_t i = 0; i < tensor.positions.size(); ++i) {
    const bool first = static_cast<int64_t>(i) % keep == 0;
    if (tensor.positions[i] >= chunking.chunk_size() || (!first && tensor.positions[i] <= tensor.positions[i - 1]) ||
        tensor.codes[i] >= options.quant_bins) {
      throw Error(which + "kept value " + std::to_string(i) + " has a position outside its chunk or out of order, " +
                  "or a code >= bins");
    }
  }
}

// The payload in the coding of `options`; with Auto, the smallest of the three whole payloads
// (ties to the lower coding number, so fixed before rice before bitmap).
PayloadPlan plan_payload(const std::vector<SparseTensor>& tensors, const SparseOptions& options) {
  std::vector<std::array<int64_t, kBodyCodings.size()>> index_bits(tensors.size());
  std::array<size_t, kBodyCodings.size()> bytes;
  bytes.fill(kHeaderBytes);
  for (size_t t = 0; t < tensors.size(); ++t) {
    check_tensor(tensors[t], t, options);
    const Chunking chunking = chunking_for(tensors[t].shape);
    const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
    for (size_t k = 0; k < kBodyCodings.size(); ++k) {
      // Only the coding of `options` when it is not Auto: the others are not needed.
      if (options.index_coding != IndexCoding::Auto && kBodyCodings[k] != options.index_coding) continue;
      for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
        index_bits[t][k] += chunk_index_bits(kBodyCodings[k], chunking, &tensors[t].positions[c * keep], keep);
      }
      bytes[k] += tensor_bytes(index_bits[t][k], static_cast<int64_t>(tensors[t].positions.size()), options);
    }
  }
  PayloadPlan plan;
  plan.coding = options.index_coding;
  if (plan.coding == IndexCoding::Auto) {
    plan.coding = kBodyCodings[static_cast<size_t>(std::min_element(bytes.begin(), bytes.end()) - bytes.begin())];
  }
  const auto k = static_cast<size_t>(plan.coding);
  plan.bytes = bytes[k];
  for (size_t t = 0; t < tensors.size(); ++t) {
    TensorWireStats& tensor = plan.tensors.emplace_back();
    tensor.kept = static_cast<int64_t>(tensors[t].positions.size());
    tensor.index_bits = index_bits[t][k];
    tensor.bytes = tensor_bytes(tensor.index_bits, tensor.kept, options);
  }
  return plan;
}

// Bits appended least significant first.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void write(uint32_t value, int bits) {
    for (int b = 0; b < bits; ++b, ++used_) {
      if (used_ % 8 == 0) out_.push_back(0);
      out_.back() |= static_cast<uint8_t>(((value >> b) & 1u) << (used_ % 8));
    }
  }

 private:
  std::vector<uint8_t>& out_;
  int64_t used_ = 0;
};

// Reads what BitWriter wrote, never past `size` bytes: the stream comes from a peer, so running
// out is an Error naming `context` (which tensor).
class BitReader {
 public:
  BitReader(const uint8_t* bytes, size_t size, std::string context)
      : bytes_(bytes), size_bits_(static_cast<int64_t>(size) * 8), context_(std::move(context)) {}
  uint32_t read(int bits) {
    if (used_ + bits > size_bits_) throw Error("sparse payload: " + context_ + "the body ends inside its bit stream");
    uint32_t value = 0;
    for (int b = 0; b < bits; ++b, ++used_) value |= static_cast<uint32_t>((bytes_[used_ / 8] >> (used_ % 8)) & 1u) << b;
    return value;
  }
  // Bytes read so far, the last one whole.
  size_t bytes_used() const { return static_cast<size_t>((used_ + 7) / 8); }
  // Whether the unread bits of the last byte read are 0, as BitWriter leaves them.
  bool padding_is_zero() const { return used_ % 8 == 0 || (bytes_[used_ / 8] >> (used_ % 8)) == 0; }

 private:
  const uint8_t* bytes_;
  int64_t size_bits_;
  std::string context_;
  int64_t used_ = 0;
};

// One chunk's `keep` increasing positions in a single coding (the header comment's layout).
void write_positions(BitWriter& bits, IndexCoding coding, const Chunking& chunking, const uint16_t* positions,
                     int64_t keep) {
  if (coding == IndexCoding::Fixed) {
    for (int64_t i = 0; i < keep; ++i) bits.write(positions[i], chunking.index_bits());
  } else if (coding == IndexCoding::Bitmap) {
    for (int64_t j = 0, i = 0; j < chunking.chunk_size(); ++j) {
      const bool kept = i < keep && positions[i] == j;
      bits.write(kept, 1);
      i += kept;
    }
  } else {
    const int r = rice_parameter(chunking.chunk_size(), keep);
    int64_t previous = -1;
    for (int64_t i = 0; i < keep; ++i) {
      const auto gap = static_cast<uint32_t>(positions[i] - previous - 1);
      for (uint32_t q = gap >> r; q > 0; --q) bits.write(1, 1);
      bits.write(0, 1);
      bits.write(gap & ((1u << r) - 1), r);
      previous = positions[i];
    }
  }
}

// Reads what write_positions wrote for chunk `chunk` and appends it to `positions`, refusing
// anything write_positions could not have written; `fail` throws.
template <typename Fail>
void read_positions(BitReader& bits, IndexCoding coding, const Chunking& chunking, int64_t keep, int64_t chunk,
                    std::vector<uint16_t>& positions, const Fail& fail) {
  const int64_t size = chunking.chunk_size();
  const std::string where = "chunk " + std::to_string(chunk) + ": ";
  if (coding == IndexCoding::Bitmap) {
    int64_t set = 0;
    for (int64_t j = 0; j < size; ++j) {
      if (bits.read(1) && ++set <= keep) positions.push_back(static_cast<uint16_t>(j));
    }
    if (set != keep) fail(where + "bitmap has " + std::to_string(set) + " bits set (expected " + std::to_string(keep) + ")");
    return;
  }
  const int r = rice_parameter(size, keep);
  int64_t previous = -1;
  for (int64_t i = 0; i < keep; ++i) {
    int64_t position;
    if (coding == IndexCoding::Fixed) {
      position = bits.read(chunking.index_bits());
      if (position >= size) {
        fail(where + "position " + std::to_string(position) + " outside its chunk of " + std::to_string(size));
      }
      if (position <= previous) fail(where + "positions repeat or are out of order");
    } else {
      // The quotient's run of 1 bits stops at the first gap that would leave the chunk, so a
      // peer cannot make this loop longer than the chunk.
      int64_t quotient = 0;
      while (bits.read(1)) {
        if ((++quotient << r) > size - 2 - previous) {
          fail(where + "Rice code of position " + std::to_string(i) + " runs past the chunk of " + std::to_string(size));
        }
      }
      position = previous + 1 + ((quotient << r) | bits.read(r));
      if (position >= size) {
        fail(where + "Rice gap puts position " + std::to_string(i) + " at " + std::to_string(position) +
             ", outside the chunk of " + std::to_string(size));
      }
    }
    positions.push_back(static_cast<uint16_t>(position));
    previous = position;
  }
}

template <typename T>
void put(std::vector<uint8_t>& out, T value) {
  uint8_t raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));  // the hosts strait runs on are little-endian
  out.insert(out.end(), raw, raw + sizeof(T));
}

template <typename T>
T get(const uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

// Quantizes the kept values of one tensor (see the header comment) into `tensor`'s codes,
// shift and centroids.
void quantize(const std::vector<float>& kept, const SparseOptions& options, SparseTensor& tensor) {
  const size_t n = kept.size();
  double mean = 0.0;
  for (float v : kept) mean += v;
  mean = n ? mean / static_cast<double>(n) : 0.0;
  double squares = 0.0;
  for (float v : kept) squares += (v - mean) * (v - mean);
  const double sigma = n > 1 ? std::sqrt(squares / static_cast<double>(n - 1)) : 0.0;
  double scale = options.quant_range * sigma / options.quant_bins;
  if (scale == 0.0 || !std::isfinite(scale)) scale = 1.0;
  const int bins = options.quant_bins;
  std::vector<double> totals(static_cast<size_t>(bins), 0.0);
  std::vector<int64_t> members(static_cast<size_t>(bins), 0);
  tensor.codes.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double unclamped = std::nearbyint((kept[i] - mean) / scale + bins / 2.0);  // half to even
    const int code = static_cast<int>(std::clamp(unclamped, 0.0, static_cast<double>(bins - 1)));
    tensor.codes[i] = static_cast<uint8_t>(code);
    totals[static_cast<size_t>(code)] += kept[i] - mean;
    ++members[static_cast<size_t>(code)];
  }
  tensor.shift = static_cast<float>(mean);
  tensor.centroids.assign(static_cast<size_t>(bins), 0.0f);
  for (int c = 0; c < bins; ++c) {
    if (members[c]) tensor.centroids[c] = static_cast<float>(totals[c] / static_cast<double>(members[c]));
  }
}

}  // namespace

std::string to_string(IndexCoding coding) { return kCodingNames[static_cast<size_t>(coding)]; }

IndexCoding index_coding(const std::string& name) {
  for (size_t i = 0; i < std::size(kCodingNames); ++i) {
    if (name == kCodingNames[i]) return static_cast<IndexCoding>(i);
  }
  throw Error("sparse codec: index coding '" + name + "' is not one of fixed, rice, bitmap, auto");
}

int Chunking::index_bits() const {
  int bits = 0;
  while ((int64_t{1} << bits) < chunk_size()) ++bits;
  return bits;
}

int64_t Chunking::element(int64_t chunk, int64_t position) const {
  const int64_t tiles_per_row = cols / tile_cols;
  const int64_t tile_row = chunk / tiles_per_row, tile_col = chunk % tiles_per_row;
  const int64_t row = tile_row * tile_rows + position / tile_cols;
  const int64_t col = tile_col * tile_cols + position % tile_cols;
  return row * cols + col;
}

Chunking chunking_for(const std::vector<int64_t>& shape) {
  if (shape.empty()) throw Error("sparse codec: a tensor needs at least one dimension");
  for (int64_t extent : shape) {
    if (extent < 1) throw Error("sparse codec: dimension " + std::to_string(extent) + " is not positive");
  }
  Chunking chunking;
  if (shape.size() == 1) {
    chunking.cols = shape[0];
  } else {
    chunking.rows = shape[0];
    chunking.cols = element_count(shape) / shape[0];
  }
  chunking.tile_rows = shape.size() == 1 ? 1 : tile_extent(chunking.rows);
  chunking.tile_cols = tile_extent(chunking.cols);
  return chunking;
}

int64_t kept_per_chunk(int64_t chunk_size, int64_t topk) {
  const double exact = static_cast<double>(chunk_size) * static_cast<double>(topk) / 4096.0;
  const auto rounded = static_cast<int64_t>(std::nearbyint(exact));  // half to even
  return std::min(chunk_size, std::max<int64_t>(1, rounded));
}

SparseTensor compress(const float* values, const std::vector<int64_t>& shape, const SparseOptions& options) {
  check_options(options);
  const Chunking chunking = chunking_for(shape);
  const int64_t size = chunking.chunk_size(), keep = kept_per_chunk(size, options.topk);
  SparseTensor tensor;
  tensor.shape = shape;
  std::vector<float> chunk(static_cast<size_t>(size)), kept;
  std::vector<uint16_t> order(static_cast<size_t>(size));
  for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
    for (int64_t j = 0; j < size; ++j) {
      chunk[j] = values[chunking.element(c, j)];
      if (!std::isfinite(chunk[j])) {
        throw Error("sparse codec: element " + std::to_string(chunking.element(c, j)) + " is not finite");
      }
    }
    std::iota(order.begin(), order.end(), 0);
    // Larger magnitude first; equal magnitudes: lower position first. A strict total order, so
    // every replica picks the same elements.
    auto before = [&](uint16_t a, uint16_t b) {
      const float ma = std::fabs(chunk[a]), mb = std::fabs(chunk[b]);
      return ma != mb ? ma > mb : a < b;
    };
    std::nth_element(order.begin(), order.begin() + (keep - 1), order.end(), before);
    std::sort(order.begin(), order.begin() + keep);
    for (int64_t i = 0; i < keep; ++i) {
      tensor.positions.push_back(order[i]);
      kept.push_back(chunk[order[i]]);
    }
  }
  quantize(kept, options, tensor);
  return tensor;
}

void add_decoded(const SparseTensor& tensor, float* out) {
  const Chunking chunking = chunking_for(tensor.shape);
  const int64_t keep = static_cast<int64_t>(tensor.positions.size()) / chunking.chunk_count();
  for (size_t i = 0; i < tensor.positions.size(); ++i) {
    out[chunking.element(static_cast<int64_t>(i) / keep, tensor.positions[i])] += tensor.value(i);
  }
}

SparseTensor error_feedback_step(float* error, const float* delta, const std::vector<int64_t>& shape,
                                 const SparseOptions& options) {
  const int64_t n = element_count(shape);
  const auto decay = static_cast<float>(options.error_decay);
  for (int64_t i = 0; i < n; ++i) error[i] = decay * error[i] + delta[i];
  SparseTensor sent = compress(error, shape, options);
  const Chunking chunking = chunking_for(shape);
  const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
  for (size_t i = 0; i < sent.positions.size(); ++i) {
    error[chunking.element(static_cast<int64_t>(i) / keep, sent.positions[i])] -= sent.value(i);
  }
  return sent;
}

PayloadStats payload_stats(const std::vector<SparseTensor>& tensors, const SparseOptions& options) {
  check_options(options);
  PayloadPlan plan = plan_payload(tensors, options);
  PayloadStats stats;
  stats.coding = plan.coding;
  stats.bytes = plan.bytes;
  for (const TensorWireStats& tensor : plan.tensors) {
    stats.kept += tensor.kept;
    stats.index_bits += tensor.index_bits;
  }
  stats.tensors = std::move(plan.tensors);
  return stats;
}

size_t max_packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options) {
  check_options(options);
  // Auto picks the smallest of three payloads, one of them fixed.
  const IndexCoding coding = options.index_coding == IndexCoding::Auto ? IndexCoding::Fixed : options.index_coding;
  size_t total = kHeaderBytes;
  for (const auto& shape : shapes) {
    const Chunking chunking = chunking_for(shape);
    const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
    total += tensor_bytes(chunking.chunk_count() * max_chunk_index_bits(coding, chunking, keep),
                          chunking.chunk_count() * keep, options);
  }
  return total;
}

namespace {

// E[sum of floor(g / 2^r)] over the k gaps before the kept positions of a chunk of C elements
// keeping k uniformly random positions: by exchangeability every gap has the law of the first,
// P(g >= m) = C(C - m, k) / C(C, k), and E[floor(g / 2^r)] = sum over j >= 1 of P(g >= j 2^r).
double expected_rice_quotients(int64_t chunk_size, int64_t keep, int r) {
  double total = 0;
  for (int64_t m = int64_t{1} << r; m <= chunk_size - keep; m += int64_t{1} << r) {
    double log_p = 0;  // log of prod_{i < k} (C - m - i) / (C - i)
    for (int64_t i = 0; i < keep; ++i) log_p += std::log(static_cast<double>(chunk_size - m - i) / (chunk_size - i));
    const double p = std::exp(log_p);
    total += p;
    if (p < 1e-12) break;  // the remaining terms are smaller still
  }
  return keep * total;
}

}  // namespace

double expected_packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options) {
  check_options(options);
  double smallest = 0;
  bool first = true;
  for (const IndexCoding coding : kBodyCodings) {
    if (options.index_coding != IndexCoding::Auto && coding != options.index_coding) continue;
    double total = kHeaderBytes;
    for (const auto& shape : shapes) {
      const Chunking chunking = chunking_for(shape);
      const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
      double index_bits = static_cast<double>(max_chunk_index_bits(coding, chunking, keep));
      if (coding == IndexCoding::Rice) {
        const int r = rice_parameter(chunking.chunk_size(), keep);
        index_bits = keep * (r + 1) + expected_rice_quotients(chunking.chunk_size(), keep, r);
      }
      // The bit stream is padded to a byte per tensor: on average half a byte, kept whole here.
      const double bits = chunking.chunk_count() * (index_bits + keep * kCodeBits);
      total += static_cast<double>(tensor_bytes(0, 0, options)) + std::ceil(bits / 8);
    }
    if (first || total < smallest) smallest = total;
    first = false;
  }
  return smallest;
}

size_t packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options) {
  if (options.index_coding == IndexCoding::Rice || options.index_coding == IndexCoding::Auto) {
    throw Error("sparse codec: the size of a " + to_string(options.index_coding) +
                " payload depends on the positions; use payload_stats(tensors, options).bytes, or max_packed_size(shapes, "
                "options) for a bound");
  }
  return max_packed_size(shapes, options);
}

std::vector<uint8_t> pack(const std::vector<SparseTensor>& tensors, const SparseOptions& options) {
  check_options(options);
  const PayloadPlan plan = plan_payload(tensors, options);
  std::vector<uint8_t> body;
  body.reserve(plan.bytes - kHeaderBytes);
  for (size_t t = 0; t < tensors.size(); ++t) {
    const SparseTensor& tensor = tensors[t];
    const Chunking chunking = chunking_for(tensor.shape);
    const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
    put<uint64_t>(body, static_cast<uint64_t>(element_count(tensor.shape)));
    put<float>(body, tensor.shift);
    for (float centroid : tensor.centroids) put<float>(body, centroid);
    BitWriter bits(body);
    for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
      write_positions(bits, plan.coding, chunking, &tensor.positions[c * keep], keep);
    }
    for (uint8_t code : tensor.codes) bits.write(code, kCodeBits);
  }
  std::vector<uint8_t> payload(kMagic, kMagic + 4);
  put<uint16_t>(payload, kVersion);
  put<uint8_t>(payload, static_cast<uint8_t>(plan.coding));
  put<uint8_t>(payload, static_cast<uint8_t>(options.quant_bins));
  put<uint32_t>(payload, static_cast<uint32_t>(options.topk));
  put<uint32_t>(payload, static_cast<uint32_t>(tensors.size()));
  put<uint64_t>(payload, body.size());
  put<uint64_t>(payload, xxh64(body.data(), body.size()));
  payload.insert(payload.end(), body.begin(), body.end());
  return payload;
}

std::vector<SparseTensor> unpack(const uint8_t* bytes, size_t size, const std::vector<std::vector<int64_t>>& shapes,
                                 const SparseOptions& options) {
  check_options(options);
  auto fail = [](const std::string& problem) { throw Error("sparse payload: " + problem); };
  if (size < kHeaderBytes) fail(std::to_string(size) + " bytes, shorter than the 32-byte header");
  if (std::memcmp(bytes, kMagic, 4) != 0) fail("bad magic (not a SparseLoCo payload)");
  if (get<uint16_t>(bytes + 4) != kVersion) {
    fail("version " + std::to_string(get<uint16_t>(bytes + 4)) + " (this build reads version 2)");
  }
  if (bytes[6] >= kBodyCodings.size()) {
    fail("index coding " + std::to_string(bytes[6]) + " (valid: 0 fixed, 1 rice, 2 bitmap)");
  }
  const auto coding = static_cast<IndexCoding>(bytes[6]);
  if (options.index_coding != IndexCoding::Auto && coding != options.index_coding) {
    fail("index coding " + to_string(coding) + " (this run's is " + to_string(options.index_coding) + ")");
  }
  if (bytes[7] != options.quant_bins) {
    fail(std::to_string(bytes[7]) + " bins (expected " + std::to_string(options.quant_bins) + ")");
  }
  if (get<uint32_t>(bytes + 8) != options.topk) {
    fail("k " + std::to_string(get<uint32_t>(bytes + 8)) + " per 4096 (expected " + std::to_string(options.topk) + ")");
  }
  if (get<uint32_t>(bytes + 12) != shapes.size()) {
    fail(std::to_string(get<uint32_t>(bytes + 12)) + " tensors (the model has " + std::to_string(shapes.size()) + ")");
  }
  const uint64_t body_size = get<uint64_t>(bytes + 16);
  if (body_size != size - kHeaderBytes) {
    fail("header says " + std::to_string(body_size) + " body bytes, " + std::to_string(size - kHeaderBytes) +
         " arrived");
  }
  const uint8_t* body = bytes + kHeaderBytes;
  if (get<uint64_t>(bytes + 24) != xxh64(body, body_size)) fail("checksum mismatch (corrupted in transit)");
  const size_t largest_payload = max_packed_size(shapes, options);
  if (size > largest_payload) {
    fail(std::to_string(size) + " bytes, more than the " + std::to_string(largest_payload) + " that the model's " +
         to_string(options.index_coding) + " payload can take");
  }
  const size_t side_bytes = 8 + 4 + 4 * static_cast<size_t>(options.quant_bins);
  std::vector<SparseTensor> tensors;
  size_t offset = 0;
  for (size_t t = 0; t < shapes.size(); ++t) {
    const std::string which = "tensor " + std::to_string(t) + ": ";
    const Chunking chunking = chunking_for(shapes[t]);
    if (body_size - offset < side_bytes) fail(which + "the body ends inside its header");
    const uint8_t* at = body + offset;
    SparseTensor tensor;
    tensor.shape = shapes[t];
    if (get<uint64_t>(at) != static_cast<uint64_t>(element_count(shapes[t]))) {
      fail(which + std::to_string(get<uint64_t>(at)) + " elements (the model's has " +
           std::to_string(element_count(shapes[t])) + ")");
    }
    tensor.shift = get<float>(at + 8);
    for (int c = 0; c < options.quant_bins; ++c) tensor.centroids.push_back(get<float>(at + 12 + 4 * c));
    if (!std::isfinite(tensor.shift)) fail(which + "shift is not finite");
    for (float centroid : tensor.centroids) {
      if (!std::isfinite(centroid)) fail(which + "a centroid is not finite");
    }
    BitReader bits(at + side_bytes, body_size - offset - side_bytes, which);
    const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
    tensor.positions.reserve(static_cast<size_t>(chunking.chunk_count() * keep));
    auto fail_in_tensor = [&](const std::string& problem) { fail(which + problem); };
    for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
      read_positions(bits, coding, chunking, keep, c, tensor.positions, fail_in_tensor);
    }
    for (size_t i = 0; i < tensor.positions.size(); ++i) {
      const uint32_t code = bits.read(kCodeBits);
      if (code >= static_cast<uint32_t>(options.quant_bins)) {
        fail(which + "code " + std::to_string(code) + " >= " + std::to_string(options.quant_bins) + " bins");
      }
      tensor.codes.push_back(static_cast<uint8_t>(code));
    }
    if (!bits.padding_is_zero()) fail(which + "nonzero padding bits after its bit stream");
    offset += side_bytes + bits.bytes_used();
    const float largest = std::fabs(tensor.shift) +
                          *std::max_element(tensor.centroids.begin(), tensor.centroids.end(),
                                            [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    if (!std::isfinite(largest)) fail(which + "shift plus centroid overflows float32");
    tensors.push_back(std::move(tensor));
  }
  if (offset != body_size) fail(std::to_string(body_size - offset) + " trailing bytes after the last tensor");
  // Canonical: auto's choice is the one pack makes for what was read, so that every accepted
  // payload is exactly pack's output (and no two payloads carry the same update).
  if (options.index_coding == IndexCoding::Auto) {
    const IndexCoding smallest = plan_payload(tensors, options).coding;
    if (smallest != coding) {
      fail("body in " + to_string(coding) + " coding where auto picks " + to_string(smallest) +
           " (smaller, or as small and first in fixed, rice, bitmap)");
    }
  }
  return tensors;
}

SparseAggregate::SparseAggregate(const std::vector<std::vector<int64_t>>& shapes) {
  for (const auto& shape : shapes) {
    sums_.emplace_back(static_cast<size_t>(element_count(shape)), 0.0f);
    counts_.emplace_back(static_cast<size_t>(element_count(shape)), 0);
  }
}

void SparseAggregate::add(const std::vector<SparseTensor>& tensors) {
  if (tensors.size() != sums_.size()) {
    throw Error("sparse aggregate: " + std::to_string(tensors.size()) + " tensors, expected " +
                std::to_string(sums_.size()));
  }
  for (size_t t = 0; t < tensors.size(); ++t) {
    const Chunking chunking = chunking_for(tensors[t].shape);
    const int64_t keep = static_cast<int64_t>(tensors[t].positions.size()) / chunking.chunk_count();
    for (size_t i = 0; i < tensors[t].positions.size(); ++i) {
      const int64_t element = chunking.element(static_cast<int64_t>(i) / keep, tensors[t].positions[i]);
      sums_[t][element] += tensors[t].value(i);
      ++counts_[t][element];
    }
  }
}

void SparseAggregate::result(size_t index, Aggregation aggregation, int64_t replicas, float* out) const {
  const auto& sums = sums_.at(index);
  const auto& counts = counts_.at(index);
  for (size_t i = 0; i < sums.size(); ++i) {
    if (aggregation == Aggregation::Mean) {
      out[i] = counts[i] ? sums[i] / static_cast<float>(counts[i]) : 0.0f;
    } else {
      out[i] = sums[i] / static_cast<float>(replicas);
    }
  }
}

}  // namespace strait::codec
