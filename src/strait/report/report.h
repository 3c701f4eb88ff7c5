// `strait report [RUN_DIR...] [--sweep DIR...] --out report.html`: one self-contained HTML page
// (inline SVG charts, a sortable table, no network) comparing training runs and showing sweeps'
// fitted scaling laws (scaling.h), and a short table for the terminal.
//
//   std::vector<RunRecord> runs = ...;  // load_run() each, then label_runs()
//   Comparison comparison = compare(std::move(runs), target_loss);
//   comparison.sweeps.push_back(load_sweep(dir));  // optional; runs may then be empty
//   write_html_report(out, render_html(comparison, title), overwrite);
//   std::cout << render_table(comparison);
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "strait/report/run_record.h"
#include "strait/report/scaling.h"

namespace strait::report {

struct Comparison {
  std::vector<RunRecord> runs;
  std::optional<double> target;  // the loss whose time to reach is compared
  std::string target_origin;     // how it was chosen, for the page: "--target-loss", "DDP's ... + 3%"
  std::vector<SweepFits> sweeps;  // each a section of its own after the runs
};

// The runs with the target: `target_loss` if given, else default_target(runs).
Comparison compare(std::vector<RunRecord> runs, std::optional<double> target_loss);

std::string render_html(const Comparison& comparison, const std::string& title);
std::string render_table(const Comparison& comparison);

// Writes the page atomically. An existing file at `out` is replaced only with `overwrite` and
// only if it is an earlier strait report (it carries the page's generator marker).
void write_html_report(const std::filesystem::path& out, const std::string& html, bool overwrite);

}  // namespace strait::report
