// prepare on the real binary: documents with no text are skipped with a warning (never the only
// validation document), and an output that overlaps an input (the same directory, one inside
// the other, through a symlink) is refused before anything is written; a vocabulary size that
// SentencePiece cannot train is explained in terms of --vocab-size.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::quoted;

class PrepareInput : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_file(corpus() / "a.txt", "The first document has a sentence or two.\n");
    testing::write_file(corpus() / "b.txt", "The second one is here as well.\n");
  }
  fs::path corpus() const { return scratch_ / "corpus"; }

  testing::ScratchDir scratch_;
};

TEST_F(PrepareInput, EmptyDocumentsAreSkippedWithAWarning) {
  // Sorted last, the empty file would be the one validation document (every 20th, at least one).
  testing::write_file(corpus() / "c-blank.txt", " \n\t\n");
  testing::write_file(corpus() / "d-empty.txt", "");
  const fs::path out = scratch_ / "prepared";
  const auto result = testing::run_strait("prepare " + quoted(corpus()) + " --out " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const char* name : {"c-blank.txt", "d-empty.txt"}) {
    EXPECT_NE(result.output.find("prepare: warning: skipping " + (corpus() / name).string() +
                                 ": it is empty (or only whitespace)"),
              std::string::npos)
        << result.output;
  }
  const auto summary = nlohmann::json::parse(result.output.substr(result.output.rfind("{\"")));
  EXPECT_EQ(summary.at("documents_train"), 1);
  EXPECT_EQ(summary.at("documents_val"), 1);
  EXPECT_GT(summary.at("tokens_val").get<int>(), 10) << "b.txt is the validation document";
}

TEST_F(PrepareInput, AnOutputOverlappingAnInputIsRefused) {
  // An earlier prepare's output (its marker and a shard), which --overwrite may replace.
  const fs::path prepared = scratch_ / "prepared";
  testing::write_file(prepared / "prepare.json", "{}");
  testing::write_file(prepared / "train_000000.bin", "tokens");
  fs::create_directory_symlink(corpus(), scratch_ / "link");
  const std::string advice = "; inputs and output may not overlap: choose an output directory outside every input";
  const std::vector<std::pair<std::string, std::string>> cases = {
      // Its own output as input, replacing it: the footgun that tokenized its own shards.
      {quoted(prepared) + " --out " + quoted(prepared) + " --overwrite",
       "prepare: the output " + prepared.string() + " is the same directory as the input " + prepared.string() + advice},
      {quoted(prepared / "train_000000.bin") + " " + quoted(corpus()) + " --out " + quoted(prepared) + " --overwrite",
       "prepare: the output " + prepared.string() + " contains the input " + (prepared / "train_000000.bin").string() + advice},
      // An output inside an input, here through a symlink: the paths differ, the directories do not.
      {quoted(scratch_ / "link") + " --out " + quoted(corpus() / "tokens"),
       "prepare: the output " + (corpus() / "tokens").string() + " is inside the input " + (scratch_ / "link").string() +
           " (resolved: " + fs::canonical(corpus()).string() + "/tokens and " + fs::canonical(corpus()).string() + ")" + advice},
  };
  for (const auto& [arguments, message] : cases) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait("prepare " + arguments);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("strait: error: " + message), std::string::npos)
        << "expected '" << message << "' in:\n" << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: prepare " << arguments;
  }
}

TEST_F(PrepareInput, AVocabularySizeTheTextCannotSupportIsExplainedInStraitsTerms) {
  // SentencePiece's own words name a source line, the failed check, and (for the second case)
  // its --character_coverage flag, which strait does not have.
  const auto expect_explained = [&](const std::string& arguments, const std::vector<std::string>& phrases) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait("prepare " + quoted(corpus()) + " --out " + quoted(scratch_ / "bpe") +
                                            " --tokenizer bpe " + arguments);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    for (const std::string& phrase : phrases) {
      EXPECT_NE(result.output.find(phrase), std::string::npos) << "expected '" << phrase << "' in:\n" << result.output;
    }
    for (const char* noise : {"Internal:", ".cc(", "character_coverage", "Please set"}) {
      EXPECT_EQ(result.output.find(noise), std::string::npos) << noise << " in:\n" << result.output;
    }
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: prepare " << arguments;
  };
  // Two short documents cannot fill 5000 pieces; SentencePiece computes how many they can.
  expect_explained("--vocab-size 5000",
                   {"strait: error: training a BPE tokenizer with vocab_size 5000 failed: this text yields at most ",
                    " pieces, fewer than the vocab_size 5000 asked for; prepare with --vocab-size ",
                    " or less, or with more text"});
  // 400 distinct CJK characters, the space and the 17 others of a.txt need 418 pieces beyond the
  // 259 fixed ones. The file sorts first, so that it is trained on (the last document, b.txt, is
  // held out for validation).
  std::string text;
  for (int i = 0; i < 400; ++i) {
    const int code = 0x4E00 + i;  // three UTF-8 bytes: 1110xxxx 10xxxxxx 10xxxxxx
    text += static_cast<char>(0xE0 | (code >> 12));
    text += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    text += static_cast<char>(0x80 | (code & 0x3F));
    text += i % 10 == 9 ? '\n' : ' ';
  }
  testing::write_file(corpus() / "a-characters.txt", text);
  expect_explained("--vocab-size 300",
                   {"strait: error: training a BPE tokenizer with vocab_size 300 failed: vocab_size 300 is too small "
                    "for this text: its 418 distinct characters need a piece each besides the 259 fixed ones (256 "
                    "bytes, 3 special); prepare with --vocab-size 677 or more"});
}

}  // namespace
}  // namespace strait
