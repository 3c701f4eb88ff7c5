#include "strait/data/tokenizer.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data_test_util.h"
#include "test_support.h"

namespace strait::data {
namespace {

using strait::testing::error_of;
using strait::testing::expect_mentions;
using strait::testing::ScratchDir;
using strait::testing::write_file;

TEST(ByteTokenizer, EncodesUtf8BytesAndRoundTrips) {
  auto tokenizer = make_byte_tokenizer();
  EXPECT_EQ(tokenizer->vocab_size(), 256);
  EXPECT_EQ(tokenizer->kind(), "byte");
  EXPECT_EQ(tokenizer->encode("Aé"), (std::vector<int>{65, 0xC3, 0xA9}));
  std::string text = "héllo wörld 😀\n\t\x01\xff";
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
}

TEST(ByteTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  auto tokenizer = make_byte_tokenizer();
  expect_mentions(error_of([&] { tokenizer->decode({72, 300}); }), {"id 300", "index 1", "256"});
  expect_mentions(error_of([&] { tokenizer->decode({-1}); }), {"id -1"});
}

TEST(LoadTokenizer, ReadsAByteDescription) {
  ScratchDir dir;
  write_file(dir / "tokenizer.json", R"({"type":"byte","vocab_size":256})");
  EXPECT_EQ(load_tokenizer(dir.path())->kind(), "byte");
}

TEST(LoadTokenizer, MissingDescriptionIsAClearError) {
  ScratchDir dir;
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"tokenizer.json", "strait prepare"});
}

TEST(LoadTokenizer, CorruptDescriptionsAreClearErrors) {
  ScratchDir dir;
  write_file(dir / "tokenizer.json", "{\"type\": ");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"tokenizer.json", "not valid JSON"});
  write_file(dir / "tokenizer.json", R"({"type":"wordpiece","vocab_size":256})");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"wordpiece", "byte", "sentencepiece"});
  write_file(dir / "tokenizer.json", R"({"type":"byte","vocab_size":300})");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"300", "256"});
  write_file(dir / "tokenizer.json", R"({"vocab_size":256})");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"missing field \"type\""});
}

TEST(LoadTokenizer, MissingOrCorruptModelIsAClearError) {
  ScratchDir dir;
  write_file(dir / "tokenizer.json", R"({"type":"sentencepiece","vocab_size":400,"model":"tokenizer.model"})");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"tokenizer.model", "does not exist"});
  write_file(dir / "tokenizer.model", "this is not a protobuf");
  expect_mentions(error_of([&] { load_tokenizer(dir.path()); }), {"cannot load SentencePiece model", "tokenizer.model"});
}

TEST(TrainBpeModel, RejectsVocabularySizesOutsideTheRange) {
  SentenceSource nothing = [](std::string&) { return false; };
  expect_mentions(error_of([&] { train_bpe_model(nothing, 258); }), {"258", "[259, 65535]"});
  expect_mentions(error_of([&] { train_bpe_model(nothing, 65536); }), {"65536"});
}

TEST(TrainBpeModel, TooLargeAVocabularyForTheTextIsAClearError) {
  int left = 20;
  SentenceSource sentences = [&](std::string& sentence) {
    sentence = "the cat sat on the mat";
    return left-- > 0;
  };
  expect_mentions(error_of([&] { train_bpe_model(sentences, 5000); }),
                  {"vocab_size 5000", "yields at most 290 pieces", "--vocab-size 290 or less"});
}

}  // namespace
}  // namespace strait::data
