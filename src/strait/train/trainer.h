// The training loop: one loop for every run, from a fresh start or a checkpoint.
//
// A run directory holds:
//   config.json         the model in Hugging Face LlamaConfig form
//   train_config.json   the resolved training configuration
//   metrics.jsonl       one JSON line per step (loss, lr, grad_norm, tokens, step_ms, tokens_per_s;
//                       val_loss on evaluation steps)
//   summary.json        totals, written when the run ends
//   checkpoints/step-N/ see checkpoint.h
//   .lock               while a run trains: flock'ed by its writer (rank 0), holding its PID
#pragma once

#include <nlohmann/json.hpp>

#include "strait/core/config.h"

namespace strait {

struct TrainOptions {
  bool progress = true;  // print a progress line every log_every steps to stderr
};

// Trains as configured and returns the run summary (also written to summary.json). While it
// runs, SIGTERM and SIGINT stop it after the step the ranks agree on (see
// Strategy::request_stop) with a checkpoint; the summary then has "stopped_by_signal".
nlohmann::json train(const TrainConfig& config, const TrainOptions& options = {});

// Threads for LibTorch: `requested` if > 0, else STRAIT_THREADS or OMP_NUM_THREADS from the
// launcher, else this process's cores divided among the local ranks.
int resolve_threads(int64_t requested, int local_world_size = 1);

// What the train command exits with: 128 + the signal for a run that SIGTERM or SIGINT stopped
// (after writing a checkpoint), else 0.
int exit_status_of(const nlohmann::json& summary);

}  // namespace strait
