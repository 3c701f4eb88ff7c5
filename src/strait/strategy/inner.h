// The inner half of a strategy: how the ranks of one replica turn their gradients into one
// update every step. It owns what differs between inner methods: the gradient reduction, the
// global-norm clipping (over whatever the method shards) and the optimizer step.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/model/llama.h"
#include "strait/strategy/outer.h"
#include "strait/train/optimizer.h"

namespace strait {

class InnerSync {
 public:
  virtual ~InnerSync() = default;
  virtual std::string name() const = 0;
  // Called once the model exists, before its first backward (DDP puts its hooks in place).
  virtual void prepare(const LlamaModel& model) = 0;
  // See Strategy::before_backward and Strategy::step; `step` reduces over the replica only.
  virtual void before_backward(bool last) = 0;
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
