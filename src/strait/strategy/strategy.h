// A Strategy is everything that differs between ways of training on several processes. The
// training loop calls it at fixed points and knows nothing else about distribution:
//
//   Optimizer optimizer(strategy.trainable_parameters(model)...);   // what this rank updates
//   strategy.synchronize_weights(model, restored);   // after init or a checkpoint load
//   for each step:
//     for each micro-batch: strategy.forward_backward(model, inputs, targets, micro-batches, last?);
//     grad_norm = strategy.step(model, optimizer, lr, grad_clip);  // reduce, clip, update
//     strategy.after_step(step, model, final);     // outer synchronisation, when due
//     loss = strategy.mean_over_replica(loss);      // metrics: never a cross-replica collective
//
// Every strategy is a composition (strategy/composed.h): ranks form *replicas*; inside a replica
// an InnerSync (single process, DDP, ZeRO-3) synchronises every step and owns the gradient reduction,
// clipping and optimizer step; across replicas an OuterSync (none, local SGD, DiLoCo) synchronises after
// optimizer steps. DDP alone is one replica of every rank with no outer method.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/core/config.h"
#include "strait/core/placement.h"
#include "strait/model/llama.h"
#include "strait/model/tensor_io.h"
#include "strait/train/optimizer.h"

namespace strait {

namespace launch {
struct RankEnvironment;
}

// What the optimizer updates on this rank: the model's parameters, or, when the method shards
// them (ZeRO-3), this rank's pieces of them; and which of those get weight decay.
struct TrainableParameters {
  std::vector<NamedParameter> parameters;
  std::vector<bool> weight_decayed;  // empty: the matrices (Optimizer's default)
};

// One micro-batch's forward and backward.
struct MicroBatchResult {
  double loss = 0.0;  // the micro-batch's mean loss divided by the divisor asked for
  double forward_seconds = 0.0;
  double backward_seconds = 0.0;  // communication that overlaps it included
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  // e.g. "single", "ddp", "local-sgd(ddp x 2)".
  virtual std::string name() const = 0;

  // This process's place in the job; rank 0 writes metrics and checkpoints.
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // The index of this rank's replica (0 for one process and for DDP, one replica of all ranks).
  virtual int replica_index() const = 0;
  // The ranks of one replica (every rank of the job without an outer method).
  virtual int replica_ranks() const = 0;
  // Whether an outer method brings replicas that train apart together (local SGD, DiLoCo,
  // SparseLoCo), so that the ranks agree on a stop only at an outer sync.
  virtual bool has_outer_method() const = 0;

  // The model weights and the inner optimizer's state: Replicated when every rank applies the
  // same update every step; PerRank when replicas train apart between outer synchronisations;
  // Sharded when each rank holds its part of them (ZeRO-3, also inside an outer method's replicas).
  virtual Placement model_placement() const = 0;

  // Called once the model exists, before a checkpoint is loaded into it or its first backward.
  virtual void prepare(const LlamaModel& model) = 0;

  // State of the strategy itself (e.g. DiLoCo's outer weights and momentum), the same on every
  // rank: checkpoints keep it once, and a load into these tensors restores it ({} if none).
  virtual NamedTensors replicated_state() = 0;
  // State of the strategy that is this rank's own (e.g. SparseLoCo's error buffers):
  // checkpoints keep it per rank, next to the rank's weights ({} if none).
  virtual NamedTensors rank_state() = 0;

  // After initialisation (restored = false) every rank takes rank 0's weights. After a
  // checkpoint load, replicated weights are only re-broadcast; per-rank weights are each rank's
  // own and stay. Either way replicated weights are then verified by checksum: Error if a rank
  // still differs.
  virtual void synchronize_weights(LlamaModel& model, bool restored) = 0;

  // The tensors this rank's optimizer updates (called once, after prepare).
  virtual TrainableParameters trainable_parameters(LlamaModel& model) = 0;

  // Computes the mean loss of (inputs, targets) divided by loss_divisor (the step's number of
  // micro-batches, so that the accumulated gradient is the step's mean) and adds its gradients
  // to this rank's accumulated ones; `last` is true for the step's last micro-batch, whose backward completes
  // the gradients (DDP starts reducing buckets during it).
  virtual MicroBatchResult forward_backward(LlamaModel& model, const torch::Tensor& inputs,
                                            const torch::Tensor& targets, double loss_divisor, bool last) = 0;
  // The mean loss of (inputs, targets), without gradients (validation).
  virtual double batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) = 0;

