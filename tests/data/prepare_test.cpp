#include "strait/data/prepare.h"

#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data_test_util.h"
#include "strait/data/shard.h"
#include "strait/data/tokenizer.h"
#include "test_support.h"

namespace strait::data {
namespace {

namespace fs = std::filesystem;
using strait::testing::error_of;
using strait::testing::expect_mentions;
using strait::testing::read_file;
using strait::testing::ScratchDir;
using strait::testing::snapshot_tree;
using strait::testing::write_file;

// Byte-tokenized shards decode by turning each token back into its byte.
std::string shard_text(const std::vector<fs::path>& shards) {
  std::string text;
  for (const fs::path& shard : shards) {
    for (uint16_t token : read_shard(shard)) text.push_back(static_cast<char>(token));
  }
  return text;
}

std::vector<fs::path> shards_named(const fs::path& dir, std::initializer_list<const char*> names) {
  std::vector<fs::path> paths;
  for (const char* name : names) paths.push_back(dir / name);
  return paths;
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(read_file(path)); }

// Four corpus files (cb02 sorts last, so a 0.25 split holds it out) and non-corpus files.
void write_brown_corpus(const fs::path& dir) {
  write_file(dir / "ca01",
             "\n\n\tThe/at jury/nn said/vbd ``/`` it/pps is/bez fine/jj ''/'' ./.\n\n\n"
             "\tA/at second/od paragraph/nn ,/, here/rb ./.\n");
  write_file(dir / "ca02", "\n\n\tPrices/nns (/( in/in dollars/nns )/) rose/vbd ;/. why/wrb ?/.\n");
  write_file(dir / "cb01", "\n\n\tHe/pps left/vbd\n\tat/in noon/nn ./.\n");
  write_file(dir / "cb02", "\n\n\tShe/pps stayed/vbd !/.\n");
  write_file(dir / "README", "BROWN CORPUS\nA Standard Corpus of Present-Day Edited American English.\n");
  write_file(dir / "cats.txt", "ca01 news\nca02 news\n");
}

PrepareOptions byte_options(const fs::path& input, const fs::path& out) {
  PrepareOptions options;
  options.inputs = {input};
  options.out_dir = out;
  return options;
}

TEST(Prepare, BrownCorpusIsDetaggedSplitAndDescribed) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  PrepareOptions options = byte_options(scratch / "corpus", scratch / "out");
  options.val_fraction = 0.25;
  std::vector<std::string> messages;
  PrepareSummary summary = prepare_corpus(options, [&](const std::string& m) { messages.push_back(m); });

  const std::string train =
      "The jury said \"it is fine\".\nA second paragraph, here.\n\n"
      "Prices (in dollars) rose; why?\n\n"
      "He left at noon.\n\n";
  const std::string val = "She stayed!\n\n";
  EXPECT_EQ(shard_text(shards_named(scratch / "out", {"train_000000.bin"})), train);
  EXPECT_EQ(shard_text(shards_named(scratch / "out", {"val_000000.bin"})), val);
  EXPECT_EQ(summary.documents_train, 3u);
  EXPECT_EQ(summary.documents_val, 1u);
  EXPECT_EQ(summary.tokens_train, train.size());
  EXPECT_EQ(summary.tokens_val, val.size());
  EXPECT_EQ(summary.vocab_size, 256);
  EXPECT_EQ(summary.shards, shards_named(scratch / "out", {"train_000000.bin", "val_000000.bin"}));
  EXPECT_EQ(entries(scratch / "out"), (std::set<std::string>{"train_000000.bin", "val_000000.bin", "tokenizer.json", "prepare.json"}));
  EXPECT_EQ(entries(scratch.path()), (std::set<std::string>{"corpus", "out"}));
  EXPECT_EQ(read_json(scratch / "out" / "tokenizer.json"), (nlohmann::json{{"type", "byte"}, {"vocab_size", 256}}));
  nlohmann::json record = read_json(scratch / "out" / "prepare.json");
  EXPECT_EQ(record["documents_train"], 3);
  EXPECT_EQ(record["tokens_val"], val.size());
  EXPECT_EQ(record["tokenizer"], "byte");
  EXPECT_EQ(load_tokenizer(scratch / "out")->kind(), "byte");
  EXPECT_FALSE(messages.empty());
}

TEST(Prepare, ExplicitBrownFormatAlsoSkipsNonCorpusFiles) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  PrepareOptions options = byte_options(scratch / "corpus", scratch / "out");
  options.format = "brown";
  options.val_fraction = 0.25;
  EXPECT_EQ(prepare_corpus(options).documents_train, 3u);
  options.format = "text";
  options.out_dir = scratch / "out_text";
  PrepareSummary as_text = prepare_corpus(options);
  EXPECT_EQ(as_text.documents_train + as_text.documents_val, 6u);
}

