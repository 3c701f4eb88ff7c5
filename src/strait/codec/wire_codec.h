// How a vector of float32 values travels on the wire: as float32, bfloat16, or block-quantized
// int8 / int4 with one float32 scale per block. Codecs know nothing of training or tensors
// (plain spans), so every byte format can be tested, and fuzzed, on its own.
//
// Intended usage (one replica's share of an outer exchange):
//   WireCodec codec(WireDtype::Int4);                  // blocks of 256 values
//   std::vector<uint8_t> bytes(codec.encoded_size(n));
//   codec.encode(values, n, bytes.data());
//   ... send ...
//   codec.decode(received.data(), received.size(), out, n);   // Error on malformed bytes
//
// Formats, for n values in blocks of B (the last block may be short):
//   fp32: n little-endian IEEE floats (4n bytes), exact;
//   bf16: n bfloat16 values rounded to nearest even (2n bytes); NaN stays NaN;
//   int8: per block, its float32 scale s = max|x| / 127 then one int8 code per value,
//         code = round(x / s) clamped to [-127, 127], decoded as code * s;
//   int4: per block, s = max|x| / 7 then two codes per byte (low nibble first), code in
//         [-7, 7] stored as code + 8, decoded as code * s.
// A block of zeros has s = 0 and decodes to zeros. Quantized codecs require finite inputs
// (Error otherwise: a NaN would poison a whole block silently).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace strait::codec {

enum class WireDtype { Fp32, Bf16, Int8, Int4 };

// "fp32", "bf16", "int8", "int4"; parse throws strait::Error naming the text and the choices.
std::string to_string(WireDtype dtype);
WireDtype parse_wire_dtype(const std::string& text);

class WireCodec {
 public:
  static constexpr size_t kDefaultBlock = 256;
  // Throws strait::Error if block_size is 0 (it only matters to int8 and int4).
  explicit WireCodec(WireDtype dtype, size_t block_size = kDefaultBlock);

  WireDtype dtype() const { return dtype_; }
  // Bytes that encode(values, n) writes.
  size_t encoded_size(size_t n) const;
  void encode(const float* values, size_t n, uint8_t* out) const;
  // Decodes exactly n values from `size` bytes. Bytes come from peers and are not trusted:
  // a size other than encoded_size(n), a scale that is negative or too large for its codes to
  // decode to finite values, or a code outside [-max, max] (int8's -128, int4's stored 0)
  // throws strait::Error naming the problem; `out` is then unspecified. Whatever decodes is
  // finite.
  void decode(const uint8_t* bytes, size_t size, float* out, size_t n) const;

 private:
  WireDtype dtype_;
  size_t block_size_;
};

}  // namespace strait::codec
