// The finished cells of a scaling sweep: what `strait sweep` writes and `strait fit` reads.
//
// Format: DIR/cells.jsonl, one JSON object per line, one line per finished cell (blank lines
// are skipped). Fields `strait fit` needs:
//   method                string   the training method, e.g. "ddp", "diloco", "sparseloco"
//   non_embedding_params  number   N, parameters outside the token embedding and output head, > 0
//   tokens                number   D, training tokens the cell saw, > 0
//   final_val_loss        number   the validation loss at the cell's last step, finite and > 0
// Any other fields (cell, replicas, sync_every, steps, wall_s, ...) are the sweep's and are
// ignored here, e.g.
//   {"cell":"diloco-n3-d2","method":"diloco","replicas":4,"sync_every":50,
//    "non_embedding_params":1200000,"tokens":24000000,"final_val_loss":3.412}
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace strait::fit {

struct Cell {
  std::string method;
  double params = 0;  // N
  double tokens = 0;  // D
  double loss = 0;    // final_val_loss
  size_t line = 0;    // 1-based line in the file, for messages and residual tables
};

struct CellFile {
  std::filesystem::path path;  // the file read
  std::vector<Cell> cells;     // in file order
};

// The name of the file a sweep writes in its output directory.
inline constexpr const char* kCellsFileName = "cells.jsonl";

// Reads `dir_or_file`: a sweep directory (its cells.jsonl) or a cells file itself. Throws
// strait::Error naming the file and line for: a missing file, a line that is not a JSON object,
// a missing field, a field of the wrong type, a number that is not finite and > 0; and for a
// file with no cells.
CellFile read_cells(const std::filesystem::path& dir_or_file);

}  // namespace strait::fit
