#include "strait/codec/wire_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "strait/core/error.h"

namespace strait::codec {

namespace {

uint16_t to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stays a (quiet) NaN
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);  // to nearest, ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float from_bf16(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// The largest code of a quantized dtype: codes are symmetric in [-max, max].
int max_code(WireDtype dtype) { return dtype == WireDtype::Int8 ? 127 : 7; }

size_t code_bytes(WireDtype dtype, size_t count) { return dtype == WireDtype::Int8 ? count : (count + 1) / 2; }

void store_code(WireDtype dtype, uint8_t* codes, size_t i, int code) {
  if (dtype == WireDtype::Int8) {
    codes[i] = static_cast<uint8_t>(static_cast<int8_t>(code));
    return;
  }
  const uint8_t nibble = static_cast<uint8_t>(code + 8);
  if (i % 2 == 0) codes[i / 2] = nibble;
  else codes[i / 2] |= static_cast<uint8_t>(nibble << 4);
}

int load_code(WireDtype dtype, const uint8_t* codes, size_t i) {
  if (dtype == WireDtype::Int8) return static_cast<int8_t>(codes[i]);
  const uint8_t byte = codes[i / 2];
  return static_cast<int>(i % 2 == 0 ? byte & 0xF : byte >> 4) - 8;
}

}  // namespace

std::string to_string(WireDtype dtype) {
  switch (dtype) {
    case WireDtype::Fp32: return "fp32";
    case WireDtype::Bf16: return "bf16";
    case WireDtype::Int8: return "int8";
    case WireDtype::Int4: return "int4";
  }
  return "?";
}

WireDtype parse_wire_dtype(const std::string& text) {
  for (WireDtype dtype : {WireDtype::Fp32, WireDtype::Bf16, WireDtype::Int8, WireDtype::Int4}) {
    if (text == to_string(dtype)) return dtype;
  }
  throw Error("wire dtype must be fp32, bf16, int8 or int4, got '" + text + "'");
}

WireCodec::WireCodec(WireDtype dtype, size_t block_size) : dtype_(dtype), block_size_(block_size) {
  if (block_size_ == 0) throw Error("wire codec: block size must be > 0");
}

size_t WireCodec::encoded_size(size_t n) const {
  switch (dtype_) {
    case WireDtype::Fp32: return 4 * n;
    case WireDtype::Bf16: return 2 * n;
    default: break;
  }
  const size_t full = n / block_size_, rest = n % block_size_;
  return full * (4 + code_bytes(dtype_, block_size_)) + (rest ? 4 + code_bytes(dtype_, rest) : 0);
}

void WireCodec::encode(const float* values, size_t n, uint8_t* out) const {
  if (dtype_ == WireDtype::Fp32) {
    std::memcpy(out, values, 4 * n);
    return;
  }
  if (dtype_ == WireDtype::Bf16) {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t half = to_bf16(values[i]);
      std::memcpy(out + 2 * i, &half, 2);
    }
    return;
  }
  const int limit = max_code(dtype_);
  for (size_t start = 0; start < n; start += block_size_) {
    const size_t count = std::min(block_size_, n - start);
    float largest = 0.0f;
    for (size_t i = 0; i < count; ++i) {
      const float value = values[start + i];
      if (!std::isfinite(value)) {
        throw Error("wire codec: cannot quantize a non-finite value (" + std::to_string(value) + " at index " +
                    std::to_string(start + i) + ") to " + to_string(dtype_));
      }
      largest = std::max(largest, std::fabs(value));
    }
    const float scale = largest / static_cast<float>(limit);
    std::memcpy(out, &scale, 4);
    uint8_t* codes = out + 4;
    std::memset(codes, 0, code_bytes(dtype_, count));
    for (size_t i = 0; i < count; ++i) {
      const int code = scale > 0.0f ? static_cast<int>(std::nearbyint(values[start + i] / scale)) : 0;
      store_code(dtype_, codes, i, std::clamp(code, -limit, limit));
    }
    out += 4 + code_bytes(dtype_, count);
  }
}

void WireCodec::decode(const uint8_t* bytes, size_t size, float* out, size_t n) const {
  if (size != encoded_size(n)) {
    throw Error("wire codec: " + std::to_string(size) + " bytes cannot hold " + std::to_string(n) + " " +
                to_string(dtype_) + " values (expected " + std::to_string(encoded_size(n)) + ")");
  }
  if (dtype_ == WireDtype::Fp32) {
    std::memcpy(out, bytes, 4 * n);
    return;
  }
  if (dtype_ == WireDtype::Bf16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t half;
      std::memcpy(&half, bytes + 2 * i, 2);
      out[i] = from_bf16(half);
    }
    return;
  }
  const int limit = max_code(dtype_);
  for (size_t start = 0; start < n; start += block_size_) {
    const size_t count = std::min(block_size_, n - start);
    float scale;
    std::memcpy(&scale, bytes, 4);
    // An encoder's scale is max|x| / limit, so limit * scale is finite.
    if (!std::isfinite(scale * static_cast<float>(limit)) || scale < 0.0f) {
      throw Error("wire codec: block at value " + std::to_string(start) + " has scale " + std::to_string(scale) +
                  " (expected a finite number >= 0 whose " + std::to_string(limit) + "-fold is finite)");
    }
    const uint8_t* codes = bytes + 4;
    for (size_t i = 0; i < count; ++i) {
      const int code = load_code(dtype_, codes, i);
      if (code < -limit || code > limit) {
        throw Error("wire codec: value " + std::to_string(start + i) + " has code " + std::to_string(code) +
                    " (expected -" + std::to_string(limit) + ".." + std::to_string(limit) + ")");
      }
      out[start + i] = static_cast<float>(code) * scale;
    }
    bytes += 4 + code_bytes(dtype_, count);
  }
}

}  // namespace strait::codec
