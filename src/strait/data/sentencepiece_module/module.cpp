// The only code that links SentencePiece. It is built as a loadable module
// (libstrait_sentencepiece.so) with a plain C interface and opened by sentencepiece_bridge.cpp
// with RTLD_LOCAL | RTLD_DEEPBIND, because Debian's libsentencepiece carries its own copy of
// protobuf-lite and exports its symbols: linked into the same process as LibTorch (which loads
// the full libprotobuf), the two copies interpose and the process crashes while libprotobuf
// initialises, before main(). Loaded privately, each copy only ever sees itself.
//
// Every function reports failure by returning nonzero (or null) and setting *error to a
// malloc'ed message that the caller releases with strait_spm_free.
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace {

char* copy_out(const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy != nullptr) std::memcpy(copy, text.c_str(), text.size() + 1);
  return copy;
}

int fail(char** error, const std::string& message) {
  *error = copy_out(message);
  return 1;
}

class VectorSentenceIterator final : public sentencepiece::SentenceIterator {
 public:
  VectorSentenceIterator(const char* const* sentences, const size_t* sizes, size_t count)
      : sentences_(sentences), sizes_(sizes), count_(count) { load(); }
  bool done() const override { return index_ >= count_; }
  void Next() override { ++index_; load(); }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    if (index_ < count_) current_.assign(sentences_[index_], sizes_[index_]);
  }
  const char* const* sentences_;
  const size_t* sizes_;
  size_t count_;
  size_t index_ = 0;
  std::string current_;
};

}  // namespace

extern "C" {

void strait_spm_free(void* pointer) { std::free(pointer); }

void* strait_spm_load(const char* model, size_t size, char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  auto status = processor->LoadFromSerializedProto(std::string(model, size));
  if (!status.ok()) {
    delete processor;
    fail(error, status.ToString());
    return nullptr;
  }
  return processor;
}

void strait_spm_unload(void* processor) { delete static_cast<sentencepiece::SentencePieceProcessor*>(processor); }

int strait_spm_vocab_size(void* processor) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

int strait_spm_encode(void* processor, const char* text, size_t size, int** ids, size_t* count, char** error) {
  std::vector<int> encoded;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, size), &encoded);
  if (!status.ok()) return fail(error, status.ToString());
  *count = encoded.size();
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, encoded.size()) * sizeof(int)));
  if (*ids == nullptr) return fail(error, "out of memory");
  std::memcpy(*ids, encoded.data(), encoded.size() * sizeof(int));
  return 0;
}

int strait_spm_decode(void* processor, const int* ids, size_t count, char** text, size_t* size, char** error) {
  std::string decoded;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Decode(
      std::vector<int>(ids, ids + count), &decoded);
  if (!status.ok()) return fail(error, status.ToString());
  *size = decoded.size();
  *text = copy_out(decoded);
  return *text == nullptr ? fail(error, "out of memory") : 0;
}

// options: "key=value" lines of SentencePiece trainer flags.
int strait_spm_train(const char* const* sentences, const size_t* sizes, size_t count, const char* options,
                     char** model, size_t* model_size, char** error) {
  std::unordered_map<std::string, std::string> flags;
  std::string line;
  for (const char* c = options;; ++c) {
    if (*c == '\n' || *c == '\0') {
      if (auto equals = line.find('='); equals != std::string::npos) flags[line.substr(0, equals)] = line.substr(equals + 1);
      line.clear();
      if (*c == '\0') break;
    } else {
      line.push_back(*c);
    }
  }
  VectorSentenceIterator iterator(sentences, sizes, count);
  std::string serialized;
  auto status = sentencepiece::SentencePieceTrainer::Train(flags, &iterator, &serialized);
  if (!status.ok()) return fail(error, status.ToString());
  *model_size = serialized.size();
  *model = static_cast<char*>(std::malloc(std::max<size_t>(1, serialized.size())));
  if (*model == nullptr) return fail(error, "out of memory");
  std::memcpy(*model, serialized.data(), serialized.size());
  return 0;
}

}  // extern "C"
