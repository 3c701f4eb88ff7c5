#include "strait/report/run_record.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/core/metrics.h"
#include "strait/plan/plan.h"
#include "strait/report/svg.h"

namespace strait::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Every TCP packet on the testbed carries 66 bytes of headers (docs/TESTBED.md).
constexpr double kHeaderBytesPerPacket = 66;

json read_json(const fs::path& path) {
  try {
    return json::parse(read_whole_file(path));
  } catch (const json::exception& error) {
    throw Error(path.string() + ": not valid JSON (" + error.what() + ")");
  }
}

// `object[key]` as a T; Error naming the file and key if absent or of another type.
template <typename T>
T field(const json& object, const std::string& key, const fs::path& file) {
  if (!object.is_object() || !object.contains(key)) throw Error(file.string() + ": missing \"" + key + "\"");
  try {
    return object.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(file.string() + ": \"" + key + "\" is " + object.at(key).dump() + ", not of the expected type");
  }
}

template <typename T>
T field_or(const json& object, const std::string& key, T fallback) {
  if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
  return object.at(key).get<T>();
}

// "diloco H=50", "streaming diloco H=50 P=4 τ=5 int4", "sparseloco H=15 k=64", "ddp",
// "diloco S=13.8s throttle 3:8" (time-boxed phases, one replica slowed).
// ZeRO++'s switches as a run's configuration sets them, with their short names.
std::vector<std::pair<bool, std::string>> zero_plus_plus_options(const json& config) {
  return {{field_or<int64_t>(config, "zero_hpz_partition_size", 1) > 1, "hpZ"},
          {field_or<bool>(config, "zero_quantized_weights", false), "qwZ"},
          {field_or<bool>(config, "zero_quantized_gradients", false), "qgZ"}};
}

std::string method_of(const json& config, const fs::path& file) {
  std::string strategy = field<std::string>(config, "strategy", file);
  if (strategy == "auto") strategy = "ddp";
  if (strategy == "zero3") {
    std::string method = strategy;
    for (const auto& [flag, name] : zero_plus_plus_options(config)) {
      if (flag) method += " +" + name;
    }
    if (const auto wire = field_or<std::string>(config, "zero_wire_dtype", "fp32"); wire != "fp32") method += " " + wire;
    return method;
  }
  if (strategy != "local-sgd" && strategy != "diloco" && strategy != "sparseloco") return strategy;
  const int64_t fragments = field_or<int64_t>(config, "fragments", 1);
  std::string method = (fragments > 1 ? "streaming " : "") + strategy;
  if (const double seconds = field_or<double>(config, "sync_every_seconds", 0); seconds > 0) {
    method += " S=" + number_text(seconds) + "s";
  } else {
    method += " H=" + std::to_string(field_or<int64_t>(config, "sync_every", 0));
  }
  if (fragments > 1) {
    method += " P=" + std::to_string(fragments);
    if (const int64_t overlap = field_or<int64_t>(config, "overlap_steps", 0); overlap > 0) {
      method += " τ=" + std::to_string(overlap);
    }
  }
  if (strategy == "sparseloco") method += " k=" + std::to_string(field_or<int64_t>(config, "topk", 0));
  if (const auto dtype = field_or<std::string>(config, "outer_dtype", "fp32"); strategy != "sparseloco" && dtype != "fp32") {
    method += " " + dtype;
  }
  // The outer step where the run set it (0 and -1 stand for the method's defaults).
  if (const double lr = field_or<double>(config, "outer_lr", 0); lr > 0) method += " outer lr=" + number_text(lr);
  if (const double momentum = field_or<double>(config, "outer_momentum", -1); momentum >= 0) {
    method += " μ=" + number_text(momentum);
  }
  if (const auto inner = field_or<std::string>(config, "inner", "auto"); inner == "ddp" || inner == "zero3") {
    method += " (" + inner + " inside)";
  }
  if (const auto throttle = field_or<std::string>(config, "throttle", ""); !throttle.empty()) {
    method += " throttle " + throttle;
  }
  return method;
}

