#include "strait/data/sentencepiece_bridge.h"

#include <dlfcn.h>
#include <filesystem>
#include <unistd.h>

#include "strait/core/error.h"

namespace strait::data {

namespace {

namespace fs = std::filesystem;

struct ModuleApi {
  void (*free)(void*);
  void* (*load)(const char*, size_t, char**);
  void (*unload)(void*);
  int (*vocab_size)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char**);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char**);
  int (*train)(const char* const*, const size_t*, size_t, const char*, char**, size_t*, char**);
};

std::vector<fs::path> module_candidates() {
  std::vector<fs::path> candidates;
  if (const char* path = std::getenv("STRAIT_SENTENCEPIECE_MODULE")) candidates.emplace_back(path);
  std::error_code error;
  fs::path executable = fs::read_symlink("/proc/self/exe", error);
  if (!error) candidates.push_back(executable.parent_path() / "libstrait_sentencepiece.so");
  candidates.emplace_back(STRAIT_SENTENCEPIECE_MODULE_PATH);
  return candidates;
}

template <typename Function>
void bind(void* handle, const char* name, Function& function, const fs::path& path) {
  function = reinterpret_cast<Function>(dlsym(handle, name));
  if (function == nullptr) throw Error("SentencePiece module " + path.string() + " lacks " + name);
}

const ModuleApi& module_api() {
  static const ModuleApi api = [] {
    std::string tried;
    for (const auto& path : module_candidates()) {
      if (!fs::exists(path)) {
        tried += " " + path.string();
        continue;
      }
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) throw Error("cannot load the SentencePiece module " + path.string() + ": " + dlerror());
      ModuleApi loaded{};
      bind(handle, "strait_spm_free", loaded.free, path);
      bind(handle, "strait_spm_load", loaded.load, path);
      bind(handle, "strait_spm_unload", loaded.unload, path);
      bind(handle, "strait_spm_vocab_size", loaded.vocab_size, path);
      bind(handle, "strait_spm_encode", loaded.encode, path);
      bind(handle, "strait_spm_decode", loaded.decode, path);
      bind(handle, "strait_spm_train", loaded.train, path);
      return loaded;
    }
    throw Error("SentencePiece tokenizers need libstrait_sentencepiece.so, not found at:" + tried +
                " (set STRAIT_SENTENCEPIECE_MODULE to its path)");
  }();
  return api;
}

// Takes ownership of a message the module allocated.
[[noreturn]] void throw_module_error(const std::string& context, char* message) {
  std::string text = message != nullptr ? message : "unknown error";
  module_api().free(message);
  throw Error(context + ": " + text);
}

}  // namespace

SentencePieceModel::SentencePieceModel(const std::string& serialized_model, const std::string& origin)
    : origin_(origin) {
  char* error = nullptr;
  processor_ = module_api().load(serialized_model.data(), serialized_model.size(), &error);
  if (processor_ == nullptr) throw_module_error("cannot load SentencePiece model " + origin, error);
}

SentencePieceModel::~SentencePieceModel() { module_api().unload(processor_); }

int SentencePieceModel::vocab_size() const { return module_api().vocab_size(processor_); }

std::vector<int> SentencePieceModel::encode(const std::string& text) const {
  int* ids = nullptr;
  size_t count = 0;
  char* error = nullptr;
  if (module_api().encode(processor_, text.data(), text.size(), &ids, &count, &error) != 0) {
    throw_module_error("SentencePiece model " + origin_ + " cannot encode text", error);
  }
  std::vector<int> result(ids, ids + count);
  module_api().free(ids);
  return result;
}

std::string SentencePieceModel::decode(const std::vector<int>& ids) const {
  char* text = nullptr;
  size_t size = 0;
  char* error = nullptr;
  if (module_api().decode(processor_, ids.data(), ids.size(), &text, &size, &error) != 0) {
    throw_module_error("SentencePiece model " + origin_ + " cannot decode ids", error);
  }
  std::string result(text, size);
  module_api().free(text);
  return result;
}

std::string train_sentencepiece(const std::vector<std::string>& sentences, const std::map<std::string, std::string>& flags) {
  std::vector<const char*> pointers;
  std::vector<size_t> sizes;
  for (const auto& sentence : sentences) pointers.push_back(sentence.data()), sizes.push_back(sentence.size());
  std::string options;
  for (const auto& [key, value] : flags) options += key + "=" + value + "\n";
  char* model = nullptr;
  size_t model_size = 0;
  char* error = nullptr;
  if (module_api().train(pointers.data(), sizes.data(), pointers.size(), options.c_str(), &model, &model_size, &error) != 0) {
    throw_module_error("SentencePiece training failed", error);
  }
  std::string result(model, model_size);
  module_api().free(model);
  return result;
}

}  // namespace strait::data