  // Turns this rank's accumulated gradients (forward_backward) into the update: reduces them over the replica,
  // clips them to a global L2 norm of `max_norm` (<= 0: no clipping; the norm is over the whole
  // model, whatever the method shards) and applies optimizer.step(lr). Returns the norm before
  // clipping, the same on every rank of the replica.
  virtual double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) = 0;

  // After optimizer step `step` (1-based); `final_step` is true for the run's last step. Outer
  // methods synchronise the replicas here when a sync is due (and always at the final step, so
  // the run ends on one model).
  virtual void after_step(int64_t step, LlamaModel& model, bool final_step) = 0;

  // Time-boxed inner phases (--sync-every-seconds): each replica runs as many inner steps as fit
  // in the time, and a sync is due at the step its time is up, so the replicas' step counts
  // differ. What every rank agrees on is then the run's progress: the replicas' mean number of
  // inner steps as of the last outer sync (rounded down), which the learning-rate schedule, the
  // validations, checkpoints and the end of the run follow. -1 when the run is not time-boxed
  // (every rank is at the same step).
  virtual int64_t synced_progress() const = 0;

  // The mean of a per-rank training metric over this rank's replica: cheap enough for every
  // step, never crossing replicas. It carries the replica's votes (a stop request, a time box
  // that ran out) so that its ranks act on them at the same step.
  virtual double mean_over_replica(double value) = 0;
  // The mean over every rank of the job (validation, a few times per run).
  virtual double mean_over_all(double value) = 0;

  // Preemption: this rank was asked to stop (a signal). The ranks agree on the step to stop at
  // without a collective of their own, where they already synchronise: the request travels with
  // the next mean_over_replica (every step, inside the replica) and, with outer methods, with
  // the weight check of the next outer sync across replicas (never between syncs). stop_agreed()
  // is then true on every rank after the same step: after the current one for one process or
  // DDP (if asked before its mean_over_replica), after the next outer sync for outer methods
  // (the next but one with streaming's background exchanges, whose checks are judged a sync late).
  virtual void request_stop() = 0;
  virtual bool stop_agreed() const = 0;

  // Every rank must pass the same `value` (e.g. the checkpoint step to resume from); otherwise
  // every rank throws the same strait::Error naming the ranks that differ from rank 0 and both
  // values.
  virtual void require_same_everywhere(const std::string& what, int64_t value) = 0;

  // Blocks until every rank has called it with the same `what`, for up to checkpoint_timeout_s,
  // which is meant to be longer than a collective's: a checkpoint's slowest writer may take
  // minutes, and the other ranks must not fail for waiting on it. A lost rank fails it at once.
  virtual void wait_for_every_rank(const std::string& what) = 0;

  // Seconds the inner method's step() waited on communication since the previous call (DDP:
  // the gradient reductions backward did not hide; 0 for one process). The outer sync's own
  // blocked time is in take_outer_sync().
  virtual double take_blocked_seconds() = 0;
  // The figures of an outer synchronisation done since the previous call ({} if none), for the
  // metrics line: step, blocked_ms and, for DiLoCo, the pseudo-gradient norms.
  virtual nlohmann::json take_outer_sync() = 0;

  // Bytes moved since the previous call, by link class, for the metrics line ({} if none).
  virtual nlohmann::json take_step_traffic() = 0;
  // What the run summary reports about the strategy (every rank calls it): {"traffic": this
  // rank's ledger totals, "traffic_by_rank": [every rank's {"intra_node": .., "cross_node": ..}]}
  // where there is traffic, plus method-specific figures ({} for a single process).
  virtual nlohmann::json report() = 0;
};

// The strategy the configuration asks for on the ranks the launcher started. Every combination
// that is not meaningful (e.g. --inner ddp with one-rank replicas, a replica size that does not
// divide the world) is a strait::Error before any process connects. With several processes,
// connects the Communicator (rendezvous at MASTER_ADDR:MASTER_PORT) and checks that every rank
// runs the same configuration (shared_settings: per-machine paths, interface and threads may
// differ).
std::unique_ptr<Strategy> make_strategy(const TrainConfig& config, const launch::RankEnvironment& environment);

}  // namespace strait
