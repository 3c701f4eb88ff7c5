// The outer methods of ALGORITHMS.md section 2, after every `sync_every` (H) inner steps (and at
// the run's last step):
//   local-sgd: the replicas' weights are averaged, θ ← mean_r θ_r; nothing else is kept.
//   diloco:    the pseudo-gradient Δ_r = θ − θ_r (θ: the weights every replica started the
//              window from) is averaged over the replicas, and SGD with (Nesterov) momentum
//              steps θ with it: m ← μ m + Δ; θ ← θ − lr (Δ + μ m) with Nesterov, θ − lr m without.
//              θ and m are the same on every rank: checkpoints keep them once.
// Either way every replica continues from the new θ, and the ranks exchange a hash of it: a
// mismatch (quantized or not, the exchange promises identical bits) stops the run naming the
// replicas. Between syncs no byte crosses a replica boundary; the inner optimizers' moments stay
// each replica's own (per-rank state).
#pragma once

#include <cstdint>
#include <memory>

#include "strait/model/tensor_io.h"
#include "strait/strategy/outer.h"
#include "strait/strategy/replica_exchange.h"

namespace strait {

struct OuterSgdOptions {
  enum class Rule { AverageWeights, Diloco };
  Rule rule = Rule::Diloco;
  int64_t sync_every = 50;
  double lr = 0.7;          // diloco only
  double momentum = 0.9;    // diloco only
  bool nesterov = true;     // diloco only
  codec::WireDtype wire = codec::WireDtype::Fp32;
};

class OuterSgd final : public OuterSync {
 public:
  // Throws strait::Error on a sync_every < 1, lr <= 0 or momentum outside [0, 1).
  OuterSgd(std::unique_ptr<ReplicaExchange> exchange, OuterSgdOptions options);

  std::string name() const override;
  void prepare(const LlamaModel& model) override;
  void start_from(const LlamaModel& model) override;
  void after_step(int64_t step, LlamaModel& model, bool final_step) override;
  NamedTensors state() override;
  nlohmann::json take_sync_metrics() override;
  nlohmann::json report() const override;

 private:
  void flatten(const LlamaModel& model, const torch::Tensor& into) const;
  void unflatten(const torch::Tensor& from, LlamaModel& model) const;
  void simulate_silent_corruption(const torch::Tensor& weights) const;
  void require_identical_replicas(const torch::Tensor& weights, int64_t step);

  std::unique_ptr<ReplicaExchange> exchange_;
  OuterSgdOptions options_;
  torch::Tensor weights_;   // (parameters) fp32 scratch: this replica's weights, flat
  torch::Tensor global_;    // (parameters) fp32, diloco: θ, the weights of the last outer step
  torch::Tensor momentum_;  // (parameters) fp32, diloco: m
  int64_t syncs_ = 0;
  double seconds_blocked_ = 0.0;  // in outer syncs, over the run
  nlohmann::json last_sync_;      // the latest sync's figures, until taken
};

}  // namespace strait
