// The inner half of a strategy: how the ranks of one replica turn their gradients into one
// update every step. It owns what differs between inner methods: the gradient reduction, the
// global-norm clipping (over whatever the method shards) and the optimizer step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strait/model/llama.h"
#include "strait/strategy/outer.h"
#include "strait/strategy/strategy.h"
#include "strait/train/optimizer.h"

namespace strait {

class InnerSync {
 public:
  virtual ~InnerSync() = default;
  virtual std::string name() const = 0;
  // Called once the model exists, before its first backward (DDP puts its hooks in place).
  virtual void prepare(const LlamaModel& model) = 0;
  // See Strategy::trainable_parameters; by default the model's parameters.
  virtual TrainableParameters trainable_parameters(LlamaModel& model) { return {model.parameters(), {}}; }
  // After the replica's weights were broadcast (restored = false) or loaded from a checkpoint.
  virtual void weights_synchronized(LlamaModel& /*model*/, bool /*restored*/) {}
  // The replica's weights as this rank holds them, which an outer method reads and writes
  // between steps: by default the model's parameters (every rank of the replica holds them
  // all); ZeRO-3's are this rank's shard, as pieces named after their parameters. Valid after
  // prepare; the same tensors on every call.
  virtual std::vector<NamedParameter> replica_weights(const LlamaModel& model) { return model.parameters(); }
  // After an outer method may have written replica_weights (ZeRO++ drops its hpZ copies).
  virtual void replica_weights_written() {}
  // See Strategy::forward_backward; by default the whole model's loss and its backward, with
  // before_backward(last) in between.
  virtual MicroBatchResult forward_backward(LlamaModel& model, const torch::Tensor& inputs,
                                            const torch::Tensor& targets, double loss_divisor, bool last);
  // See Strategy::batch_loss; by default the model's loss.
  virtual double batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets);
  // Called before each micro-batch's backward by the default forward_backward; `last` is true
  // for the step's last one (DDP starts reducing buckets during it).
  virtual void before_backward(bool last) = 0;
  // See Strategy::step; `step` reduces over the replica only.
  virtual double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) = 0;
  // The mean of a per-rank scalar over the replica; each of `votes` (this rank's) becomes true
  // on every rank of the replica if any rank's was.
  virtual double mean(double value, ReplicaVotes& votes) = 0;
  // Seconds step() waited on communication since the previous call: the part of the reduction
  // that backward did not hide.
  virtual double take_blocked_seconds() = 0;
  // Method-specific figures for the run summary ({} if none).
  virtual nlohmann::json report() const = 0;
};

}  // namespace strait
