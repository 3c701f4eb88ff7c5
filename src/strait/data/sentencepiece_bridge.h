// SentencePiece, reached through the privately loaded module libstrait_sentencepiece.so
// (see sentencepiece_module/module.cpp for why it cannot be linked directly).
//
// The module is looked for, in order: $STRAIT_SENTENCEPIECE_MODULE, next to the running
// executable, and where the build put it. A missing module is an error that says so.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace strait::data {

class SentencePieceModel {
 public:
  // `origin` names the model in error messages.
  SentencePieceModel(const std::string& serialized_model, const std::string& origin);
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const;

 private:
  void* processor_;
  std::string origin_;
};

// Trains a model from sentences with SentencePiece trainer flags; returns it serialized.
std::string train_sentencepiece(const std::vector<std::string>& sentences, const std::map<std::string, std::string>& flags);

}  // namespace strait::data