TEST(Prepare, SplitIsDeterministicAndSpreadOverTheSortedDocuments) {
  ScratchDir scratch;
  for (int i = 0; i < 10; ++i) write_file(scratch / "docs" / ("d0" + std::to_string(i) + ".txt"), "doc " + std::to_string(i));
  PrepareOptions options = byte_options(scratch / "docs", scratch / "a");
  options.val_fraction = 0.2;
  prepare_corpus(options);
  EXPECT_EQ(shard_text(shards_named(scratch / "a", {"val_000000.bin"})), "doc 4\n\ndoc 9\n\n");
  EXPECT_EQ(shard_text(shards_named(scratch / "a", {"train_000000.bin"})),
            "doc 0\n\ndoc 1\n\ndoc 2\n\ndoc 3\n\ndoc 5\n\ndoc 6\n\ndoc 7\n\ndoc 8\n\n");
  options.out_dir = scratch / "b";
  prepare_corpus(options);
  for (const char* name : {"train_000000.bin", "val_000000.bin", "tokenizer.json"}) {
    EXPECT_EQ(read_file(scratch / "a" / name), read_file(scratch / "b" / name)) << name;
  }
}

TEST(Prepare, DirectoriesAreReadRecursivelyInPathOrderSkippingHiddenEntries) {
  ScratchDir scratch;
  write_file(scratch / "in" / "b.txt", "B");
  write_file(scratch / "in" / "a" / "z.txt", "AZ");
  write_file(scratch / "in" / ".hidden.txt", "hidden file");
  write_file(scratch / "in" / ".git" / "config", "hidden directory");
  write_file(scratch / "extra.txt", "E");
  PrepareOptions options = byte_options(scratch / "in", scratch / "out");
  options.inputs.push_back(scratch / "extra.txt");
  options.val_fraction = 0.3;  // one of three: the last
  prepare_corpus(options);
  EXPECT_EQ(shard_text(shards_named(scratch / "out", {"train_000000.bin"})), "AZ\n\nB\n\n");
  EXPECT_EQ(shard_text(shards_named(scratch / "out", {"val_000000.bin"})), "E\n\n");
}

TEST(Prepare, ShardsHoldAtMostShardTokensAndTheTailIsBalanced) {
  ScratchDir scratch;
  for (char c : {'a', 'b', 'c'}) write_file(scratch / "in" / std::string(1, c), std::string(40, c));
  PrepareOptions options = byte_options(scratch / "in", scratch / "out30");
  options.val_fraction = 0.3;  // documents a and b (84 tokens) train
  options.shard_tokens = 30;
  PrepareSummary summary = prepare_corpus(options);
  std::string train = std::string(40, 'a') + "\n\n" + std::string(40, 'b') + "\n\n";
  auto train30 = shards_named(scratch / "out30", {"train_000000.bin", "train_000001.bin", "train_000002.bin"});
  EXPECT_EQ(shard_text(train30), train);
  EXPECT_EQ(read_shard_token_count(train30[2]), 24u);
  // The held-out document (42 tokens) is 30 + a 12-token tail, rebalanced to 21 + 21.
  auto val30 = shards_named(scratch / "out30", {"val_000000.bin", "val_000001.bin"});
  EXPECT_EQ(shard_text(val30), std::string(40, 'c') + "\n\n");
  EXPECT_EQ(read_shard_token_count(val30[0]), 21u);
  EXPECT_EQ(read_shard_token_count(val30[1]), 21u);
  std::vector<fs::path> all = train30;
  all.insert(all.end(), val30.begin(), val30.end());
  EXPECT_EQ(summary.shards, all);

  // 40 + 40 + 4: the 4-token tail joins the second shard and the two are split 22 + 22.
  options.out_dir = scratch / "out40";
  options.shard_tokens = 40;
  prepare_corpus(options);
  auto train40 = shards_named(scratch / "out40", {"train_000000.bin", "train_000001.bin", "train_000002.bin"});
  EXPECT_EQ(shard_text(train40), train);
  EXPECT_EQ(read_shard_token_count(train40[0]), 40u);
  EXPECT_EQ(read_shard_token_count(train40[1]), 22u);
  EXPECT_EQ(read_shard_token_count(train40[2]), 22u);
  EXPECT_FALSE(fs::exists(scratch / "out40" / "train_000003.bin"));
}

