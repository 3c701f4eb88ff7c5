#include "strait/core/checksum.h"

#include <gtest/gtest.h>

#include <string>

#include "strait/core/error.h"
#include "test_support.h"

namespace strait {
namespace {

using testing::ScratchDir;

uint64_t hash_of(const std::string& text, uint64_t seed = 0) { return xxh64(text.data(), text.size(), seed); }

// The same deterministic bytes the expected hash below was computed from (with `xxhsum -H64`).
std::string patterned_bytes(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 31 + 7) & 0xff);
  return bytes;
}

// Reference values from `xxhsum -H64` (unseeded) and an independent Python XXH64 (seeded).
TEST(Checksum, KnownVectors) {
  EXPECT_EQ(xxh64("", 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(hash_of("a"), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(hash_of("abc"), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(hash_of("Nobody inspects the spammish repetition"), 0xfbcea83c8a378bf1ULL);
}

TEST(Checksum, SeedChangesTheHash) {
  EXPECT_EQ(hash_of("abc", 1), 0xbea9ca8199328908ULL);
  EXPECT_EQ(hash_of("Nobody inspects the spammish repetition", 20), 0x733fa29bd00daeefULL);
}

TEST(Checksum, HexIsSixteenLowercaseDigitsZeroPadded) {
  EXPECT_EQ(xxh64_hex("", 0), "ef46db3751d8e999");
  EXPECT_EQ(xxh64_hex("abc", 3), "44bc2cf5ad770999");
  for (int i = 0; i < 64; ++i) {
    std::string data = std::to_string(i);
    std::string hex = xxh64_hex(data.data(), data.size());
    ASSERT_EQ(hex.size(), 16u);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
    EXPECT_EQ(std::stoull(hex, nullptr, 16), hash_of(data));
  }
}

TEST(Checksum, FileHashStreamsLargeFiles) {
  ScratchDir dir;
  // Larger than one read chunk and not a multiple of it, so the streaming path is exercised.
  const std::string bytes = patterned_bytes(1000003);
  testing::write_file(dir / "big.bin", bytes);
  EXPECT_EQ(xxh64_file_hex(dir / "big.bin"), "857fbf0ff5d9fcfc");
  EXPECT_EQ(xxh64_file_hex(dir / "big.bin"), xxh64_hex(bytes.data(), bytes.size()));
}

TEST(Checksum, FileHashOfEmptyAndSmallFiles) {
  ScratchDir dir;
  testing::write_file(dir / "empty", "");
  testing::write_file(dir / "abc", "abc");
  EXPECT_EQ(xxh64_file_hex(dir / "empty"), "ef46db3751d8e999");
  EXPECT_EQ(xxh64_file_hex(dir / "abc"), "44bc2cf5ad770999");
}

TEST(Checksum, MissingFileNamesThePath) {
  ScratchDir dir;
  try {
    xxh64_file_hex(dir / "absent.bin");
    FAIL() << "expected strait::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("absent.bin"), std::string::npos) << error.what();
  }
}

TEST(Checksum, DirectoryIsNotReadable) {
  ScratchDir dir;
  EXPECT_THROW(xxh64_file_hex(dir.path()), Error);
}

}  // namespace
}  // namespace strait
