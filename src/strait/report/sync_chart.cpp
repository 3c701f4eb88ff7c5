#include "strait/report/sync_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/core/metrics.h"
#include "strait/report/svg.h"

namespace strait::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Identifies charts this command wrote, so that --overwrite never replaces anything else.
constexpr const char* kChartMarker = "data-generator=\"strait plan --chart\"";

// The page's chart style (report.cpp), inline: the file is read on its own.
constexpr const char* kChartStyle =
    "svg { font-family: sans-serif; font-size: 12px; } .title { font-size: 15px; font-weight: bold; } "
    ".label { font-size: 13px; } .grid { stroke: #e4e4e4; } .frame { fill: none; stroke: #999; } "
    ".note { fill: #444; }";

json sync_run_json(const fs::path& path) {
  try {
    return json::parse(read_whole_file(path));
  } catch (const json::exception& error) {
    throw Error("plan --chart-runs: " + path.string() + ": not valid JSON (" + error.what() + ")");
  }
}

// `object[key]` as a T, or an error naming the file and the key.
template <typename T>
T sync_run_field(const json& object, const std::string& key, const fs::path& file) {
  if (!object.is_object() || !object.contains(key)) {
    throw Error("plan --chart-runs: " + file.string() + ": missing \"" + key + "\"");
  }
  try {
    return object.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error("plan --chart-runs: " + file.string() + ": \"" + key + "\" is " + object.at(key).dump() +
                ", not of the expected type");
  }
}

std::string rate_text(double bits_per_s) { return format_value(bits_per_s, Axis::Unit::BitRate); }

std::string seconds_text(double seconds) {
  char text[32];
  if (seconds >= 1) std::snprintf(text, sizeof(text), "%.2f s", seconds);
  else std::snprintf(text, sizeof(text), "%.3g ms", seconds * 1000);
  return text;
}

// 7B, 512M, 869.5k, as plan's table titles write parameter counts.
std::string count_text(double count) {
  const char* suffix = count >= 1e9 ? "B" : count >= 1e6 ? "M" : count >= 1e3 ? "k" : "";
  const double scale = count >= 1e9 ? 1e9 : count >= 1e6 ? 1e6 : count >= 1e3 ? 1e3 : 1;
  char text[32];
  std::snprintf(text, sizeof(text), "%.4g%s", count / scale, suffix);
  return text;
}

// Words in lines of at most `width` characters.
std::vector<std::string> wrap(const std::string& text, size_t width) {
  std::vector<std::string> lines(1);
  std::istringstream words(text);
  for (std::string word; words >> word;) {
    if (!lines.back().empty() && lines.back().size() + 1 + word.size() > width) lines.emplace_back();
    lines.back() += (lines.back().empty() ? "" : " ") + word;
  }
  return lines;
}

// The width and height of line_chart()'s <svg>, from its viewBox="0 0 W H".
std::pair<double, double> chart_size(const std::string& chart) {
  const std::string key = "viewBox=\"0 0 ";
  const size_t at = chart.find(key);
  double width = 0, height = 0;
  if (at == std::string::npos || std::sscanf(chart.c_str() + at + key.size(), "%lf %lf", &width, &height) != 2) {
    throw Error("plan: internal: the chart has no viewBox");
  }
  return {width, height};
}

}  // namespace

