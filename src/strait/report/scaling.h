// A sweep's scaling laws on `strait report`'s page (`--sweep DIR`): the final validation loss of
// every cell against its non-embedding parameters N (log scale), one colour per method, with the
// method's fitted L(N) = E + A·N^-alpha drawn as a line; then a table of the constants with their
// 95% intervals and whether the methods' alpha intervals overlap. The numbers are strait::fit's
// (read_cells, fit_cells): what `strait fit DIR` prints.
//
//   std::vector<SweepFits> sweeps = {load_sweep("runs/sweep")};  // throws strait::Error
//   html += sweep_html(sweeps[0]);
//   std::cout << sweep_table(sweeps[0]);
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "strait/fit/report.h"

namespace strait::report {

struct SweepFits {
  std::filesystem::path dir;  // as given: a sweep directory or its cells.jsonl
  fit::Report fits;
};

// Reads DIR/cells.jsonl (or the file given) and fits every method. strait::Error as read_cells
// and fit_cells throw it (a bad line, a method with too few cells). A fit that does not converge
// is not an error: the page shows its cells without a line, and says why.
SweepFits load_sweep(const std::filesystem::path& dir);

// (N, L(N)) at `count` log-spaced N from the method's smallest to its largest N (the cells its
// L(N) was fitted to); empty when that fit did not converge.
std::vector<std::pair<double, double>> fitted_curve(const fit::MethodFit& method, int count);

// The page's section: a heading, a note, the chart and the table of constants.
std::string sweep_html(const SweepFits& sweep);

// The same constants for the terminal: a line per method, then the alpha comparison.
std::string sweep_table(const SweepFits& sweep);

}  // namespace strait::report
