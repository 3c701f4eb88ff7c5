// Checkpoints: everything needed to continue a run exactly, in one directory per step.
//
//   RUN/checkpoints/step-000200/
//     model.safetensors     fp32 weights under Hugging Face names
//     optimizer.safetensors the optimizer's state (AdamW moments ("exp_avg.<name>", "exp_avg_sq.<name>") and the
//                           LibTorch CPU generator state ("rng.cpu")
//     tokenizer.json (+ tokenizer.model)   copied from the data directory, so the checkpoint
//                           alone is enough for eval, generate and export
//     strategy.safetensors  the strategy's own replicated state, when it has some (DiLoCo's
//                           outer weights "outer.weights" and momentum "outer.momentum", flat)
//     rank-00001/           only when the model and optimizer are per rank (outer methods, whose
//                           replicas train apart): each rank's model.safetensors and
//                           optimizer.safetensors (the top-level ones are rank 0's, for tools), and
//                           its strategy.safetensors when the strategy keeps per-rank state
//                           (SparseLoCo's error buffers "outer.error.<fragment>");
//                           or sharded (ZeRO-3): each rank's model.safetensors holds, under each
//                           parameter's name, the flat contiguous part of it in the rank's shard,
//                           and there is no top-level model.safetensors or optimizer.safetensors
//                           (load_model concatenates the parts of ranks 0..shard_ranks-1 in rank
//                           order: the first replica's model under an outer method)
//     state.json            step, optimizer step count, data cursor, training and model config,
//                           placement ("replicated", "per_rank" or "sharded"), world size and for
//                           sharded ones shard_ranks, the xxh64
//                           checksum of every other file (rank directories included), and
//                           "manifest_xxh64", the checksum of state.json itself (version 3)
//
// A checkpoint is written in a staging directory, fsync'ed and renamed into place, so a crash
// never leaves a partial step-N directory; loading verifies every checksum first. Per-rank
// files are first written by each rank to RUN/checkpoints/.step-N.ranks/rank-R/; once every
// rank has written (a barrier), rank 0 moves them into its staging directory and commits. The
// run directory must be one shared file system for all ranks, or each rank's copy of it must
// hold the same checkpoints (resume checks that ranks agree on the step).
#pragma once

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "strait/core/config.h"
#include "strait/core/placement.h"
#include "strait/data/loader.h"
#include "strait/model/llama.h"
#include "strait/model/tensor_io.h"
#include "strait/train/optimizer.h"

namespace strait {

struct CheckpointState {
  int64_t step = 0;  // training steps completed
  int64_t optimizer_steps = 0;  // AdamW updates applied (its bias correction depends on it)
  data::Cursor cursor;  // where the next training batch is read
  TrainConfig train_config;
  ModelConfig model_config;
  Placement placement = Placement::Replicated;  // of the model and optimizer state
  int64_t world_size = 1;                        // ranks whose state a PerRank checkpoint holds
  // Sharded: the ranks whose parts make up one model, ranks 0.. of the job (world_size, or one
  // replica's ranks when ZeRO-3 runs inside an outer method's replicas).
  int64_t shard_ranks = 1;
  // The data the run trains on (data::hash_data_files); null for checkpoints written before
  // strait recorded it.
  nlohmann::json data_files;
};

std::filesystem::path checkpoint_dir(const std::filesystem::path& run_dir, int64_t step);

// Every rank of a PerRank or Sharded checkpoint, before rank 0's save_checkpoint: writes the
// weights this rank's optimizer updates (its model's, or its shard of them) and the optimizer
// state, and its strategy state when not empty, to RUN/checkpoints/.step-N.ranks/rank-R/ (each
// file atomically).
void save_rank_state(const std::filesystem::path& run_dir, int64_t step, int rank, const Optimizer& optimizer,
                     const NamedTensors& rank_strategy_state = {});

// Writes RUN/checkpoints/step-N atomically, with the weights `optimizer` updates as the model
// (unless Sharded). `data_dir` is where the tokenizer files come from. With state.placement
// PerRank or Sharded, moves in the state.world_size rank directories that save_rank_state wrote;
// Error (and nothing committed) if one is missing. `strategy_state` (e.g. DiLoCo's outer weights
// and momentum, the same on every rank) goes to strategy.safetensors when not empty.
void save_checkpoint(const std::filesystem::path& run_dir, const CheckpointState& state, const Optimizer& optimizer,
                     const std::filesystem::path& data_dir,
                     const NamedTensors& strategy_state = {});

// Reads state.json and verifies its own checksum (an edit by hand, even valid JSON, is refused),
// that its step matches a directory named step-N, and the checksums of all files it lists;
// Error names the file that is missing, corrupt or edited.
CheckpointState read_checkpoint_state(const std::filesystem::path& dir);

// The xxh64 (hex) that state.json records as "manifest_xxh64": of its content without that
// field, dumped compactly (keys sorted).
std::string manifest_checksum(nlohmann::json state);

// Loads weights (and optimizer state and RNG) into objects built from state.model_config; from a
// PerRank checkpoint, `rank`'s own; from a Sharded one, `rank`'s shard into the optimizer's
// parameters (an optimizer is then required). A weight that is NaN or infinite is an Error naming its
// tensor, raised before anything is loaded.
// `strategy_state`, when not empty, is loaded from strategy.safetensors, and
// `rank_strategy_state` from the rank's own: Error if the checkpoint has none (it was written by
// a strategy without such state) or a tensor is missing.
void load_checkpoint(const std::filesystem::path& dir, LlamaModel& model, Optimizer* optimizer, int rank = 0,
                     const NamedTensors& strategy_state = {}, const NamedTensors& rank_strategy_state = {});

// A model built from a checkpoint directory, for eval, generate and export (a sharded checkpoint's
// parts assembled); non-finite weights are refused as by load_checkpoint.
LlamaModel load_model(const std::filesystem::path& dir);

// Every step-N directory under RUN/checkpoints, as (N, path), by N.
std::vector<std::pair<int64_t, std::filesystem::path>> list_checkpoints(const std::filesystem::path& run_dir);

// The newest step-N directory under RUN/checkpoints (by N), if any.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

// Removes all but the newest `keep` step-N directories (keep <= 0: keep all).
void prune_checkpoints(const std::filesystem::path& run_dir, int64_t keep);

}  // namespace strait