MeasuredSync measured_sync(const fs::path& dir, double budget) {
  const std::string where = "plan --chart-runs: " + dir.string();
  fs::path run_dir = dir;
  if (!fs::exists(run_dir / "metrics.jsonl") && fs::exists(dir / "run" / "metrics.jsonl")) run_dir = dir / "run";
  if (!fs::exists(run_dir / "metrics.jsonl")) {
    throw Error(where + " is not a run directory (no metrics.jsonl, nor run/metrics.jsonl)");
  }
  fs::path testbed_file = dir / "testbed.json";
  if (!fs::exists(testbed_file)) testbed_file = run_dir / "testbed.json";
  if (!fs::exists(testbed_file)) {
    throw Error(where + ": no testbed.json, so no link rate (the chart's runs ran on shaped links: scripts/wan)");
  }
  MeasuredSync run;
  run.dir = dir;
  const json testbed = sync_run_json(testbed_file);
  run.link_bits_per_s = sync_run_field<double>(testbed, "link_bits_per_s", testbed_file);
  run.replicas = sync_run_field<int>(testbed, "nnodes", testbed_file);
  if (!(run.link_bits_per_s > 0) || run.replicas < 2) {
    throw Error(where + ": " + testbed_file.string() + " has no link between nodes (link_bits_per_s " +
                std::to_string(run.link_bits_per_s) + ", nnodes " + std::to_string(run.replicas) + ")");
  }
  const fs::path config_file = run_dir / "train_config.json";
  const json config = sync_run_json(config_file);
  run.method = sync_run_field<std::string>(config, "strategy", config_file);
  const bool fragmented = config.contains("fragments") && config.at("fragments").is_number_integer() &&
                          config.at("fragments").get<int64_t>() > 1;
  if (run.method == "local-sgd") run.kind = plan::Kind::LocalSgd;
  else if (run.method == "diloco" && !fragmented) run.kind = plan::Kind::Diloco;
  else if (run.method == "sparseloco") run.kind = plan::Kind::SparseLoco;
  else {
    throw Error(where + ": a " + (fragmented ? "streaming " : "") + run.method +
                " run; the smallest H is for methods that block at the outer step (local-sgd, diloco, sparseloco)");
  }
  const fs::path summary_file = run_dir / "summary.json";
  if (fs::exists(summary_file)) {
    const json summary = sync_run_json(summary_file);
    if (summary.is_object() && summary.contains("replicas") &&
        sync_run_field<int>(summary, "replicas", summary_file) != run.replicas) {
      throw Error(where + ": " + std::to_string(summary.at("replicas").get<int>()) + " replicas on " +
                  std::to_string(run.replicas) + " nodes; the condition counts one replica per node");
    }
  }
  const fs::path metrics_file = run_dir / "metrics.jsonl";
  double blocked_ms = 0, quiet_ms = 0;
  int quiet_steps = 0;
  for (const json& line : read_metrics(metrics_file)) {
    if (!line.contains("step_ms")) continue;
    const std::string at = metrics_file.string() + " step " + line.value("step", json()).dump();
    if (line.contains("outer_sync")) {
      blocked_ms += sync_run_field<double>(line.at("outer_sync"), "blocked_ms", at);
      ++run.syncs;
    } else {
      quiet_ms += sync_run_field<double>(line, "step_ms", at);
      ++quiet_steps;
    }
  }
  if (run.syncs == 0 || quiet_steps == 0) {
    throw Error(where + ": " + metrics_file.string() + " has " + std::to_string(run.syncs) + " outer syncs and " +
                std::to_string(quiet_steps) + " steps between them; the condition needs both");
  }
  run.sync_s = blocked_ms / run.syncs / 1000;
  run.step_s = quiet_ms / quiet_steps / 1000;
  const double threshold = run.sync_s / (budget * run.step_s);
  if (!(threshold < 1e9)) throw Error(where + ": its syncs take more than 1e9 steps; no useful H");
  run.smallest_sync_every = static_cast<int>(std::floor(threshold)) + 1;
  return run;
}

std::string measured_sync_table(const std::vector<MeasuredSync>& runs, double budget) {
  std::ostringstream out;
  out << "measured in runs: H > mean blocked time per outer sync / (" << budget
      << " x mean step without a sync)\n";
  char line[512];
  std::snprintf(line, sizeof(line), "%-12s %-12s %4s %6s %10s %10s %10s  %s\n", "method", "link", "R", "syncs",
                "per sync", "step", "smallest H", "run");
  out << line;
  for (const MeasuredSync& run : runs) {
    std::snprintf(line, sizeof(line), "%-12s %-12s %4d %6d %10s %10s %10d  %s\n", run.method.c_str(),
                  rate_text(run.link_bits_per_s).c_str(), run.replicas, run.syncs, seconds_text(run.sync_s).c_str(),
                  seconds_text(run.step_s).c_str(), run.smallest_sync_every, run.dir.string().c_str());
    out << line;
  }
  return out.str();
}

