// `strait plan --min-sync-every RATES --chart h.svg`: the smallest H at which one outer exchange
// costs under 10% of H inner steps' compute, as one self-contained SVG file: H (log) against the
// link rate (log), one line per method x replica count from plan's cells (plan::sync_conditions,
// the same numbers as its table), and, for runs on shaped links, the H their measured times give
// as hollow markers in their method's colour.
//
//   auto cells = plan::sync_conditions(cluster, workload, methods, rates, replicas, 0.1);
//   std::vector<MeasuredSync> runs = {measured_sync("bench/out/compare-2x1/2x1/20mbit/diloco", 0.1)};
//   write_sync_chart("h.svg", sync_chart_svg(cluster, workload, cells, runs, 0.1), overwrite);
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "strait/plan/plan.h"

namespace strait::report {

// The condition as one run measured it: H > sync_s / (budget x step_s), with sync_s the mean
// outer_sync.blocked_ms of its syncs and step_s the mean step_ms of its steps without a sync
// (BENCHMARKS.md, "The smallest H ...").
struct MeasuredSync {
  std::filesystem::path dir;  // as given: a run directory, or a cell holding run/ and testbed.json
  std::string method;         // the run's strategy, as plan names it: local-sgd, diloco, sparseloco
  plan::Kind kind = plan::Kind::Diloco;
  double link_bits_per_s = 0;  // testbed.json's
  int replicas = 0;            // one per node
  int syncs = 0;
  double sync_s = 0;
  double step_s = 0;
  int smallest_sync_every = 1;
};

// Reads a finished or stopped run of local SGD, DiLoCo or SparseLoCo on shaped links (with its
// testbed.json). strait::Error names the directory and what is missing: no link rate (a loopback
// run), another method (streaming DiLoCo hides its exchange behind steps), a replica count other
// than one per node, no sync or no step between syncs.
MeasuredSync measured_sync(const std::filesystem::path& dir, double budget);

// The runs as a table for the terminal: run, method, link, R, blocked per sync, step, smallest H.
std::string measured_sync_table(const std::vector<MeasuredSync>& runs, double budget);

// The chart as a standalone SVG document (inline style, white background, a note under the plot
// on how the lines and markers were computed, with the cluster's and workload's figures); the root
// element carries a generator marker. Each line is a <polyline> whose data-points hold its cells'
// (link rate, smallest H), as line_chart() writes them.
std::string sync_chart_svg(const plan::Cluster& cluster, const plan::Workload& workload,
                           const std::vector<plan::SyncConditionCell>& cells, const std::vector<MeasuredSync>& runs,
                           double budget);

// Writes the chart atomically. An existing file at `out` is replaced only with `overwrite` and
// only if it is an earlier chart of this command (it carries the generator marker).
void write_sync_chart(const std::filesystem::path& out, const std::string& svg, bool overwrite);

}  // namespace strait::report
