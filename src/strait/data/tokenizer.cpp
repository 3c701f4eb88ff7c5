#include "strait/data/tokenizer.h"

#include <map>
#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/data/sentencepiece_bridge.h"

namespace strait::data {

namespace fs = std::filesystem;

namespace {

constexpr int kByteVocabSize = 256;
constexpr int kMinBpeVocabSize = 259;
constexpr int kMaxBpeVocabSize = 65535;
// SentencePiece keeps every training sentence in memory; a fixed-size sample bounds memory and
// training time (the 1M-word Brown corpus has ~57k sentences, so it is used whole).
constexpr size_t kMaxTrainingSentences = 200'000;
constexpr uint32_t kSampleSeed = 20240520;

void check_id(int id, size_t index, int vocab_size, const std::string& kind) {
  if (id < 0 || id >= vocab_size) {
    throw Error(kind + " tokenizer: cannot decode id " + std::to_string(id) + " at index " + std::to_string(index) +
                ": outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
  }
}

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int> encode(const std::string& text) const override {
    std::vector<int> ids;
    ids.reserve(text.size());
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      check_id(ids[i], i, kByteVocabSize, kind());
      text.push_back(static_cast<char>(ids[i]));
    }
    return text;
  }
  int vocab_size() const override { return kByteVocabSize; }
  std::string kind() const override { return "byte"; }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& serialized_model, const std::string& origin)
      : model_(serialized_model, origin) {}
  std::vector<int> encode(const std::string& text) const override { return model_.encode(text); }
  std::string decode(const std::vector<int>& ids) const override {
    for (size_t i = 0; i < ids.size(); ++i) check_id(ids[i], i, vocab_size(), kind());
    return model_.decode(ids);
  }
  int vocab_size() const override { return model_.vocab_size(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  SentencePieceModel model_;
};

// Reservoir sampling with our own fixed-seed generator: SentencePiece's own sampler draws from
// a thread-local generator whose state carries over between trainings in one process, which
// would make two identical `prepare` runs disagree.
std::vector<std::string> sample_sentences(const SentenceSource& source) {
  std::vector<std::string> sample;
  std::mt19937_64 generator(kSampleSeed);
  std::string sentence;
  for (uint64_t seen = 0; source(sentence); ++seen) {
    if (sample.size() < kMaxTrainingSentences) {
      sample.push_back(sentence);
    } else if (uint64_t slot = generator() % (seen + 1); slot < kMaxTrainingSentences) {
      sample[slot] = sentence;
    }
  }
  return sample;
}

std::map<std::string, std::string> bpe_trainer_options(int vocab_size) {
  return {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      // Identity normalization and kept whitespace make decode(encode(text)) == text.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"max_sentence_length", "65536"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", "2"},
      {"minloglevel", "2"},
  };
}

nlohmann::json read_tokenizer_json(const fs::path& file) {
  if (!fs::exists(file)) {
    throw Error("no tokenizer description " + file.string() + "; is " + file.parent_path().string() +
                " a data directory made by `strait prepare`?");
  }
  try {
    nlohmann::json description = nlohmann::json::parse(read_whole_file(file));
    if (!description.is_object()) throw Error(file.string() + ": expected a JSON object, found " + description.dump());
    return description;
  } catch (const nlohmann::json::parse_error& error) {
    throw Error(file.string() + " is not valid JSON: " + error.what());
  }
}

template <typename T>
T required_field(const nlohmann::json& description, const std::string& key, const fs::path& file) {
  if (!description.contains(key)) throw Error(file.string() + ": missing field \"" + key + "\"");
  try {
    return description.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(file.string() + ": field \"" + key + "\" has the wrong type: " + description.at(key).dump());
  }
}

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& data_dir, const nlohmann::json& description,
                                              const fs::path& file) {
  fs::path model = data_dir / required_field<std::string>(description, "model", file);
  if (!fs::exists(model)) throw Error("SentencePiece model " + model.string() + " named in " + file.string() + " does not exist");
  auto tokenizer = make_sentencepiece_tokenizer(read_whole_file(model), model.string());
  int expected = required_field<int>(description, "vocab_size", file);
  if (tokenizer->vocab_size() != expected) {
    throw Error(file.string() + ": vocab_size is " + std::to_string(expected) + " but the model " + model.string() +
                " has " + std::to_string(tokenizer->vocab_size()) + " pieces");
  }
  return tokenizer;
}

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& serialized_model, const std::string& origin) {
  return std::make_unique<SentencePieceTokenizer>(serialized_model, origin);
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& data_dir) {
  fs::path file = data_dir / "tokenizer.json";
  nlohmann::json description = read_tokenizer_json(file);
  auto type = required_field<std::string>(description, "type", file);
  if (type == "sentencepiece") return load_sentencepiece(data_dir, description, file);
  if (type != "byte") throw Error(file.string() + ": unknown tokenizer type \"" + type + "\" (expected \"byte\" or \"sentencepiece\")");
  int vocab_size = required_field<int>(description, "vocab_size", file);
  if (vocab_size != kByteVocabSize) {
    throw Error(file.string() + ": a byte tokenizer has vocab_size 256, found " + std::to_string(vocab_size));
  }
  return make_byte_tokenizer();
}

namespace {

// SentencePiece's trainer fails with its own text: a source location, the failed condition and
// advice in terms of its own flags (--character_coverage), which strait does not have. The two
// failures a vocabulary size causes become advice about --vocab-size; any other keeps
// SentencePiece's words without the location and condition.
std::string explain_trainer_failure(const std::string& text, int vocab_size) {
  const std::string asked = "vocab_size " + std::to_string(vocab_size);
  std::smatch match;
  if (std::regex_search(text, match, std::regex(R"(Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+))"))) {
    return "this text yields at most " + match[1].str() + " pieces, fewer than the " + asked +
           " asked for; prepare with --vocab-size " + match[1].str() + " or less, or with more text";
  }
  if (std::regex_search(text, match, std::regex(R"(Vocabulary size is smaller than required_chars\. \d+ vs (\d+))"))) {
    const int needed = std::stoi(match[1].str());
    return asked + " is too small for this text: its " + std::to_string(needed - kMinBpeVocabSize) +
           " distinct characters need a piece each besides the 259 fixed ones (256 bytes, 3 special); prepare "
           "with --vocab-size " + std::to_string(needed) + " or more";
  }
  return std::regex_replace(text, std::regex(R"([A-Za-z]+: \S+\.cc\(\d+\) \[.*?\] )"), "");
}

}  // namespace

std::string train_bpe_model(const SentenceSource& sentences, int vocab_size) {
  if (vocab_size < kMinBpeVocabSize || vocab_size > kMaxBpeVocabSize) {
    throw Error("BPE vocab_size " + std::to_string(vocab_size) + " is outside [259, 65535] (256 byte pieces and 3 "
                "special pieces come first, and ids must fit in uint16)");
  }
  std::vector<std::string> sample = sample_sentences(sentences);
  if (sample.empty()) throw Error("cannot train a BPE tokenizer: the training documents contain no text");
  try {
    return train_sentencepiece(sample, bpe_trainer_options(vocab_size));
  } catch (const Error& error) {
    throw Error("training a BPE tokenizer with vocab_size " + std::to_string(vocab_size) +
                " failed: " + explain_trainer_failure(error.what(), vocab_size));
  }
}

}  // namespace strait::data
