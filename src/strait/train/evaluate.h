// Loss evaluation: validation during training and `strait eval` on a shard.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/data/loader.h"
#include "strait/model/llama.h"

namespace strait {

// The mean next-token loss of one batch (inputs, targets: (B, T) int64), without gradients.
using BatchLoss = std::function<double(const torch::Tensor& inputs, const torch::Tensor& targets)>;

// Mean of `batch_loss` over the next `batches` batches of the loader.
double mean_loss(data::TokenLoader& loader, int64_t batches, const BatchLoss& batch_loss);

struct ShardEvaluation {
  int64_t windows = 0;  // windows of context_length tokens evaluated
  int64_t tokens = 0;   // predicted tokens = windows * context_length
  double loss = 0.0;    // mean next-token cross-entropy (nats)
};

// Window j (j = 0, 1, ...) predicts tokens j*T+1 .. j*T+T of the shard from tokens j*T .. j*T+T-1,
// T = the model's context length; as many windows as fit (at most max_windows if > 0), evaluated
// `batch_size` windows at a time. Errors: unreadable or corrupt shard, token ids outside the
// model's vocabulary, a shard shorter than T + 1 tokens.
ShardEvaluation evaluate_shard(const LlamaModel& model, const std::filesystem::path& shard, int64_t max_windows,
                               int64_t batch_size);

// eval's check that `shard` is data for the model of `checkpoint`: a shard whose directory holds
// another tokenizer than the checkpoint's (e.g. byte-level tokens for a BPE model) is refused,
// and so is one that changed after prepare recorded it (prepare.json). `note` gets a line when
// the shard's directory has no tokenizer to compare.
void check_shard_for_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& shard,
                                const std::function<void(const std::string&)>& note);

}  // namespace strait
