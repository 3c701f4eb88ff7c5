// A scaling sweep's grid: `strait sweep --grid grid.toml` crosses model sizes, methods, replica
// counts, sync intervals H and token budgets into cells, each one `strait train` run.
//
// Intended usage:
//   const Grid grid = read_grid("grid.toml");       // every key checked, nothing run yet
//   for (const Cell& cell : grid.cells) ...          // cell.config is the run's TrainConfig
//
// The file (README.md, "sweep", has a full example):
//   [train]                       # options every cell shares: keys of `strait train`
//   data = "data/brown-byte"
//   [grid]
//   models = ["nano", {hidden_size = 96, num_layers = 3, intermediate_size = 256, num_heads = 4}]
//   methods = ["ddp", "diloco", {method = "sparseloco", topk = 32, label = "sparseloco-k32"}]
//   replicas = [1, 4]             # processes: DDP's ranks, or outer replicas of one rank each
//   sync_every = [10, 50]         # H, crossed with the outer methods only
//   tokens_per_param = [20]       # or tokens = [1e6, 4e6]: training tokens D per cell
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "strait/core/config.h"
#include "strait/model/model_config.h"

namespace strait::sweep {

struct Cell {
  std::string name;    // unique, safe as a directory name: nano-diloco-r4-h50-d20n
  std::string method;  // what `strait fit` groups by: the label, with -rR / -hH where the grid varies them
  std::string label;   // the method entry's label (default: its method)
  std::string model;   // the model entry's name: a preset, `name`, or n<N> for explicit dimensions
  int replicas = 1;    // processes: DDP's world size, or outer replicas of one rank each
  int64_t sync_every = 0;  // H for outer methods, 0 for DDP
  ModelConfig dimensions;            // the model's resolved dimensions (byte vocabulary)
  int64_t non_embedding_params = 0;  // N, ModelConfig::num_non_embedding_parameters
  int64_t tokens_per_step = 0;  // batch_size x seq_len x grad_accum x replicas
  int64_t steps = 0;            // round(D / tokens_per_step), at least 1
  TrainConfig config;           // the run's options; `out` and `threads` are set by the sweep
};

struct Grid {
  std::filesystem::path source;
  std::vector<Cell> cells;  // models x methods x replicas x H (outer methods) x tokens, in that nesting
};

// Parses a grid file's text; `source` names it in messages. Throws strait::Error naming the
// source and key for: invalid TOML, an unknown key (with the nearest known one), a value of the
// wrong type or range, an option the grid sets itself (steps, strategy, sync_every, the model's
// dimensions, out, resume, ...) given in [train] or a method, both or neither of tokens and
// tokens_per_param, an unknown preset or method, two cells with one name, two methods with one
// label, and any cell whose configuration `strait train` would refuse (naming the cell).
Grid parse_grid(const std::string& text, const std::string& source);
Grid read_grid(const std::filesystem::path& path);

// 3 significant digits with k, M, G, T: 112448 -> "112k", 2000000 -> "2M", 20 -> "20".
std::string compact_number(double value);

}  // namespace strait::sweep
