#include "strait/data/shard.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data_test_util.h"
#include "test_support.h"

namespace strait::data {
namespace {

using strait::testing::error_of;
using strait::testing::expect_mentions;
using strait::testing::read_file;
using strait::testing::ScratchDir;
using strait::testing::write_file;

void append_le(std::string& bytes, uint32_t value, int width) {
  for (int i = 0; i < width; ++i) bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Builds shard bytes by hand, independently of write_shard, so the tests pin the format.
std::string shard_bytes(int32_t magic, int32_t version, int32_t count, const std::vector<uint16_t>& tokens) {
  std::string bytes;
  append_le(bytes, static_cast<uint32_t>(magic), 4);
  append_le(bytes, static_cast<uint32_t>(version), 4);
  append_le(bytes, static_cast<uint32_t>(count), 4);
  bytes.resize(1024, '\0');
  for (uint16_t token : tokens) append_le(bytes, token, 2);
  return bytes;
}

// Reads `path` expecting a strait::Error, and checks the file was left as it was.
std::string read_error(const std::filesystem::path& path) {
  std::string before = read_file(path);
  std::string message = error_of([&] { read_shard(path); });
  EXPECT_EQ(read_file(path), before);
  return message;
}

TEST(Shard, RoundTripMatchesTheLlmcLayout) {
  ScratchDir dir;
  std::vector<uint16_t> tokens = {0, 1, 255, 256, 12345, 65535};
  write_shard(dir / "s.bin", tokens);
  EXPECT_EQ(read_file(dir / "s.bin"), shard_bytes(20240520, 1, 6, tokens));
  EXPECT_EQ(read_shard(dir / "s.bin"), tokens);
  EXPECT_EQ(read_shard_token_count(dir / "s.bin"), 6u);
}

TEST(Shard, EmptyShardRoundTrips) {
  ScratchDir dir;
  write_shard(dir / "empty.bin", {});
  EXPECT_EQ(read_file(dir / "empty.bin").size(), 1024u);
  EXPECT_TRUE(read_shard(dir / "empty.bin").empty());
}

TEST(Shard, WrongMagicIsRejected) {
  ScratchDir dir;
  write_file(dir / "bad.bin", shard_bytes(12345, 1, 2, {7, 8}));
  expect_mentions(read_error(dir / "bad.bin"), {(dir / "bad.bin").string(), "bad magic 12345", "20240520"});
}

TEST(Shard, WrongVersionIsRejected) {
  ScratchDir dir;
  write_file(dir / "v2.bin", shard_bytes(20240520, 2, 2, {7, 8}));
  expect_mentions(read_error(dir / "v2.bin"), {"v2.bin", "unsupported version 2", "expected 1"});
}

TEST(Shard, TruncatedFileIsRejectedWithBothSizes) {
  ScratchDir dir;
  write_file(dir / "cut.bin", shard_bytes(20240520, 1, 10, {1, 2, 3, 4, 5}));
  expect_mentions(read_error(dir / "cut.bin"), {"cut.bin", "10 tokens", "1044 bytes", "1034 bytes", "truncated"});
}

TEST(Shard, ExtraBytesAreRejectedWithBothSizes) {
  ScratchDir dir;
  write_file(dir / "long.bin", shard_bytes(20240520, 1, 2, {1, 2, 3}));
  expect_mentions(read_error(dir / "long.bin"), {"long.bin", "1028 bytes", "1030 bytes", "extra bytes"});
}

TEST(Shard, NegativeCountIsRejected) {
  ScratchDir dir;
  write_file(dir / "neg.bin", shard_bytes(20240520, 1, -3, {}));
  expect_mentions(read_error(dir / "neg.bin"), {"neg.bin", "negative token count -3"});
}

TEST(Shard, FileShorterThanTheHeaderIsRejected) {
  ScratchDir dir;
  write_file(dir / "tiny.bin", std::string(100, 'x'));
  expect_mentions(read_error(dir / "tiny.bin"), {"tiny.bin", "100 bytes", "1024-byte header"});
  expect_mentions(error_of([&] { read_shard_token_count(dir / "tiny.bin"); }), {"100 bytes"});
}

TEST(Shard, MissingFileIsRejected) {
  ScratchDir dir;
  expect_mentions(error_of([&] { read_shard(dir / "absent.bin"); }), {"absent.bin", "no such file"});
  EXPECT_FALSE(std::filesystem::exists(dir / "absent.bin"));
}

TEST(Shard, TokenRangeErrorNamesShardIndexValueAndVocabulary) {
  std::vector<uint16_t> tokens = {1, 2, 300, 5, 400};
  std::string message = error_of([&] { check_token_range(tokens, 256, "train_000003.bin"); });
  expect_mentions(message, {"train_000003.bin", "token 300", "index 2", "size 256"});
  EXPECT_NO_THROW(check_token_range(tokens, 401, "train_000003.bin"));
}

}  // namespace
}  // namespace strait::data
