// Tokenizers: a byte-level one (no training, any input) and SentencePiece BPE trained by
// `strait prepare`. A prepared data directory records which one its shards were made with in
// tokenizer.json, so training and sampling always decode with the tokenizer that encoded.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace strait::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int> encode(const std::string& text) const = 0;
  // Throws strait::Error on an id outside the vocabulary.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  // "byte" or "sentencepiece", as written in tokenizer.json.
  virtual std::string kind() const = 0;
};

// Byte-level: id = byte value, vocab_size 256, no special tokens.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

// Loads the tokenizer that DIR/tokenizer.json describes:
//   {"type":"byte","vocab_size":256} or {"type":"sentencepiece","vocab_size":N,"model":"tokenizer.model"}
// (the model path is relative to DIR). Throws strait::Error for a missing or corrupt
// tokenizer.json or model file, or a model whose size disagrees with vocab_size.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& data_dir);

// Wraps a serialized SentencePiece model; `origin` names where it came from in error messages.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& serialized_model, const std::string& origin);

// Sets `sentence` to the next training sentence and returns true, or returns false at the end.
using SentenceSource = std::function<bool(std::string& sentence)>;

// Trains a deterministic SentencePiece BPE model with byte fallback (so any text encodes) and
// no normalization (so decode(encode(text)) == text for valid UTF-8) and returns it serialized.
// vocab_size must be in [259, 65535]: 256 byte pieces and <unk>, <s>, </s> come first.
std::string train_bpe_model(const SentenceSource& sentences, int vocab_size);

}  // namespace strait::data