// Sums the step timings and builds the validation curve from metrics.jsonl.
void read_metrics_into(RunRecord& run, const fs::path& file) {
  const std::vector<json> lines = read_metrics(file);
  if (lines.empty()) throw Error(file.string() + ": no steps logged yet");
  double elapsed_offset = 0, previous_elapsed = 0, cross_node_bytes = 0;
  bool unrecorded_waits = false;
  for (const json& line : lines) {
    // A resumed run's process starts its clock again: continue from where the last one ended.
    double elapsed = field<double>(line, "elapsed_s", file) + elapsed_offset;
    if (elapsed < previous_elapsed) elapsed_offset = previous_elapsed, elapsed += previous_elapsed;
    previous_elapsed = elapsed;
    run.steps = field<int64_t>(line, "step", file);
    run.forward_s += field_or<double>(line, "forward_ms", 0) / 1000;
    run.backward_s += field_or<double>(line, "backward_ms", 0) / 1000;
    run.update_s += field_or<double>(line, "update_ms", 0) / 1000;
    run.steps_s += field_or<double>(line, "step_ms", 0) / 1000;
    run.blocked_s += field_or<double>(line, "comm_blocked_ms", 0) / 1000;
    unrecorded_waits |= line.contains("traffic") && !line.contains("comm_blocked_ms");
    if (line.contains("outer_sync")) run.blocked_s += field_or<double>(line.at("outer_sync"), "blocked_ms", 0) / 1000;
    if (line.contains("traffic") && line.at("traffic").contains("cross_node")) {
      cross_node_bytes += field_or<double>(line.at("traffic").at("cross_node"), "sent", 0);
    }
    if (line.contains("val_loss")) {
      run.curve.push_back({run.steps, elapsed, cross_node_bytes, field<double>(line, "val_loss", file)});
    }
  }
  const bool ddp_inside = run.method == "ddp" || run.method.find("(ddp inside)") != std::string::npos;
  if (unrecorded_waits && ddp_inside) run.blocked_s = std::nan("");
  run.wall_s = previous_elapsed;
  run.final_val_loss = run.curve.empty() ? std::nan("") : run.curve.back().val_loss;
}

void read_testbed_into(RunRecord& run, const fs::path& file) {
  const json testbed = read_json(file);
  run.link = field<std::string>(testbed, "link", file);
  run.link_bits_per_s = field<double>(testbed, "link_bits_per_s", file);
  run.nodes = field<int>(testbed, "nnodes", file);
  run.ranks_per_node = field<int>(testbed, "nproc_per_node", file);
  const json nodes = field<json>(testbed, "nodes", file);
  if (!nodes.is_array() || static_cast<int>(nodes.size()) != run.nodes || run.nodes < 1) {
    throw Error(file.string() + ": \"nodes\" must list all " + std::to_string(run.nodes) + " nodes");
  }
  double payload = 0;
  for (const json& node : nodes) {
    const json delta = field<json>(node, "delta", file);
    payload += field<double>(delta, "tx_bytes", file) - kHeaderBytesPerPacket * field<double>(delta, "tx_packets", file);
  }
  run.kernel_bytes_per_node = payload / run.nodes;
}

// The run's method as `strait plan` names and shapes it (see plan::method_named).
plan::MethodSpec planned_method(const json& config, const fs::path& file) {
  std::string strategy = field<std::string>(config, "strategy", file);
  if (strategy == "auto") strategy = "ddp";
  const int64_t fragments = field_or<int64_t>(config, "fragments", 1);
  plan::MethodOptions options;
  options.sync_every = static_cast<int>(field_or<int64_t>(config, "sync_every", options.sync_every));
  options.fragments = static_cast<int>(fragments);
  options.overlap_steps = static_cast<int>(field_or<int64_t>(config, "overlap_steps", 0));
  options.outer_dtype = codec::parse_wire_dtype(field_or<std::string>(config, "outer_dtype", "fp32"));
  options.bucket_bytes = field_or<double>(config, "bucket_mb", 25) * 1024 * 1024;
  options.sparse.topk = field_or<int64_t>(config, "topk", options.sparse.topk);
  options.sparse.index_coding = codec::index_coding(field_or<std::string>(config, "index_coding", "auto"));
  options.zero3_inside = field_or<std::string>(config, "inner", "auto") == "zero3";
  if (strategy == "zero3") {
    options.wire_dtype = codec::parse_wire_dtype(field_or<std::string>(config, "zero_wire_dtype", "fp32"));
    plan::MethodSpec method = plan::method_named("zero3", options);
    const auto switches = zero_plus_plus_options(config);
    method.hpz = switches[0].first;
    method.qwz = switches[1].first;
    method.qgz = switches[2].first;
    method.name = method_of(config, file);
    return method;
  }
  return plan::method_named(strategy == "diloco" && fragments > 1 ? "streaming-diloco" : strategy, options);
}

