#include "strait/data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/data/brown.h"
#include "strait/data/identity.h"
#include "strait/data/shard.h"
#include "strait/data/tokenizer.h"

namespace strait::data {

namespace fs = std::filesystem;

namespace {

enum class Format { text, brown, detect };

struct Document {
  fs::path path;
  Format format;
};

struct Corpus {
  std::vector<Document> documents;
  std::vector<bool> is_val;  // parallel to documents
};

void report(const std::function<void(const std::string&)>& progress, const std::string& message) {
  if (progress) progress(message);
}

void validate_options(const PrepareOptions& options) {
  if (options.inputs.empty()) throw Error("prepare: no inputs given; name text files or directories to prepare");
  if (options.out_dir.empty()) throw Error("prepare: no output directory given");
  if (options.tokenizer != "byte" && options.tokenizer != "bpe") {
    throw Error("prepare: unknown tokenizer \"" + options.tokenizer + "\" (expected \"byte\" or \"bpe\")");
  }
  if (options.format != "auto" && options.format != "text" && options.format != "brown") {
    throw Error("prepare: unknown format \"" + options.format + "\" (expected \"auto\", \"text\" or \"brown\")");
  }
  if (options.tokenizer == "bpe" && (options.vocab_size < 259 || options.vocab_size > 65535)) {
    throw Error("prepare: vocab_size " + std::to_string(options.vocab_size) +
                " is outside [259, 65535] (256 byte pieces and 3 special pieces come first; ids must fit in uint16)");
  }
  if (!(options.val_fraction > 0 && options.val_fraction < 1)) {
    std::ostringstream value;
    value << options.val_fraction;
    throw Error("prepare: val_fraction " + value.str() + " is outside (0, 1)");
  }
  if (options.shard_tokens == 0 || options.shard_tokens > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw Error("prepare: shard_tokens " + std::to_string(options.shard_tokens) + " is outside [1, 2147483647]");
  }
}

constexpr OutputKind kPreparedData{"prepare", "prepare.json", "a prepared data directory"};

bool is_hidden(const fs::path& path) { return path.filename().string().rfind('.', 0) == 0; }

// Whether `inner` is `outer` or lies inside it (both canonical).
bool is_within(const fs::path& inner, const fs::path& outer) {
  return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
}

// The output may not overlap any input, by canonical paths (symlinks resolved): prepare would
// read its own output as text, or replace the text it reads. Checked before anything is written.
void check_no_overlap(const PrepareOptions& options) {
  const fs::path out = fs::weakly_canonical(options.out_dir);
  for (const fs::path& input : options.inputs) {
    if (!fs::exists(input)) throw Error("prepare: input " + input.string() + " does not exist");
    const fs::path in = fs::canonical(input);
    const char* how = in == out ? "is the same directory as" : is_within(out, in) ? "is inside" : is_within(in, out) ? "contains" : nullptr;
    if (how == nullptr) continue;
    throw Error("prepare: the output " + options.out_dir.string() + " " + how + " the input " + input.string() +
                (in == fs::path(input).lexically_normal() && out == options.out_dir.lexically_normal()
                     ? ""
                     : " (resolved: " + out.string() + " and " + in.string() + ")") +
                "; inputs and output may not overlap: choose an output directory outside every input");
  }
}

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const bool hidden = is_hidden(it->path());
    if (hidden && it->is_directory()) it.disable_recursion_pending();
    if (!hidden && it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// In auto mode a directory is a Brown corpus when its first Brown-named file reads as tagged
// text; its other files (README, cats.txt, ...) are then skipped.
Format directory_format(const std::vector<fs::path>& files, const std::string& requested) {
  if (requested == "brown") return Format::brown;
  if (requested == "text") return Format::text;
  auto first = std::find_if(files.begin(), files.end(), [](const fs::path& f) { return is_brown_file_name(f.filename().string()); });
  if (first != files.end() && looks_like_brown(read_whole_file(*first))) return Format::brown;
  return Format::detect;
}

void add_directory(const fs::path& dir, const PrepareOptions& options, std::vector<Document>& documents) {
  std::vector<fs::path> files = files_under(dir);
  Format format = directory_format(files, options.format);
  for (const fs::path& file : files) {
    if (format == Format::brown && !is_brown_file_name(file.filename().string())) continue;
    documents.push_back({file, format});
  }
}

std::vector<Document> collect_documents(const PrepareOptions& options) {
  std::vector<Document> documents;
  Format file_format = options.format == "brown" ? Format::brown : options.format == "text" ? Format::text : Format::detect;
  for (const fs::path& input : options.inputs) {
    if (!fs::exists(input)) throw Error("prepare: input " + input.string() + " does not exist");
    if (fs::is_directory(input)) {
      add_directory(input, options, documents);
    } else {
      documents.push_back({input, file_format});
    }
  }
  return documents;
}

// Spreads round(n * fraction) validation documents evenly over the sorted order: document i
// is held out when floor((i+1)*v/n) > floor(i*v/n). Same inputs, same split.
std::vector<bool> validation_mask(size_t count, double fraction) {
  auto wanted = static_cast<size_t>(std::llround(static_cast<double>(count) * fraction));
  size_t val = std::clamp<size_t>(wanted, 1, count - 1);
  std::vector<bool> mask(count);
  for (size_t i = 0; i < count; ++i) mask[i] = (i + 1) * val / count > i * val / count;
  return mask;
}

// A document with nothing but whitespace adds no tokens; as the only validation document it
// would leave an empty validation split.
bool is_blank(const fs::path& file) {
  if (fs::file_size(file) == 0) return true;
  const std::string text = read_whole_file(file);
  return text.find_first_not_of(" \t\r\n\f\v") == std::string::npos;
}

Corpus find_corpus(const PrepareOptions& options, const std::function<void(const std::string&)>& progress) {
  Corpus corpus{collect_documents(options), {}};
  const auto blank = std::stable_partition(corpus.documents.begin(), corpus.documents.end(),
                                           [](const Document& document) { return !is_blank(document.path); });
  for (auto it = blank; it != corpus.documents.end(); ++it) {
    report(progress, "warning: skipping " + it->path.string() + ": it is empty (or only whitespace)");
  }
  corpus.documents.erase(blank, corpus.documents.end());
  size_t count = corpus.documents.size();
  if (count == 0) {
    std::string inputs;
    for (const fs::path& input : options.inputs) inputs += " " + input.string();
    std::string hint = options.format == "brown" ? " (brown format takes only files named like ca01)" : "";
    throw Error("prepare: no documents found in" + inputs + hint);
  }
  if (count == 1) {
    throw Error("prepare: found only 1 document with text (" + corpus.documents[0].path.string() +
                "); need at least 2, one for training and one for validation");
  }
  corpus.is_val = validation_mask(count, options.val_fraction);
  return corpus;
}

std::string document_text(const Document& document) {
  std::string raw = read_whole_file(document.path);
  bool brown = document.format == Format::brown || (document.format == Format::detect && looks_like_brown(raw));
  return brown ? detag_brown(raw) : raw;
}

// Yields the non-empty lines of the training documents, one document in memory at a time.
class TrainingLines {
 public:
  explicit TrainingLines(const Corpus& corpus) : corpus_(corpus) {}
  bool next(std::string& line) {
    while (true) {
      while (offset_ < text_.size()) {
        size_t end = std::min(text_.find('\n', offset_), text_.size());
        line.assign(text_, offset_, end - offset_);
        offset_ = end + 1;
        if (!line.empty()) return true;
      }
      if (!load_next_document()) return false;
    }
  }

 private:
  bool load_next_document() {
    while (next_document_ < corpus_.documents.size() && corpus_.is_val[next_document_]) ++next_document_;
    if (next_document_ == corpus_.documents.size()) return false;
    text_ = document_text(corpus_.documents[next_document_++]);
    offset_ = 0;
    return true;
  }
  const Corpus& corpus_;
  size_t next_document_ = 0;
  std::string text_;
  size_t offset_ = 0;
};

void write_json(const fs::path& path, const nlohmann::json& value) { atomic_write_file(path, value.dump(2) + "\n"); }

// The tokenizer is trained on the training documents only, so validation text stays unseen.
std::unique_ptr<Tokenizer> build_tokenizer(const PrepareOptions& options, const Corpus& corpus, const fs::path& dir,
                                           const std::function<void(const std::string&)>& progress) {
  if (options.tokenizer == "byte") {
    write_json(dir / "tokenizer.json", {{"type", "byte"}, {"vocab_size", 256}});
    return make_byte_tokenizer();
  }
  report(progress, "training a BPE tokenizer with vocab_size " + std::to_string(options.vocab_size));
  TrainingLines lines(corpus);
  std::string model = train_bpe_model([&](std::string& line) { return lines.next(line); }, options.vocab_size);
  atomic_write_file(dir / "tokenizer.model", model);
  auto tokenizer = make_sentencepiece_tokenizer(model, (dir / "tokenizer.model").string());
  write_json(dir / "tokenizer.json",
             {{"type", "sentencepiece"}, {"vocab_size", tokenizer->vocab_size()}, {"model", "tokenizer.model"}});
  return tokenizer;
}

// Cuts one split's token stream into shards of shard_tokens. The tail is balanced with the
// shard before it so that no shard is tiny: the loader rejects shards smaller than a batch.
class SplitWriter {
 public:
  SplitWriter(fs::path dir, std::string split, size_t shard_tokens, const std::function<void(const std::string&)>& progress)
      : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens), progress_(progress) {}

  void append(const std::vector<int>& ids, const fs::path& source) {
    for (int id : ids) {
      if (id < 0 || id > std::numeric_limits<uint16_t>::max()) {
        throw Error("prepare: " + source.string() + ": token id " + std::to_string(id) + " does not fit in uint16");
      }
      buffer_.push_back(static_cast<uint16_t>(id));
      if (buffer_.size() == shard_tokens_) write_buffer();
    }
    total_ += ids.size();
  }

  void finish() {
    if (buffer_.empty()) return;
    if (!names_.empty() && buffer_.size() < shard_tokens_ / 2) rebalance_tail();
    write_buffer();
  }

  const std::vector<std::string>& names() const { return names_; }
  size_t total() const { return total_; }

 private:
  void write_buffer() {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06zu.bin", split_.c_str(), names_.size());
    write_shard(dir_ / name, buffer_);
    report(progress_, "wrote " + std::string(name) + " (" + std::to_string(buffer_.size()) + " tokens)");
    names_.emplace_back(name);
    buffer_.clear();
  }

  // Rewrites the last full shard with the first half of (last shard + tail) and leaves the
  // second half in the buffer: both end up between shard_tokens/2 and shard_tokens.
  void rebalance_tail() {
    fs::path last = dir_ / names_.back();
    std::vector<uint16_t> joined = read_shard(last);
    joined.insert(joined.end(), buffer_.begin(), buffer_.end());
    auto middle = joined.begin() + static_cast<std::ptrdiff_t>((joined.size() + 1) / 2);
    write_shard(last, std::vector<uint16_t>(joined.begin(), middle));
    buffer_.assign(middle, joined.end());
  }

  fs::path dir_;
  std::string split_;
  size_t shard_tokens_;
  const std::function<void(const std::string&)>& progress_;
  std::vector<uint16_t> buffer_;
  std::vector<std::string> names_;
  size_t total_ = 0;
};

nlohmann::json prepare_record(const PrepareOptions& options, const PrepareSummary& summary, const SplitWriter& train,
                              const SplitWriter& val) {
  nlohmann::json inputs = nlohmann::json::array();
  for (const fs::path& input : options.inputs) inputs.push_back(input.string());
  return {{"inputs", inputs},
          {"tokenizer", options.tokenizer},
          {"vocab_size", summary.vocab_size},
          {"format", options.format},
          {"val_fraction", options.val_fraction},
          {"shard_tokens", options.shard_tokens},
          {"documents_train", summary.documents_train},
          {"documents_val", summary.documents_val},
          {"tokens_train", summary.tokens_train},
          {"tokens_val", summary.tokens_val},
          {"train_shards", train.names()},
          {"val_shards", val.names()}};
}

PrepareSummary encode_corpus(const PrepareOptions& options, const Corpus& corpus, const Tokenizer& tokenizer,
                             const fs::path& dir, const std::function<void(const std::string&)>& progress) {
  SplitWriter train(dir, "train", options.shard_tokens, progress);
  SplitWriter val(dir, "val", options.shard_tokens, progress);
  const std::vector<int> separator = tokenizer.encode("\n\n");
  PrepareSummary summary;
  for (size_t i = 0; i < corpus.documents.size(); ++i) {
    SplitWriter& split = corpus.is_val[i] ? val : train;
    const fs::path& path = corpus.documents[i].path;
    split.append(tokenizer.encode(document_text(corpus.documents[i])), path);
    split.append(separator, path);
    ++(corpus.is_val[i] ? summary.documents_val : summary.documents_train);
  }
  train.finish();
  val.finish();
  summary.tokens_train = train.total();
  summary.tokens_val = val.total();
  summary.vocab_size = tokenizer.vocab_size();
  for (const auto& name : train.names()) summary.shards.push_back(options.out_dir / name);
  for (const auto& name : val.names()) summary.shards.push_back(options.out_dir / name);
  nlohmann::json record = prepare_record(options, summary, train, val);
  record["files"] = hash_data_files(dir);  // shards and tokenizer, checked by train, --resume and eval
  write_json(dir / "prepare.json", record);
  return summary;
}

// On overwrite the old directory survives any failure before the swap (commit_replacing).
// Without overwrite, commit() itself refuses a directory that appeared while we worked.
void publish(StagedDirectory& staged, const PrepareOptions& options, const std::function<void(const std::string&)>& progress) {
  if (!options.overwrite) {
    staged.commit();
    return;
  }
  // The new data is already in place, so a leftover old copy is worth a warning, not a failure.
  const std::string warning = staged.commit_replacing();
  if (!warning.empty()) report(progress, "warning: " + warning);
}

PrepareSummary prepare_checked(const PrepareOptions& options, const std::function<void(const std::string&)>& progress) {
  validate_options(options);
  check_no_overlap(options);
  check_replaceable_output(options.out_dir, options.overwrite, kPreparedData);
  Corpus corpus = find_corpus(options, progress);
  size_t val_count = static_cast<size_t>(std::count(corpus.is_val.begin(), corpus.is_val.end(), true));
  report(progress, "found " + std::to_string(corpus.documents.size()) + " documents: " +
                       std::to_string(corpus.documents.size() - val_count) + " for training, " +
                       std::to_string(val_count) + " for validation");
  const fs::path out = options.out_dir.has_filename() ? options.out_dir : options.out_dir.parent_path();
  for (const auto& left : remove_abandoned_staging(out.parent_path().empty() ? "." : out.parent_path(),
                                                   out.filename().string())) {
    report(progress, "removed " + left.string() + ", left by an interrupted prepare");
  }
  StagedDirectory staged(options.out_dir);
  auto tokenizer = build_tokenizer(options, corpus, staged.staging_path(), progress);
  PrepareSummary summary = encode_corpus(options, corpus, *tokenizer, staged.staging_path(), progress);
  publish(staged, options, progress);
  report(progress, "prepared " + options.out_dir.string() + ": " + std::to_string(summary.tokens_train) +
                       " training and " + std::to_string(summary.tokens_val) + " validation tokens");
  return summary;
}

}  // namespace

PrepareSummary prepare_corpus(const PrepareOptions& options, const std::function<void(const std::string&)>& progress) {
  try {
    return prepare_checked(options, progress);
  } catch (const fs::filesystem_error& error) {
    throw Error("prepare: " + std::string(error.what()));
  }
}

}  // namespace strait::data
