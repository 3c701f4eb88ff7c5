// `strait sweep`: runs a grid's cells (grid.h) as child processes and records each finished cell
// as one line of DIR/cells.jsonl, the file `strait fit` reads (strait/fit/cells.h).
//
// Layout of DIR:
//   cells.jsonl             one JSON object per finished cell, appended when it finishes
//   cells/<cell>/           the cell's run directory (metrics.jsonl, summary.json, checkpoints/)
//   cells/<cell>/cell.json  the options the cell runs with (`strait train --config`)
//   cells/<cell>/train.log  the child's output, appended by every attempt
//
// Resuming: a cell with a line in cells.jsonl is skipped; every other cell runs
// `strait train --resume`, which starts afresh where there is no checkpoint and otherwise
// continues from the newest one. A cell whose cell.json differs from the grid's options (the grid
// was edited) stops the sweep before anything runs, naming the keys that differ.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/sweep/grid.h"

namespace strait::sweep {

struct SweepOptions {
  std::filesystem::path out;  // DIR
  int parallel = 1;           // cells at once; the cores are split between them
  bool fail_fast = false;     // stop at the first failed cell (the running ones checkpoint and stop)
  std::string program;        // the strait executable cells run (/proc/self/exe)
  std::function<void(const std::string&)> progress;  // one line per event, without "\n"
};

// The line of cells.jsonl for a cell whose run finished with `summary` (its summary.json).
nlohmann::json cell_record(const Cell& cell, const nlohmann::json& summary, double wall_s);

// Runs every unfinished cell; returns the exit status: 0 when every cell finished, 1 when one or
// more failed (each is reported with its log's path; the others still run unless fail_fast),
// 128 + the signal when SIGINT or SIGTERM stopped the sweep (forwarded once to every running
// cell, which writes a checkpoint; a second signal is forwarded too and they exit at once).
// Throws strait::Error before starting anything for an unreadable cells.jsonl or a cell whose
// recorded options differ from the grid's.
int run_sweep(const Grid& grid, const SweepOptions& options);

}  // namespace strait::sweep