// Fills the run's predictions from plan's model, with the compute time measured in the run
// itself (as `strait plan --measured` does). Runs plan cannot model keep none: the report
// still shows everything measured.
void predict_into(RunRecord& run, const fs::path& run_dir, const json& config) {
  if (field_or<double>(config, "sync_every_seconds", 0) > 0) {
    run.plan_note = "its inner phases were time-boxed (--sync-every-seconds), and plan models a fixed H";
    return;
  }
  const bool zero3_inside = field_or<std::string>(config, "inner", "auto") == "zero3";
  if (zero3_inside && run.replica_ranks != run.ranks_per_node) {
    run.plan_note = "plan models ZeRO-3 inside replicas of one node each; this run's replicas are " +
                    std::to_string(run.replica_ranks) + " ranks of nodes of " + std::to_string(run.ranks_per_node);
    return;
  }
  try {
    const plan::MeasuredRun measured = plan::read_measured_run(run_dir.string());
    if (!measured.params || !measured.tokens_per_rank_step) {
      run.plan_note = "no parameters or tokens per step in its summary.json";
      return;
    }
    plan::Workload work;
    work.params = *measured.params;
    work.tokens_per_rank_step = *measured.tokens_per_rank_step;
    work.step_compute_s = measured.step_compute_s;
    work.shapes = measured.shapes;
    work.layer_elements = measured.layer_elements;
    work.sparse_codec_s_per_param = measured.sparse_codec_s_per_param;
    // On loopback there is no link to wait for: bytes only (a single node sends none).
    const bool shaped = run.link_bits_per_s > 0;
    const plan::Cluster cluster{run.nodes, run.ranks_per_node, shaped ? run.link_bits_per_s : 1e15};
    const plan::Prediction prediction = plan::predict(cluster, work, planned_method(config, run_dir / "train_config.json"));
    const auto steps = static_cast<double>(run.steps);
    // Every method but ZeRO-3 starts with rank 0's weights broadcast; ZeRO-3's ranks check
    // theirs and keep a shard each.
    const bool broadcast = field<std::string>(config, "strategy", run_dir / "train_config.json") != "zero3" && !zero3_inside;
    run.planned_bytes_per_node = prediction.cross_node_bytes_per_node_per_step * steps +
                                 (broadcast ? plan::weight_broadcast_bytes_per_node(cluster, work.params) : 0.0);
    if (shaped) run.planned_steps_s = prediction.step_time_s * steps;
  } catch (const std::exception& error) {  // also a summary.json of unexpected types
    run.plan_note = error.what();
  }
}

}  // namespace

RunRecord load_run(const fs::path& dir) {
  RunRecord run;
  run.dir = dir;
  fs::path run_dir = dir;
  fs::path testbed = dir / "testbed.json";
  if (!fs::exists(run_dir / "metrics.jsonl") && fs::exists(dir / "run" / "metrics.jsonl")) run_dir = dir / "run";
  if (!fs::exists(run_dir / "metrics.jsonl")) {
    throw Error("report: " + dir.string() + " is not a run directory (no metrics.jsonl, nor run/metrics.jsonl)");
  }
  if (!fs::exists(testbed)) testbed = run_dir / "testbed.json";
  const json config = read_json(run_dir / "train_config.json");
  run.method = method_of(config, run_dir / "train_config.json");
  read_metrics_into(run, run_dir / "metrics.jsonl");  // after the method: DDP's waits depend on it
  run.link = "loopback";
  if (fs::exists(testbed)) read_testbed_into(run, testbed);
  const fs::path summary_file = run_dir / "summary.json";
  if (fs::exists(summary_file)) {
    const json summary = read_json(summary_file);
    run.finished = true;
    run.wall_s = field<double>(summary, "wall_time_s", summary_file);
    // Without a testbed, the nodes the launcher formed (several on one machine, e.g. scripts/compare
    // --loopback), as the run recorded them.
    if (!fs::exists(testbed) && summary.contains("nodes")) {
      run.nodes = std::max(1, field<int>(summary, "nodes", summary_file));
      run.ranks_per_node = std::max(1, field_or<int>(summary, "world_size", run.nodes) / run.nodes);
    }
    run.replica_ranks = field_or<int>(summary, "replica_ranks", run.ranks_per_node);
    double sent = 0;
    for (const json& rank : field_or<json>(summary, "traffic_by_rank", json::array())) {
      sent += field_or<double>(field_or<json>(rank, "cross_node", json::object()), "sent", 0);
    }
    run.ledger_bytes_per_node = sent / run.nodes;
    predict_into(run, run_dir, config);
  } else {
    run.plan_note = "unfinished: no summary.json";
  }
  return run;
}

void label_runs(std::vector<RunRecord>& runs) {
  // The components every path shares at its start are dropped; what remains names the run.
  std::vector<std::vector<std::string>> parts;
  for (const RunRecord& run : runs) {
    std::vector<std::string> components;
    for (const auto& component : fs::absolute(run.dir).lexically_normal()) {
      if (!component.empty()) components.push_back(component.string());
    }
    parts.push_back(components);
  }
  size_t shared = parts.empty() ? 0 : parts.front().size();
  for (const auto& components : parts) {
    size_t i = 0;
    while (i < shared && i < components.size() && components[i] == parts.front()[i]) ++i;
    shared = i;
  }
  for (size_t r = 0; r < runs.size(); ++r) {
    std::string label;
    for (size_t i = shared; i < parts[r].size(); ++i) label += (label.empty() ? "" : "/") + parts[r][i];
    runs[r].label = label.empty() ? runs[r].method : label;
  }
}

std::optional<double> time_to_reach(const RunRecord& run, double target) {
  for (const ValidationPoint& point : run.curve) {
    if (point.val_loss <= target) return point.elapsed_s;
  }
  return std::nullopt;
}

std::optional<double> default_target(const std::vector<RunRecord>& runs) {
  const RunRecord* reference = nullptr;
  for (const RunRecord& run : runs) {
    if (run.method != "ddp" || std::isnan(run.final_val_loss)) continue;
    if (reference == nullptr || run.steps > reference->steps) reference = &run;
  }
  if (reference == nullptr) return std::nullopt;
  return reference->final_val_loss * 1.03;
}

}  // namespace strait::report
