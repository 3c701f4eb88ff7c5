// The wire codecs against exact expectations: float32 bit for bit, bfloat16 rounding to nearest
// even, block quantization's formula and error bound, the encoded sizes, and malformed bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "strait/codec/wire_codec.h"
#include "strait/core/error.h"
#include "test_support.h"

namespace strait::codec {
namespace {

std::vector<float> round_trip(const WireCodec& codec, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(codec.encoded_size(values.size()));
  codec.encode(values.data(), values.size(), bytes.data());
  std::vector<float> decoded(values.size());
  codec.decode(bytes.data(), bytes.size(), decoded.data(), decoded.size());
  return decoded;
}

TEST(WireCodec, Fp32IsExact) {
  const auto values = testing::normal_floats(1001, 1, 0.01f);
  EXPECT_EQ(round_trip(WireCodec(WireDtype::Fp32), values), values);
}

TEST(WireCodec, Bf16RoundsToNearestEven) {
  const float one_ulp = std::ldexp(1.0f, -7);  // bfloat16's spacing just above 1
  const std::vector<float> values = {1.0f,
                                     1.0f + one_ulp / 2,      // a tie: to the even neighbour, 1
                                     1.0f + 3 * one_ulp / 2,  // a tie: to the even neighbour, 1 + 2 ulp
                                     1.0f + one_ulp / 2 + std::ldexp(1.0f, -20),  // above the tie: up
                                     -2.5f,
                                     std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN()};
  const auto decoded = round_trip(WireCodec(WireDtype::Bf16), values);
  EXPECT_EQ(decoded[0], 1.0f);
  EXPECT_EQ(decoded[1], 1.0f);
  EXPECT_EQ(decoded[2], 1.0f + 2 * one_ulp);
  EXPECT_EQ(decoded[3], 1.0f + one_ulp);
  EXPECT_EQ(decoded[4], -2.5f);
  EXPECT_EQ(decoded[5], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(decoded[6]));
  EXPECT_EQ(WireCodec(WireDtype::Bf16).encoded_size(7), 14u);
}

TEST(WireCodec, QuantizedCodesFollowTheFormulaExactly) {
  // Integer multiples of the block's scale come back exactly: code = x / s.
  for (auto [dtype, limit] : {std::pair{WireDtype::Int8, 127}, std::pair{WireDtype::Int4, 7}}) {
    std::vector<float> values;
    for (int code = -limit; code <= limit; ++code) values.push_back(0.5f * static_cast<float>(code));
    WireCodec codec(dtype, values.size());
    EXPECT_EQ(round_trip(codec, values), values) << to_string(dtype);
  }
}

TEST(WireCodec, QuantizationErrorIsAtMostHalfAScalePerValue) {
  for (auto [dtype, limit] : {std::pair{WireDtype::Int8, 127.0f}, std::pair{WireDtype::Int4, 7.0f}}) {
    for (size_t n : {size_t{1}, size_t{255}, size_t{256}, size_t{1000}}) {
      const auto values = testing::normal_floats(n, 7, 0.01f);
      const WireCodec codec(dtype);
      const auto decoded = round_trip(codec, values);
      for (size_t start = 0; start < n; start += WireCodec::kDefaultBlock) {
        const size_t end = std::min(n, start + WireCodec::kDefaultBlock);
        float largest = 0;
        for (size_t i = start; i < end; ++i) largest = std::max(largest, std::fabs(values[i]));
        const float scale = largest / limit;
        for (size_t i = start; i < end; ++i) {
          ASSERT_LE(std::fabs(decoded[i] - values[i]), scale / 2 * (1 + 1e-6f)) << to_string(dtype) << " value " << i;
        }
      }
    }
  }
}

TEST(WireCodec, EncodedSizesCountScalesAndPackedCodes) {
  // 1000 values in blocks of 256: three full blocks and one of 232.
  EXPECT_EQ(WireCodec(WireDtype::Fp32).encoded_size(1000), 4000u);
  EXPECT_EQ(WireCodec(WireDtype::Bf16).encoded_size(1000), 2000u);
  EXPECT_EQ(WireCodec(WireDtype::Int8).encoded_size(1000), 1000u + 4 * 4);
  EXPECT_EQ(WireCodec(WireDtype::Int4).encoded_size(1000), 500u + 4 * 4);
  EXPECT_EQ(WireCodec(WireDtype::Int4).encoded_size(3), 2u + 4);  // an odd count rounds up
  // int4 is 8x smaller than fp32 but for the scales: 128 code bytes + 4 per 256 values.
  EXPECT_NEAR(4.0 * 256 * 1000 / WireCodec(WireDtype::Int4).encoded_size(256 * 1000), 1024.0 / 132, 1e-9);
}

TEST(WireCodec, ZerosStayZeros) {
  for (WireDtype dtype : {WireDtype::Int8, WireDtype::Int4}) {
    EXPECT_EQ(round_trip(WireCodec(dtype), std::vector<float>(300, 0.0f)), std::vector<float>(300, 0.0f));
  }
}

TEST(WireCodec, NonFiniteValuesCannotBeQuantized) {
  std::vector<float> values(10, 1.0f);
  values[4] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> bytes(WireCodec(WireDtype::Int8).encoded_size(10));
  try {
    WireCodec(WireDtype::Int8).encode(values.data(), values.size(), bytes.data());
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("non-finite value (nan at index 4) to int8"), std::string::npos)
        << error.what();
  }
}

TEST(WireCodec, MalformedBytesAreRejected) {
  const WireCodec codec(WireDtype::Int4);
  std::vector<uint8_t> bytes(codec.encoded_size(10));
  std::vector<float> out(10);
  EXPECT_THROW(codec.decode(bytes.data(), bytes.size() - 1, out.data(), 10), Error);
  for (float scale : {-1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::memcpy(bytes.data(), &scale, 4);
    try {
      codec.decode(bytes.data(), bytes.size(), out.data(), 10);
      FAIL() << "scale " << scale << " was accepted";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("expected a finite number >= 0 whose 7-fold is finite"),
                std::string::npos)
          << error.what();
    }
  }
  // Codes outside the encoder's range: int4's stored nibble 0 (-8), int8's -128.
  float one = 1.0f;
  std::memcpy(bytes.data(), &one, 4);
  std::fill(bytes.begin() + 4, bytes.end(), uint8_t{0x88});  // code 0 everywhere...
  bytes[4] = 0x80;                                             // ...but the first value's nibble is 0
  EXPECT_THROW(codec.decode(bytes.data(), bytes.size(), out.data(), 10), Error);
  const WireCodec int8(WireDtype::Int8);
  std::vector<uint8_t> int8_bytes(int8.encoded_size(3), 0);
  std::memcpy(int8_bytes.data(), &one, 4);
  int8_bytes[5] = 0x80;  // -128
  try {
    int8.decode(int8_bytes.data(), int8_bytes.size(), out.data(), 3);
    FAIL() << "code -128 was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("value 1 has code -128 (expected -127..127)"), std::string::npos)
        << error.what();
  }
}

TEST(WireCodec, AnyBytesOfTheRightSizeDecodeToBoundedValuesOrAnError) {
  // Peers are untrusted: random bytes must never crash, and what decodes is finite.
  std::mt19937 generator(3);
  for (WireDtype dtype : {WireDtype::Int8, WireDtype::Int4}) {
    const WireCodec codec(dtype, 16);
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<uint8_t> bytes(codec.encoded_size(40));
      for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(generator());
      std::vector<float> out(40);
      try {
        codec.decode(bytes.data(), bytes.size(), out.data(), out.size());
      } catch (const Error&) {
        continue;
      }
      for (float value : out) ASSERT_TRUE(std::isfinite(value));
    }
  }
}

TEST(WireCodec, DtypeNamesParseAndBadOnesAreNamed) {
  for (WireDtype dtype : {WireDtype::Fp32, WireDtype::Bf16, WireDtype::Int8, WireDtype::Int4}) {
    EXPECT_EQ(parse_wire_dtype(to_string(dtype)), dtype);
  }
  try {
    parse_wire_dtype("int2");
    FAIL();
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "wire dtype must be fp32, bf16, int8 or int4, got 'int2'");
  }
}

}  // namespace
}  // namespace strait::codec
