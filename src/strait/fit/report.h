// `strait fit`: scaling laws per method from a sweep's cells (cells.h), and whether the methods
// scale alike in N (the question of arXiv 2409.13198: local SGD / DiLoCo against DDP).
//
// Intended usage:
//   const Report report = fit_cells(read_cells(dir));
//   std::cout << (json ? report_json(report).dump(2) : format_report(report));
//   if (!report.failures.empty()) ... a fit did not converge: exit status 1 ...
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strait/fit/cells.h"
#include "strait/fit/fit.h"

namespace strait::fit {

struct MethodFit {
  std::string method;
  std::vector<Cell> cells;  // every cell of the method, in file order

  // L(N) = E + A·N^-alpha over `power_law_cells`: every cell, except that where one N was
  // trained for several token counts only the cells with the most tokens are kept (the
  // nearest to converged), so that D's effect does not leak into alpha.
  std::vector<Cell> power_law_cells;
  bool power_law_dropped_cells = false;  // some N had several D
  Fit power_law;

  // L(N, D) = E + A·N^-alpha + B·D^-beta over every cell, when the grid allows it: at least 3
  // distinct N and 3 distinct D, more cells than its 5 parameters, and D not a function of N
  // (some N trained for several token counts; with D = k·N for one k, or one D, the two terms
  // cannot be told apart). Otherwise `tokens_law_skipped` says which condition failed.
  std::optional<Fit> tokens_law;
  std::string tokens_law_skipped;
};

// Whether two methods' 95% intervals of alpha (from L(N)) overlap.
struct AlphaOverlap {
  std::string first, second;
  bool overlap = false;
};

struct Report {
  CellFile input;
  std::vector<MethodFit> methods;          // in order of first appearance in the file
  std::vector<AlphaOverlap> alpha_pairs;   // every pair of methods whose L(N) converged
  std::vector<std::string> failures;       // one line per fit that did not converge
};

// Fits every method of `input`. Throws strait::Error naming the method and file when a method
// has too few cells for L(N): at most 3 (its parameter count) or fewer than 3 distinct N. A fit
// that does not converge is not an error here: it is listed in `failures` (the command prints
// the report, then fails).
Report fit_cells(const CellFile& input);

// The report as text: per method the constants with std errors and 95% intervals, R², residual
// std, the residual of each cell for L(N); then the alpha comparison.
std::string format_report(const Report& report);

// What the alpha intervals of L(N) say, one sentence per line: that every pair overlaps
// (comparable scaling in N), each pair that does not, or that there is nothing to compare.
std::vector<std::string> alpha_conclusions(const Report& report);

// The report as one JSON object (strait fit --json): {"input", "cells", "interval": 0.95,
// "methods": [{"method", "cells", "fit_n": FIT, "fit_nd": FIT or null, "fit_nd_skipped"}],
// "alpha": {"overlap": bool or null, "pairs": [...]}, "failures": [...]}, where FIT is
// {"model", "converged", "failure"?, "points", "degrees_of_freedom", "parameters": {"E":
// {"value", "std_error", "low", "high"}, ...}, "r_squared", "residual_std", "max_abs_residual",
// "residuals": [{"line", "non_embedding_params", "tokens", "final_val_loss", "fitted", "residual"}]}.
nlohmann::json report_json(const Report& report);

}  // namespace strait::fit