TEST(Prepare, ExistingDirectoryIsKeptUnlessOverwriteIsGiven) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  PrepareOptions options = byte_options(scratch / "corpus", scratch / "out");
  prepare_corpus(options);
  auto before = snapshot_tree(scratch / "out");

  options.val_fraction = 0.5;
  expect_mentions(error_of([&] { prepare_corpus(options); }), {(scratch / "out").string(), "already exists", "--overwrite"});
  EXPECT_EQ(snapshot_tree(scratch / "out"), before);
  EXPECT_EQ(entries(scratch.path()), (std::set<std::string>{"corpus", "out"}));

  options.overwrite = true;
  PrepareSummary summary = prepare_corpus(options);
  EXPECT_EQ(summary.documents_val, 2u);
  EXPECT_NE(snapshot_tree(scratch / "out"), before);
  EXPECT_EQ(read_json(scratch / "out" / "prepare.json")["documents_val"], 2);
  EXPECT_EQ(entries(scratch.path()), (std::set<std::string>{"corpus", "out"}));
}

TEST(Prepare, FailedOverwriteLeavesTheOldDirectoryIntact) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  PrepareOptions options = byte_options(scratch / "corpus", scratch / "out");
  prepare_corpus(options);
  auto before = snapshot_tree(scratch / "out");
  options.overwrite = true;
  options.tokenizer = "bpe";
  options.vocab_size = 5000;  // far more than four sentences can yield: training fails mid-way
  expect_mentions(error_of([&] { prepare_corpus(options); }), {"vocab_size 5000"});
  EXPECT_EQ(snapshot_tree(scratch / "out"), before);
  EXPECT_EQ(entries(scratch.path()), (std::set<std::string>{"corpus", "out"}));
}

TEST(Prepare, OverwriteRefusesADirectoryItDidNotMake) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  write_file(scratch / "home" / "thesis.tex", "years of work");
  PrepareOptions options = byte_options(scratch / "corpus", scratch / "home");
  options.overwrite = true;
  expect_mentions(error_of([&] { prepare_corpus(options); }), {"home", "prepare.json", "refusing"});
  EXPECT_EQ(read_file(scratch / "home" / "thesis.tex"), "years of work");
}

