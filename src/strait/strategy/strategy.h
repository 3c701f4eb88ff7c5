// A Strategy is everything that differs between ways of training on several processes: how
// replicas agree on their weights and how a step's local gradients become the update every
// replica applies. The training loop calls it at fixed points and knows nothing else about
// distribution:
//
//   strategy.synchronize_weights(model);      // after init or a checkpoint load
//   for each step:
//     for each micro-batch: strategy.before_backward(last micro-batch?); loss.backward();
//     strategy.reduce_gradients(model);       // .grad() now holds the global-batch gradient
//     clip, optimizer step (identical on every replica)
//     strategy.mean_over_replicas(loss); strategy.take_step_traffic();   // for metrics
//
// One implementation per method (single process, DDP; ZeRO, DiLoCo and SparseLoCo later),
// each talking to the network only through strait::comm.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/core/config.h"
#include "strait/model/llama.h"

namespace strait {

namespace launch {
struct RankEnvironment;
}

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // This process's place among the replicas; rank 0 writes metrics and checkpoints.
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Makes every replica's weights identical to rank 0's. Throws strait::Error if they still
  // differ afterwards.
  virtual void synchronize_weights(LlamaModel& model) = 0;

  // Called before each micro-batch's backward; `last` is true for the step's last one, whose
  // backward completes the gradients (DDP starts reducing buckets during it).
  virtual void before_backward(bool last) = 0;

  // Turns each replica's gradients (of its mean loss over its own batch) into the gradient of
  // the mean loss over the global batch, on every replica.
  virtual void reduce_gradients(LlamaModel& model) = 0;

  // The mean of a per-replica scalar over all replicas (the same value on every replica).
  virtual double mean_over_replicas(double value) = 0;

  // Bytes moved since the previous call, by link class, for the metrics line ({} if none).
  virtual nlohmann::json take_step_traffic() = 0;
  // What the run summary reports about the strategy: {"traffic": ledger totals} where there is
  // traffic, plus method-specific figures ({} for a single process).
  virtual nlohmann::json report() = 0;

  // Completes when every replica has reached this point (e.g. rank 0 finished a checkpoint).
  virtual void barrier() = 0;
};

// Training in one process: nothing to reduce.
std::unique_ptr<Strategy> make_single_process_strategy();

// The strategy the configuration asks for on the ranks the launcher started: one process ->
// single; several -> DDP over a Communicator that rendezvouses at MASTER_ADDR:MASTER_PORT and
// checks that every rank runs the same configuration.
std::unique_ptr<Strategy> make_strategy(const TrainConfig& config, const launch::RankEnvironment& environment);

}  // namespace strait
