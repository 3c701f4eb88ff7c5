// The inner optimizers: AdamW with decoupled weight decay (matrices only), or plain SGD (no
// momentum; weight decay added to the matrices' gradients, as torch.optim.SGD does), with the
// learning-rate schedule and global-norm gradient clipping: the numerics of torch.optim.AdamW /
// torch.optim.SGD, torch.nn.utils.clip_grad_norm_ and a linear-warmup + cosine schedule, written
// out so that state is ours to checkpoint and (later) to shard.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "strait/model/llama.h"

namespace strait {

enum class OptimizerKind { AdamW, Sgd };

// The config's names: "adamw", "sgd" (validated with the rest of the config).
std::string to_string(OptimizerKind kind);
OptimizerKind optimizer_kind(const std::string& name);

struct OptimizerOptions {
  double beta1 = 0.9;         // AdamW only
  double beta2 = 0.95;        // AdamW only
  double eps = 1e-8;          // AdamW only
  double weight_decay = 0.1;  // applied to matrices and embeddings, not to norms (see Optimizer)
  OptimizerKind kind = OptimizerKind::AdamW;
};

class Optimizer {
 public:
  // Weight decay applies to parameters[i] if weight_decayed[i]; when weight_decayed is empty,
  // to the tensors with dim() >= 2 (matrices, embeddings). A strategy that hands the optimizer
  // flat pieces of the parameters (ZeRO-3) says which pieces are matrices.
  Optimizer(std::vector<NamedParameter> parameters, OptimizerOptions options, std::vector<bool> weight_decayed = {});

  // One update with the gradients currently in the parameters' .grad().
  void step(double lr);
  // Drops every gradient (set to none, as torch.optim does by default).
  void zero_grad();

  OptimizerKind kind() const { return options_.kind; }
  int64_t step_count() const { return step_count_; }
  const std::vector<NamedParameter>& parameters() const { return parameters_; }
  // AdamW's first and second moments, in parameter order: (same shape as the parameter) each;
  // empty for SGD, which keeps no state.
  const std::vector<torch::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<torch::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  // Restores state read from a checkpoint; shapes are checked by the caller.
  void set_step_count(int64_t steps) { step_count_ = steps; }

 private:
  void adamw_step(double lr);
  void sgd_step(double lr);

  std::vector<NamedParameter> parameters_;
  OptimizerOptions options_;
  std::vector<bool> weight_decayed_;  // per parameter
  std::vector<torch::Tensor> exp_avg_;     // m
  std::vector<torch::Tensor> exp_avg_sq_;  // v
  int64_t step_count_ = 0;
};

// Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to min_lr_ratio * lr
// at `total_steps`. `step` counts from 0 (the first update).
double learning_rate(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr_ratio);

// Scales gradients so their global L2 norm is at most max_norm (max_norm <= 0: no clipping)
// and returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParameter>& parameters, double max_norm);

}  // namespace strait
