// The outer half of a strategy: how replicas that train apart are brought together after
// optimizer steps. Outer methods talk only to the group that links one rank of each replica
// (the ranks with the same index inside their replicas) and, to assemble what they exchanged, to
// their own replica: an outer sync moves each replica's model across the replica boundary once.
// They work on the replica's weights as this rank holds them (InnerSync::replica_weights): the
// whole model, or with ZeRO-3 inside, this rank's shard of it, which it then exchanges alone with
// the same shard of the other replicas (nothing to assemble inside the replica).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strait/model/llama.h"
#include "strait/model/tensor_io.h"

namespace strait {

// What the ranks of one replica agree on every step (carried with the step's metric mean, see
// InnerSync::mean): some rank asks to stop (preemption), some rank's time-boxed inner phase has
// run its time.
struct ReplicaVotes {
  bool stop = false;
  bool time_up = false;
};

class OuterSync {
 public:
  virtual ~OuterSync() = default;
  virtual std::string name() const = 0;
  // Sizes the method's state for `weights`, this rank's part of a model of `layers` decoder
  // layers (before a checkpoint is loaded into it). Every later call passes the same tensors.
  virtual void prepare(int64_t layers, const std::vector<NamedParameter>& weights) = 0;
  // Takes `weights`, the same on every replica, as the starting point of a fresh run.
  virtual void start_from(const std::vector<NamedParameter>& weights) = 0;
  // See Strategy::after_step; writes `weights` when it synchronises.
  virtual void after_step(int64_t step, const std::vector<NamedParameter>& weights, bool final_step) = 0;
  // Before each after_step, what this rank's replica agreed on (the same on all its ranks).
  // Preemption (Strategy::request_stop): a stop request crosses replicas with the next outer
  // sync; from that step on stop_agreed() is true on every rank. A time-boxed method syncs at the
  // step its replica's time is up.
  virtual void offer_votes(ReplicaVotes votes) = 0;
  virtual bool stop_agreed() const = 0;
  // Time-boxed inner phases (Strategy::synced_progress): whether this rank's inner phase has run
  // its time (false for methods that sync on fixed steps), and the progress as of the last sync
  // (-1 for those methods).
  virtual bool time_up() = 0;
  virtual int64_t synced_progress() const = 0;
  // The method's own state, the same on every rank (checkpoints keep it once); loading into
  // these tensors restores it.
  virtual NamedTensors state() = 0;
  // This rank's own state (e.g. SparseLoCo's error buffers; checkpoints keep it per rank).
  virtual NamedTensors rank_state() = 0;
  // The figures of the outer sync done since the last call ({} if none).
  virtual nlohmann::json take_sync_metrics() = 0;
  // Method-specific figures for the run summary.
  virtual nlohmann::json report() const = 0;
};

}  // namespace strait
