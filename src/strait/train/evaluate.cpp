#include "strait/train/evaluate.h"

#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/data/identity.h"
#include "strait/data/shard.h"
#include "strait/data/tokenizer.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

// "byte, 256 tokens" for the tokenizer of `dir`, or why it cannot be read.
std::string tokenizer_summary(const fs::path& dir) {
  try {
    const auto tokenizer = data::load_tokenizer(dir);
    return tokenizer->kind() + ", " + std::to_string(tokenizer->vocab_size()) + " tokens";
  } catch (const Error& error) {
    return error.what();
  }
}

}  // namespace

void check_shard_for_checkpoint(const fs::path& checkpoint, const fs::path& shard,
                                const std::function<void(const std::string&)>& note) {
  const fs::path dir = shard.has_parent_path() ? shard.parent_path() : fs::path(".");
  if (!fs::exists(dir / "tokenizer.json")) {
    if (note) note("no tokenizer.json beside " + shard.string() + ": cannot check that it was prepared with the "
                   "checkpoint's tokenizer");
  } else {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const bool in_checkpoint = fs::exists(checkpoint / name), in_data = fs::exists(dir / name);
      if (in_checkpoint == in_data && (!in_data || xxh64_file_hex(checkpoint / name) == xxh64_file_hex(dir / name))) {
        continue;
      }
      throw Error("eval: " + shard.string() + " was prepared with another tokenizer (" + tokenizer_summary(dir) +
                  ", " + (dir / "tokenizer.json").string() + ") than the checkpoint's (" +
                  tokenizer_summary(checkpoint) + "): its token ids mean other text to this model; evaluate on "
                  "data prepared with the checkpoint's tokenizer");
    }
  }
  // A shard that prepare recorded must still be what it wrote.
  const fs::path record_path = dir / "prepare.json";
  if (!fs::exists(record_path)) return;
  const auto record = nlohmann::json::parse(read_whole_file(record_path), nullptr, false);
  const std::string name = shard.filename().string();
  if (record.is_discarded() || !record.contains("files") || !record.at("files").contains(name)) return;
  const nlohmann::json now = {
      {name, {{"bytes", static_cast<int64_t>(fs::file_size(shard))}, {"xxh64", xxh64_file_hex(shard)}}}};
  const std::string differences =
      data::data_differences(nlohmann::json{{name, record.at("files").at(name)}}, now, "prepare.json");
  if (!differences.empty()) throw Error("eval: " + shard.string() + " changed after prepare: " + differences);
}

double mean_loss(data::TokenLoader& loader, int64_t batches, const BatchLoss& batch_loss) {
  std::vector<int64_t> inputs, targets;
  double total = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    loader.next_batch(inputs, targets);
    const int64_t rows = static_cast<int64_t>(inputs.size() / loader.seq_len());
    auto shape = std::vector<int64_t>{rows, static_cast<int64_t>(loader.seq_len())};
    total += batch_loss(torch::from_blob(inputs.data(), shape, torch::kInt64),
                        torch::from_blob(targets.data(), shape, torch::kInt64));
  }
  return total / static_cast<double>(batches);
}

ShardEvaluation evaluate_shard(const LlamaModel& model, const std::filesystem::path& shard, int64_t max_windows,
                               int64_t batch_size) {
  if (batch_size < 1) throw Error("eval batch size must be >= 1");
  const std::vector<uint16_t> tokens = data::read_shard(shard);
  const int64_t vocab = model.config().vocab_size;
  data::check_token_range(tokens, static_cast<int>(vocab), shard.string());
  const int64_t T = model.config().context_length;
  const int64_t available = (static_cast<int64_t>(tokens.size()) - 1) / T;
  if (available < 1) {
    throw Error("shard " + shard.string() + " has " + std::to_string(tokens.size()) +
                " tokens; evaluating needs at least context_length + 1 = " + std::to_string(T + 1));
  }
  ShardEvaluation result;
  result.windows = max_windows > 0 ? std::min(available, max_windows) : available;
  result.tokens = result.windows * T;

  torch::NoGradGuard no_grad;
  auto all = torch::from_blob(const_cast<uint16_t*>(tokens.data()), {static_cast<int64_t>(tokens.size())},
                              torch::kInt16)
                 .to(torch::kInt32)
                 .bitwise_and(0xFFFF)  // uint16 read through int16: undo the sign
                 .to(torch::kInt64);
  double loss_sum = 0.0;  // sum over predicted tokens
  for (int64_t first = 0; first < result.windows; first += batch_size) {
    const int64_t rows = std::min(batch_size, result.windows - first);
    auto inputs = all.narrow(0, first * T, rows * T).view({rows, T});
    auto targets = all.narrow(0, first * T + 1, rows * T).view({rows, T});
    loss_sum += model.loss(inputs, targets).item<double>() * static_cast<double>(rows * T);
  }
  result.loss = loss_sum / static_cast<double>(result.tokens);
  return result;
}

}  // namespace strait
