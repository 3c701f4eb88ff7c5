// What `strait report` knows about one finished (or stopped) training run, read from the files
// the trainer and the testbed write: metrics.jsonl (one line per step), summary.json (totals,
// per-rank traffic), train_config.json (the method's settings) and, for a run on shaped links,
// testbed.json (scripts/wan: link rate, nodes, the kernel's interface counters).
//
// A run is given as its run directory (RUN/metrics.jsonl) or as a cell directory holding the run
// in run/ next to testbed.json (the layout of scripts/wan --results and the benchmarks).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace strait::report {

// One validation point of a run's curve.
struct ValidationPoint {
  int64_t step = 0;
  double elapsed_s = 0;          // wall time since the run started (resumed runs: continued)
  double cross_node_bytes = 0;   // cumulative cross-node bytes rank 0 had sent (ledger)
  double val_loss = 0;
};

struct RunRecord {
  std::string label;   // how the report names the run (set by label_runs)
  std::filesystem::path dir;
  std::string method;  // e.g. "ddp", "diloco H=50", "streaming diloco H=50 P=4 τ=5", "sparseloco H=15 k=64"
  std::string link;    // e.g. "20mbit"; "loopback" without testbed.json
  double link_bits_per_s = 0;  // 0 on loopback
  int nodes = 1;           // testbed.json's, else summary.json's (the launcher's), else 1
  int ranks_per_node = 1;
  int replica_ranks = 1;   // an outer method's ranks per replica (summary.json)
  int64_t steps = 0;    // the last step in metrics.jsonl
  bool finished = false;  // summary.json exists
  double final_val_loss = 0;  // NaN when the run logged no validation loss
  double wall_s = 0;          // summary's wall time, else the last line's elapsed time
  // Sums over the steps of rank 0's timings: forward, backward, the update (reduction, optimizer,
  // outer sync) and, within the update, the time blocked on communication (the outer sync's
  // blocked_ms and DDP's comm_blocked_ms). NaN where DDP ran without recording its waits (runs
  // from before strait logged comm_blocked_ms): its update time then hides them.
  double forward_s = 0, backward_s = 0, update_s = 0, blocked_s = 0;
  double compute_s() const { return forward_s + backward_s + update_s - blocked_s; }
  double steps_s = 0;  // the sum of rank 0's step_ms: the time in training steps
  // Cross-node bytes sent per node: the ledger's (every rank's, over the nodes) and, on the
  // testbed, the kernel's (TCP payload: tx bytes less 66 header bytes per packet).
  double ledger_bytes_per_node = 0;
  std::optional<double> kernel_bytes_per_node;
  // What `strait plan` predicts for this run's method, settings, model and measured compute
  // (plan/plan.h): cross-node bytes per node over the run (its steps and the start-up weight
  // broadcast) and, on a shaped link, the time in steps. None for a run plan cannot model
  // (unfinished, or an unknown method).
  std::optional<double> planned_bytes_per_node;
  std::optional<double> planned_steps_s;
  std::string plan_note;  // why there is no prediction, if there is none
  std::vector<ValidationPoint> curve;
};

// Reads one run; strait::Error names the file and the problem when something is missing or
// malformed.
RunRecord load_run(const std::filesystem::path& dir);

// Labels runs by the part of their paths that differs (e.g. "100mbit/ddp" for
// bench/out/testbed/100mbit/ddp among its siblings), or by the method when the paths are one.
void label_runs(std::vector<RunRecord>& runs);

// The first wall time at which a validation loss was at or below `target`, if any.
std::optional<double> time_to_reach(const RunRecord& run, double target);

// The default target: DDP's final validation loss + 3%, from the DDP run with the most steps;
// none without a DDP run.
std::optional<double> default_target(const std::vector<RunRecord>& runs);

}  // namespace strait::report
