#include "strait/data/loader.h"

#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data_test_util.h"
#include "strait/data/shard.h"
#include "test_support.h"

namespace strait::data {
namespace {

namespace fs = std::filesystem;
using strait::testing::error_of;
using strait::testing::expect_mentions;
using strait::testing::ScratchDir;
using strait::testing::write_file;

// A shard holding first, first+1, ..., first+count-1: every token tells where it came from.
fs::path counting_shard(const fs::path& path, size_t count, uint16_t first = 0) {
  std::vector<uint16_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  write_shard(path, tokens);
  return path;
}

std::vector<int64_t> range(int64_t first, size_t count) {
  std::vector<int64_t> values(count);
  std::iota(values.begin(), values.end(), first);
  return values;
}

struct Batch {
  std::vector<int64_t> inputs, targets;
  bool operator==(const Batch& other) const { return inputs == other.inputs && targets == other.targets; }
};

Batch next(TokenLoader& loader) {
  Batch batch;
  loader.next_batch(batch.inputs, batch.targets);
  return batch;
}

TEST(TokenLoader, BatchesAreConsecutiveTokensWithTargetsShiftedByOne) {
  ScratchDir dir;
  TokenLoader loader({counting_shard(dir / "s.bin", 100)}, 256, 2, 4);
  EXPECT_EQ(loader.tokens_per_batch(), 8u);
  std::vector<int64_t> inputs = {42}, targets;
  loader.next_batch(inputs, targets);
  EXPECT_EQ(inputs, range(0, 8));   // row 0 is 0..3, row 1 is 4..7
  EXPECT_EQ(targets, range(1, 8));
  EXPECT_EQ(loader.cursor(), (Cursor{0, 0, 8}));
  Batch second = next(loader);
  EXPECT_EQ(second.inputs, range(8, 8));
  EXPECT_EQ(second.targets, range(9, 8));
}

TEST(TokenLoader, MovesToTheNextShardAndWrapsIntoTheNextEpoch) {
  ScratchDir dir;
  // 21 tokens hold two batches of 8 (+1 target): positions 0 and 8; 16 + 9 > 21.
  std::vector<fs::path> shards = {counting_shard(dir / "a.bin", 21, 0), counting_shard(dir / "b.bin", 21, 100)};
  TokenLoader loader(shards, 256, 2, 4);
  EXPECT_EQ(next(loader).inputs, range(0, 8));
  EXPECT_EQ(loader.cursor(), (Cursor{0, 0, 8}));
  Batch last_of_a = next(loader);
  EXPECT_EQ(last_of_a.inputs, range(8, 8));
  EXPECT_EQ(last_of_a.targets, range(9, 8));
  EXPECT_EQ(loader.cursor(), (Cursor{0, 1, 0}));
  EXPECT_EQ(next(loader).inputs, range(100, 8));
  EXPECT_EQ(next(loader).inputs, range(108, 8));
  EXPECT_EQ(loader.cursor(), (Cursor{1, 0, 0}));
  EXPECT_EQ(next(loader).inputs, range(0, 8));
}

TEST(TokenLoader, RanksReadAdjacentDisjointBlocks) {
  ScratchDir dir;
  fs::path shard = counting_shard(dir / "s.bin", 100);
  TokenLoader rank0({shard}, 256, 2, 4, 0, 2);
  TokenLoader rank1({shard}, 256, 2, 4, 1, 2);
  EXPECT_EQ(next(rank0).inputs, range(0, 8));
  Batch first1 = next(rank1);
  EXPECT_EQ(first1.inputs, range(8, 8));
  EXPECT_EQ(first1.targets, range(9, 8));
  EXPECT_EQ(rank0.cursor(), (Cursor{0, 0, 16}));
  EXPECT_EQ(rank1.cursor(), rank0.cursor());
  EXPECT_EQ(next(rank0).inputs, range(16, 8));
  EXPECT_EQ(next(rank1).inputs, range(24, 8));
}

TEST(TokenLoader, SeekingToASavedCursorReproducesTheFollowingBatches) {
  ScratchDir dir;
  std::vector<fs::path> shards = {counting_shard(dir / "a.bin", 50, 0), counting_shard(dir / "b.bin", 30, 200),
                                  counting_shard(dir / "c.bin", 40, 400)};
  TokenLoader original(shards, 1000, 3, 2);
  for (int i = 0; i < 5; ++i) next(original);
  nlohmann::json saved = cursor_to_json(original.cursor());
  std::vector<Batch> expected;
  for (int i = 0; i < 12; ++i) expected.push_back(next(original));

  TokenLoader resumed(shards, 1000, 3, 2);
  resumed.seek(cursor_from_json(nlohmann::json::parse(saved.dump())));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(next(resumed), expected[i]) << "batch " << i;
  EXPECT_EQ(resumed.cursor(), original.cursor());

  resumed.reset();
  EXPECT_EQ(resumed.cursor(), Cursor{});
  EXPECT_EQ(next(resumed).inputs, range(0, 6));
}

TEST(TokenLoader, TokenOutsideTheVocabularyNamesShardAndIndex) {
  ScratchDir dir;
  std::vector<uint16_t> tokens(40, 3);
  tokens[7] = 300;
  write_shard(dir / "bad.bin", tokens);
  TokenLoader loader({dir / "bad.bin"}, 256, 2, 4);
  std::vector<int64_t> inputs, targets;
  expect_mentions(error_of([&] { loader.next_batch(inputs, targets); }), {"bad.bin", "index 7", "300", "256"});
}

TEST(TokenLoader, ShardTooSmallForOneBatchIsAnError) {
  ScratchDir dir;
  std::vector<fs::path> shards = {counting_shard(dir / "ok.bin", 100), counting_shard(dir / "small.bin", 16)};
  expect_mentions(error_of([&] { TokenLoader(shards, 256, 2, 4, 0, 2); }), {"small.bin", "16 tokens", "17 tokens needed"});
  EXPECT_NO_THROW(TokenLoader(shards, 256, 2, 4, 0, 1));
}

TEST(TokenLoader, InvalidShardOrArgumentsAreErrors) {
  ScratchDir dir;
  write_file(dir / "junk.bin", std::string(2000, 'j'));
  expect_mentions(error_of([&] { TokenLoader({dir / "junk.bin"}, 256, 1, 1); }), {"junk.bin", "bad magic"});
  fs::path shard = counting_shard(dir / "s.bin", 100);
  expect_mentions(error_of([&] { TokenLoader({shard}, 256, 1, 1, 2, 2); }), {"rank 2", "world_size 2"});
  expect_mentions(error_of([&] { TokenLoader({shard}, 256, 0, 4); }), {"batch_size 0"});
  expect_mentions(error_of([&] { TokenLoader({}, 256, 1, 1); }), {"no shards"});
}

TEST(TokenLoader, SeekRejectsCursorsOutsideTheShards) {
  ScratchDir dir;
  TokenLoader loader({counting_shard(dir / "a.bin", 21), counting_shard(dir / "b.bin", 30)}, 256, 2, 4);
  expect_mentions(error_of([&] { loader.seek({0, 2, 0}); }), {"shard 2", "2 shards"});
  expect_mentions(error_of([&] { loader.seek({0, 0, 16}); }), {"position 16", "a.bin", "21 tokens", "9 tokens"});
  loader.seek({3, 1, 16});
  EXPECT_EQ(next(loader).inputs, range(16, 8));
  EXPECT_EQ(loader.cursor(), (Cursor{4, 0, 0}));
}

TEST(Cursor, JsonRoundTripAndValidation) {
  Cursor cursor{3, 1, 123456789012ULL};
  EXPECT_EQ(cursor_from_json(cursor_to_json(cursor)), cursor);
  EXPECT_EQ(cursor_to_json(cursor), nlohmann::json::parse(R"({"epoch":3,"shard":1,"position":123456789012})"));
  expect_mentions(error_of([] { cursor_from_json(nlohmann::json::parse(R"({"epoch":0,"shard":1})")); }),
                  {"missing field \"position\""});
  expect_mentions(error_of([] { cursor_from_json(nlohmann::json::parse(R"({"epoch":-1,"shard":0,"position":0})")); }),
                  {"\"epoch\"", "non-negative integer", "-1"});
  expect_mentions(error_of([] { cursor_from_json(nlohmann::json::parse(R"({"epoch":0,"shard":"x","position":0})")); }),
                  {"\"shard\"", "\"x\""});
  expect_mentions(error_of([] { cursor_from_json(nlohmann::json::parse("[1,2,3]")); }), {"object", "[1,2,3]"});
}

TEST(ListShards, ReturnsTheSplitsShardsSortedAndExplainsAbsence) {
  ScratchDir dir;
  for (const char* name : {"train_000001.bin", "train_000000.bin", "val_000000.bin", "notes.txt", "train_x.txt"}) {
    write_file(dir / name, "");
  }
  EXPECT_EQ(list_shards(dir.path(), "train"),
            (std::vector<fs::path>{dir / "train_000000.bin", dir / "train_000001.bin"}));
  EXPECT_EQ(list_shards(dir.path(), "val"), (std::vector<fs::path>{dir / "val_000000.bin"}));
  expect_mentions(error_of([&] { list_shards(dir.path(), "test"); }), {"no test shards", dir.path().string(), "strait prepare"});
  expect_mentions(error_of([&] { list_shards(dir / "missing", "train"); }), {"missing", "strait prepare"});
}

}  // namespace
}  // namespace strait::data
