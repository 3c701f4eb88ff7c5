// `strait prepare`: turns text files into token shards plus the tokenizer that made them.
//
// Output directory:
//   train_000000.bin ...  val_000000.bin ...   llm.c shards (see shard.h)
//   tokenizer.json        {"type":"byte","vocab_size":256} or
//                         {"type":"sentencepiece","vocab_size":N,"model":"tokenizer.model"}
//   tokenizer.model       the SentencePiece model (bpe only)
//   prepare.json          the options and the counts
// The directory is built under a temporary name and appears complete or not at all.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace strait::data {

struct PrepareOptions {
  // Files and/or directories. A directory contributes its regular files, recursively, sorted by
  // path, skipping hidden files and directories.
  std::vector<std::filesystem::path> inputs;
  std::filesystem::path out_dir;
  std::string tokenizer = "byte";  // "byte" or "bpe"
  int vocab_size = 4096;           // for "bpe", in [259, 65535]
  std::string format = "auto";     // "auto", "text" or "brown"
  double val_fraction = 0.05;      // fraction of documents (files) held out, at least one each side
  size_t shard_tokens = 100'000'000;
  bool overwrite = false;  // replace an existing prepared directory
};

struct PrepareSummary {
  size_t documents_train = 0;
  size_t documents_val = 0;
  size_t tokens_train = 0;
  size_t tokens_val = 0;
  int vocab_size = 0;
  // Final paths inside out_dir: the train shards in order, then the val shards in order.
  std::vector<std::filesystem::path> shards;
};

// Throws strait::Error on bad options, missing inputs, no documents, or any I/O failure; out_dir
// is then exactly as it was. `progress` receives one-line human-readable status messages.
PrepareSummary prepare_corpus(const PrepareOptions& options,
                              const std::function<void(const std::string&)>& progress = {});

}  // namespace strait::data