std::string sync_chart_svg(const plan::Cluster& cluster, const plan::Workload& workload,
                           const std::vector<plan::SyncConditionCell>& cells, const std::vector<MeasuredSync>& runs,
                           double budget) {
  // A colour per method, a dash pattern per replica count, in the order the cells list them.
  std::vector<std::string> names;
  std::vector<plan::Kind> kinds;
  std::vector<int> replicas;
  for (const plan::SyncConditionCell& cell : cells) {
    if (std::find(names.begin(), names.end(), cell.name) == names.end()) {
      names.push_back(cell.name);
      kinds.push_back(cell.method.kind);
    }
    if (std::find(replicas.begin(), replicas.end(), cell.replicas) == replicas.end()) replicas.push_back(cell.replicas);
  }
  std::vector<Series> series;
  for (size_t n = 0; n < names.size(); ++n) {
    for (size_t r = 0; r < replicas.size(); ++r) {
      Series line{names[n] + " R=" + std::to_string(replicas[r]), {}};
      line.color = static_cast<int>(n);
      line.dash = static_cast<int>(r);
      for (const plan::SyncConditionCell& cell : cells) {
        if (cell.name == names[n] && cell.replicas == replicas[r]) {
          line.points.emplace_back(cell.link_bits_per_s, cell.condition.smallest_sync_every);
        }
      }
      std::sort(line.points.begin(), line.points.end());
      series.push_back(std::move(line));
    }
  }
  // The runs: one marker series per method and replica count, in the colour of that method's
  // lines (the first of its kind), else in colours after the lines'.
  std::vector<std::pair<std::string, int>> groups;
  int extra_colors = 0;
  for (const MeasuredSync& run : runs) {
    const std::pair<std::string, int> group{run.method, run.replicas};
    const auto found = std::find(groups.begin(), groups.end(), group);
    if (found == groups.end()) {
      groups.push_back(group);
      Series markers{run.method + " R=" + std::to_string(run.replicas) + ", runs", {}};
      markers.line = false;
      const auto same_kind = std::find(kinds.begin(), kinds.end(), run.kind);
      markers.color = same_kind != kinds.end() ? static_cast<int>(same_kind - kinds.begin())
                                               : static_cast<int>(names.size()) + extra_colors++;
      series.push_back(std::move(markers));
    }
    Series& markers = series[names.size() * replicas.size() +
                             static_cast<size_t>(std::find(groups.begin(), groups.end(), group) - groups.begin())];
    markers.points.emplace_back(run.link_bits_per_s, run.smallest_sync_every);
  }

  const std::string percent = number_text(budget * 100) + "%";
  const std::string chart =
      line_chart("Smallest H for an outer exchange under " + percent + " of compute",
                 {"link rate (each node's, each way)", true, Axis::Unit::BitRate},
                 {"smallest H (inner steps per outer exchange)", true, Axis::Unit::Plain}, series);
  const auto [width, height] = chart_size(chart);

  const double compute_s = cells.empty() ? 0 : cells.front().condition.compute_s;
  std::vector<std::string> notes = {
      "Lines: strait plan, the smallest H with the link time of one exchange < " + number_text(budget) +
      " x H x the compute of a step (above a line the exchange costs less than " + percent + "); " +
      count_text(workload.params) + " parameters, " + seconds_text(compute_s) + " of compute a step, " +
      std::to_string(cluster.ranks_per_node) + (cluster.ranks_per_node == 1 ? " rank" : " ranks") +
      " and one replica per node, link efficiency " + number_text(cluster.link_efficiency) + "."};
  if (!runs.empty()) {
    notes.push_back("Hollow circles: runs on shaped links, the same condition with their measured times: mean blocked "
                    "time per outer sync / (" + number_text(budget) +
                    " x mean time of a step without a sync). Hover a point for its value.");
  }
  std::vector<std::string> lines;
  for (const std::string& note : notes) {
    for (std::string& line : wrap(note, static_cast<size_t>((width - 32) / 6.6))) lines.push_back(std::move(line));
  }
  char size[96];
  const double total = height + 8 + 16 * static_cast<double>(lines.size()) + 8;
  std::snprintf(size, sizeof(size), "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\"", width, total, width, total);
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" " +
                    std::string(kChartMarker) + " " + size + ">\n<style>" + kChartStyle + "</style>\n" +
                    "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n" + chart;
  double y = height + 8;
  for (const std::string& line : lines) {
    y += 16;
    char position[64];
    std::snprintf(position, sizeof(position), "<text x=\"16\" y=\"%.0f\" class=\"note\">", y);
    svg += position + escape(line) + "</text>\n";
  }
  return svg + "</svg>\n";
}

void write_sync_chart(const fs::path& out, const std::string& svg, bool overwrite) {
  write_generated_file(out, svg, overwrite, {"plan", kChartMarker, "chart", "strait plan --chart"});
}

}  // namespace strait::report
