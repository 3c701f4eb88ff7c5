#include "strait/codec/sparse_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "strait/core/checksum.h"
#include "strait/core/error.h"

namespace strait::codec {

namespace {

constexpr char kMagic[4] = {'S', 'P', 'L', 'C'};
constexpr uint16_t kVersion = 1;
constexpr uint8_t kFixedIndexCoding = 0;
constexpr size_t kHeaderBytes = 32;
constexpr int kCodeBits = 2;
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

// Kept values per tensor: every chunk keeps the same k_C.
int64_t kept_values(const Chunking& chunking, const SparseOptions& options) {
  return chunking.chunk_count() * kept_per_chunk(chunking.chunk_size(), options.topk);
}

size_t tensor_bytes(const Chunking& chunking, const SparseOptions& options) {
  const int64_t bits = kept_values(chunking, options) * (chunking.index_bits() + kCodeBits);
  return 8 + 4 + 4 * static_cast<size_t>(options.quant_bins) + static_cast<size_t>((bits + 7) / 8);
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

// Reads what BitWriter wrote, from a span whose length the caller checked.
class BitReader {
 public:
  explicit BitReader(const uint8_t* bytes) : bytes_(bytes) {}
  uint32_t read(int bits) {
    uint32_t value = 0;
    for (int b = 0; b < bits; ++b, ++used_) value |= static_cast<uint32_t>((bytes_[used_ / 8] >> (used_ % 8)) & 1u) << b;
    return value;
  }

 private:
  const uint8_t* bytes_;
  int64_t used_ = 0;
};

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

size_t packed_size(const std::vector<std::vector<int64_t>>& shapes, const SparseOptions& options) {
  size_t total = kHeaderBytes;
  for (const auto& shape : shapes) total += tensor_bytes(chunking_for(shape), options);
  return total;
}

std::vector<uint8_t> pack(const std::vector<SparseTensor>& tensors, const SparseOptions& options) {
  check_options(options);
  std::vector<uint8_t> body;
  for (const SparseTensor& tensor : tensors) {
    const Chunking chunking = chunking_for(tensor.shape);
    put<uint64_t>(body, static_cast<uint64_t>(element_count(tensor.shape)));
    put<float>(body, tensor.shift);
    for (float centroid : tensor.centroids) put<float>(body, centroid);
    BitWriter bits(body);
    const int width = chunking.index_bits();
    for (uint16_t position : tensor.positions) bits.write(position, width);
    for (uint8_t code : tensor.codes) bits.write(code, kCodeBits);
  }
  std::vector<uint8_t> payload(kMagic, kMagic + 4);
  put<uint16_t>(payload, kVersion);
  put<uint8_t>(payload, kFixedIndexCoding);
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
    fail("version " + std::to_string(get<uint16_t>(bytes + 4)) + " (this build reads version 1)");
  }
  if (bytes[6] != kFixedIndexCoding) fail("index coding " + std::to_string(bytes[6]) + " (expected 0, fixed)");
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
  if (size != packed_size(shapes, options)) {
    fail(std::to_string(size) + " bytes where the model's tensors take " + std::to_string(packed_size(shapes, options)));
  }
  std::vector<SparseTensor> tensors;
  size_t offset = 0;
  for (size_t t = 0; t < shapes.size(); ++t) {
    const std::string which = "tensor " + std::to_string(t) + ": ";
    const Chunking chunking = chunking_for(shapes[t]);
    const uint8_t* at = body + offset;
    offset += tensor_bytes(chunking, options);
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
    BitReader bits(at + 12 + 4 * options.quant_bins);
    const int width = chunking.index_bits();
    const int64_t keep = kept_per_chunk(chunking.chunk_size(), options.topk);
    for (int64_t c = 0; c < chunking.chunk_count(); ++c) {
      for (int64_t i = 0; i < keep; ++i) {
        const uint32_t position = bits.read(width);
        if (position >= static_cast<uint32_t>(chunking.chunk_size())) {
          fail(which + "position " + std::to_string(position) + " outside its chunk of " +
               std::to_string(chunking.chunk_size()));
        }
        if (i > 0 && position <= tensor.positions.back()) {
          fail(which + "positions in chunk " + std::to_string(c) + " repeat or are out of order");
        }
        tensor.positions.push_back(static_cast<uint16_t>(position));
      }
    }
    for (size_t i = 0; i < tensor.positions.size(); ++i) {
      const uint32_t code = bits.read(kCodeBits);
      if (code >= static_cast<uint32_t>(options.quant_bins)) {
        fail(which + "code " + std::to_string(code) + " >= " + std::to_string(options.quant_bins) + " bins");
      }
      tensor.codes.push_back(static_cast<uint8_t>(code));
    }
    const float largest = std::fabs(tensor.shift) +
                          *std::max_element(tensor.centroids.begin(), tensor.centroids.end(),
                                            [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    if (!std::isfinite(largest)) fail(which + "shift plus centroid overflows float32");
    tensors.push_back(std::move(tensor));
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