TEST(Prepare, BadOptionsAndInputsAreClearErrors) {
  ScratchDir scratch;
  write_brown_corpus(scratch / "corpus");
  auto error_with = [&](const std::function<void(PrepareOptions&)>& change) {
    PrepareOptions options = byte_options(scratch / "corpus", scratch / "out");
    change(options);
    return error_of([&] { prepare_corpus(options); });
  };
  expect_mentions(error_with([](auto& o) { o.inputs.clear(); }), {"no inputs"});
  expect_mentions(error_with([&](auto& o) { o.inputs = {scratch / "nope"}; }), {"nope", "does not exist"});
  expect_mentions(error_with([](auto& o) { o.tokenizer = "wordpiece"; }), {"unknown tokenizer \"wordpiece\"", "bpe"});
  expect_mentions(error_with([](auto& o) { o.format = "xml"; }), {"unknown format \"xml\"", "brown"});
  expect_mentions(error_with([](auto& o) {
    o.tokenizer = "bpe";
    o.vocab_size = 258;
  }), {"vocab_size 258", "[259, 65535]"});
  expect_mentions(error_with([](auto& o) {
    o.tokenizer = "bpe";
    o.vocab_size = 65536;
  }), {"vocab_size 65536"});
  expect_mentions(error_with([](auto& o) { o.val_fraction = 0; }), {"val_fraction 0", "(0, 1)"});
  expect_mentions(error_with([](auto& o) { o.val_fraction = 1; }), {"val_fraction 1", "(0, 1)"});
  expect_mentions(error_with([](auto& o) { o.shard_tokens = 0; }), {"shard_tokens 0"});
  expect_mentions(error_with([&](auto& o) { o.inputs = {scratch / "corpus" / "ca01"}; }), {"only 1 document", "ca01"});
  fs::create_directories(scratch / "empty");
  expect_mentions(error_with([&](auto& o) { o.inputs = {scratch / "empty"}; }), {"no documents found"});
  EXPECT_FALSE(fs::exists(scratch / "out"));
  EXPECT_EQ(entries(scratch.path()), (std::set<std::string>{"corpus", "empty"}));
}

// Sentences from a small vocabulary: enough text for SentencePiece to learn a few hundred pieces.
std::string generated_text(uint32_t seed, size_t sentences) {
  static const char* kWords[] = {"river", "stone", "light", "garden", "market", "winter", "letter", "window",
                                 "quiet", "bright", "slowly", "under", "across", "people", "morning", "silver",
                                 "the", "a", "and", "of", "to", "in", "was", "were", "over", "small", "old", "green"};
  std::mt19937 random(seed);
  std::string text;
  for (size_t s = 0; s < sentences; ++s) {
    size_t length = 5 + random() % 8;
    for (size_t w = 0; w < length; ++w) {
      std::string word = kWords[random() % (sizeof kWords / sizeof *kWords)];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      text += (w == 0 ? "" : " ") + word;
    }
    text += s % 6 == 5 ? ".\n" : ". ";
  }
  return text;
}

TEST(Prepare, BpeTokenizerIsTrainedSavedAndRoundTrips) {
  ScratchDir scratch;
  std::vector<std::string> texts;
  for (uint32_t i = 0; i < 3; ++i) {
    texts.push_back(generated_text(i, 1500));
    write_file(scratch / "text" / ("part" + std::to_string(i) + ".txt"), texts.back());
  }
  PrepareOptions options = byte_options(scratch / "text", scratch / "out");
  options.tokenizer = "bpe";
  options.vocab_size = 384;
  options.val_fraction = 0.3;  // part2 is held out
  PrepareSummary summary = prepare_corpus(options);

  EXPECT_EQ(summary.vocab_size, 384);
  EXPECT_EQ(read_json(scratch / "out" / "tokenizer.json"),
            (nlohmann::json{{"type", "sentencepiece"}, {"vocab_size", 384}, {"model", "tokenizer.model"}}));
  auto tokenizer = load_tokenizer(scratch / "out");
  EXPECT_EQ(tokenizer->kind(), "sentencepiece");
  EXPECT_EQ(tokenizer->vocab_size(), 384);
  for (const std::string& text : {std::string("The river was quiet."), std::string("  Zebra? ünïcode 😀\n\n\ttab\r\n")}) {
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
  }
  auto decode_shard = [&](const char* name) {
    std::vector<uint16_t> tokens = read_shard(scratch / "out" / name);
    return tokenizer->decode(std::vector<int>(tokens.begin(), tokens.end()));
  };
  EXPECT_EQ(decode_shard("train_000000.bin"), texts[0] + "\n\n" + texts[1] + "\n\n");
  EXPECT_EQ(decode_shard("val_000000.bin"), texts[2] + "\n\n");
  // Merges make BPE tokens span several bytes.
  EXPECT_LT(summary.tokens_train * 2, texts[0].size() + texts[1].size());
  expect_mentions(error_of([&] { tokenizer->decode({384}); }), {"id 384"});
}

}  // namespace
}  // namespace strait::data
