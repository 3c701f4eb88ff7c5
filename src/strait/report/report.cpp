#include "strait/report/report.h"

#include <cmath>
#include <cstdio>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/report/svg.h"

namespace strait::report {

namespace fs = std::filesystem;

namespace {

// Identifies pages this command wrote, so that --overwrite never replaces anything else.
constexpr const char* kGeneratorMarker = "<meta name=\"generator\" content=\"strait report\">";

constexpr const char* kStyle = R"(
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
div.table { overflow-x: auto; margin: 12px 0 24px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-order="asc"]::after { content: " \25B2"; }
th[data-order="desc"]::after { content: " \25BC"; }
td.text, th.text { text-align: left; }
table.fits th { cursor: default; }
svg.chart { display: block; margin: 8px 0 24px; font-size: 12px; }
svg .title { font-size: 15px; font-weight: bold; }
svg .label { font-size: 13px; }
svg .grid { stroke: #e4e4e4; }
svg .frame { fill: none; stroke: #999; }
p.note { font-size: 13px; color: #555; }
)";

// Clicking a column header sorts the rows by it; numeric cells carry data-value.
constexpr const char* kSortScript = R"(
document.querySelectorAll("table.sortable th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const table = header.closest("table");
    const ascending = header.dataset.order !== "asc";
    table.querySelectorAll("th").forEach((h) => delete h.dataset.order);
    header.dataset.order = ascending ? "asc" : "desc";
    const key = (row) => {
      const cell = row.cells[column];
      return cell.dataset.value === undefined ? cell.textContent : Number(cell.dataset.value || NaN);
    };
    const rows = [...table.tBodies[0].rows];
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (typeof x === "string") return ascending ? x.localeCompare(y) : y.localeCompare(x);
      if (isNaN(x)) return 1;
      if (isNaN(y)) return -1;
      return ascending ? x - y : y - x;
    });
    rows.forEach((row) => table.tBodies[0].appendChild(row));
  });
});
)";

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "–";
  char text[32];
  std::snprintf(text, sizeof(text), "%.*f", decimals, value);
  return text;
}

// One column of the comparison: its header and how each run fills it (text, and the number it
// sorts by; NaN for none).
struct Column {
  const char* header;
  bool text;
  std::string (*shown)(const RunRecord&, const Comparison&);
  double (*value)(const RunRecord&, const Comparison&);
};

double no_value(const RunRecord&, const Comparison&) { return std::nan(""); }

double time_to_target(const RunRecord& run, const Comparison& comparison) {
  if (!comparison.target) return std::nan("");
  return time_to_reach(run, *comparison.target).value_or(std::nan(""));
}

const std::vector<Column>& columns() {
  static const std::vector<Column> all = {
      {"run", true, [](const RunRecord& r, const Comparison&) { return r.label; }, no_value},
      {"method", true, [](const RunRecord& r, const Comparison&) { return r.method; }, no_value},
      {"link", true, [](const RunRecord& r, const Comparison&) { return r.link; }, no_value},
      {"nodes x ranks", true,
       [](const RunRecord& r, const Comparison&) { return std::to_string(r.nodes) + " x " + std::to_string(r.ranks_per_node); },
       no_value},
      {"steps", false, [](const RunRecord& r, const Comparison&) { return std::to_string(r.steps) + (r.finished ? "" : "*"); },
       [](const RunRecord& r, const Comparison&) { return static_cast<double>(r.steps); }},
      {"val loss", false, [](const RunRecord& r, const Comparison&) { return fixed(r.final_val_loss, 4); },
       [](const RunRecord& r, const Comparison&) { return r.final_val_loss; }},
      {"wall s", false, [](const RunRecord& r, const Comparison&) { return fixed(r.wall_s, 1); },
       [](const RunRecord& r, const Comparison&) { return r.wall_s; }},
      {"steps s", false, [](const RunRecord& r, const Comparison&) { return fixed(r.steps_s, 1); },
       [](const RunRecord& r, const Comparison&) { return r.steps_s; }},
      {"plan steps s", false,
       [](const RunRecord& r, const Comparison&) { return fixed(r.planned_steps_s.value_or(std::nan("")), 1); },
       [](const RunRecord& r, const Comparison&) { return r.planned_steps_s.value_or(std::nan("")); }},
      {"compute s", false, [](const RunRecord& r, const Comparison&) { return fixed(r.compute_s(), 1); },
       [](const RunRecord& r, const Comparison&) { return r.compute_s(); }},
      {"blocked s", false, [](const RunRecord& r, const Comparison&) { return fixed(r.blocked_s, 1); },
       [](const RunRecord& r, const Comparison&) { return r.blocked_s; }},
      {"cross-node B/node (ledger)", false,
       [](const RunRecord& r, const Comparison&) { return format_value(r.ledger_bytes_per_node, Axis::Unit::Bytes); },
       [](const RunRecord& r, const Comparison&) { return r.ledger_bytes_per_node; }},
      {"cross-node B/node (kernel)", false,
       [](const RunRecord& r, const Comparison&) {
         return r.kernel_bytes_per_node ? format_value(*r.kernel_bytes_per_node, Axis::Unit::Bytes) : std::string("–");
       },
       [](const RunRecord& r, const Comparison&) { return r.kernel_bytes_per_node.value_or(std::nan("")); }},
      {"cross-node B/node (plan)", false,
       [](const RunRecord& r, const Comparison&) {
         return r.planned_bytes_per_node ? format_value(*r.planned_bytes_per_node, Axis::Unit::Bytes) : std::string("–");
       },
       [](const RunRecord& r, const Comparison&) { return r.planned_bytes_per_node.value_or(std::nan("")); }},
      {"time to target s", false, [](const RunRecord& r, const Comparison& c) { return fixed(time_to_target(r, c), 1); },
       time_to_target},
  };
  return all;
}

std::string html_table(const Comparison& comparison) {
  std::string out = "<div class=\"table\"><table class=\"sortable\">\n<thead><tr>";
  for (const Column& column : columns()) {
    out += std::string("<th") + (column.text ? " class=\"text\"" : "") + ">" + escape(column.header) + "</th>";
  }
  out += "</tr></thead>\n<tbody>\n";
  for (const RunRecord& run : comparison.runs) {
    out += "<tr>";
    for (const Column& column : columns()) {
      const double value = column.value(run, comparison);
      // The first column's cell shows the run's whole path on hover.
      const std::string hover = &column == &columns().front() ? " title=\"" + escape(run.dir.string()) + "\"" : "";
      out += column.text ? "<td class=\"text\"" + hover + ">"
                         : "<td data-value=\"" + (std::isfinite(value) ? fixed(value, 6) : std::string()) + "\">";
      out += escape(column.shown(run, comparison)) + "</td>";
    }
    out += "</tr>\n";
  }
  return out + "</tbody>\n</table></div>\n";
}

std::string charts(const Comparison& comparison) {
  std::vector<Series> by_time, by_bytes;
  BarChart times{"Where the time went (rank 0)", {"seconds", false, Axis::Unit::Plain}, {}, {}, {}, true};
  times.segments = {"forward", "backward", "update (optimizer, reduction)", "blocked on communication",
                    "other (evaluation, checkpoints, start-up)"};
  BarChart bytes{"Cross-node bytes sent per node", {"bytes (log scale)", true, Axis::Unit::Bytes}, {}, {}, {}, false};
  bytes.segments = {"ledger (strait's count of payload)", "kernel counters (TCP payload on the shaped link)",
                    "formula (strait plan)"};
  for (const RunRecord& run : comparison.runs) {
    Series time{run.label, {}}, sent{run.label, {}};
    for (const ValidationPoint& point : run.curve) {
      time.points.emplace_back(point.elapsed_s, point.val_loss);
      sent.points.emplace_back(point.cross_node_bytes, point.val_loss);
    }
    by_time.push_back(time);
    by_bytes.push_back(sent);
    times.rows.push_back(run.label);
    const double steps = run.forward_s + run.backward_s + run.update_s;
    // Unrecorded waits (NaN) stay inside the update's bar.
    const double waits = std::isnan(run.blocked_s) ? 0 : run.blocked_s;
    times.values.push_back({run.forward_s, run.backward_s, run.update_s - waits, run.blocked_s,
                            std::max(0.0, run.wall_s - steps)});
    bytes.rows.push_back(run.label);
    bytes.values.push_back({run.ledger_bytes_per_node, run.kernel_bytes_per_node.value_or(std::nan("")),
                            run.planned_bytes_per_node.value_or(std::nan(""))});
  }
  const Axis loss{"validation loss", false, Axis::Unit::Plain};
  return line_chart("Validation loss against wall time", {"wall time (s)", false, Axis::Unit::Plain}, loss, by_time) +
         line_chart("Validation loss against cross-node bytes",
                    {"cross-node bytes sent by rank 0 (ledger, log scale)", true, Axis::Unit::Bytes}, loss, by_bytes) +
         bar_chart(times) + bar_chart(bytes);
}

}  // namespace

Comparison compare(std::vector<RunRecord> runs, std::optional<double> target_loss) {
  Comparison comparison;
  comparison.runs = std::move(runs);
  if (target_loss) {
    comparison.target = target_loss;
    comparison.target_origin = "given with --target-loss";
  } else if ((comparison.target = default_target(comparison.runs))) {
    comparison.target_origin = "DDP's final validation loss + 3%";
  }
  return comparison;
}

std::string render_html(const Comparison& comparison, const std::string& title) {
  std::string target_note = comparison.target
                                ? "Target loss " + fixed(*comparison.target, 4) + " (" + comparison.target_origin +
                                      "): the time to reach it is the wall time of the first validation at or below it."
                                : "No target loss: give --target-loss, or include a DDP run (its final validation loss "
                                  "+ 3%).";
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  html += std::string(kGeneratorMarker) + "\n<title>" + escape(title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n";
  html += "<body>\n<h1>" + escape(title) + "</h1>\n";
  if (!comparison.runs.empty()) {
    html += "<p class=\"note\">" + escape(target_note) +
            " Click a column to sort. Steps marked * belong to runs without a summary (stopped or still running). "
            "Times are rank 0's; blocked time is what its metrics record as waiting on communication (– where a "
            "DDP run did not record it). Plan columns are what strait plan predicts for the run's method, "
            "settings and model with the compute time measured in the run itself (its steps that sent "
            "nothing across nodes), plus the start-up weight broadcast. Hover over a run for its directory.</p>\n";
    html += html_table(comparison) + charts(comparison);
  }
  for (const SweepFits& sweep : comparison.sweeps) html += sweep_html(sweep);
  return html + "<script>" + kSortScript + "</script>\n</body>\n</html>\n";
}

// Columns on a terminal: UTF-8 continuation bytes take no room of their own ("–", "τ").
size_t display_width(const std::string& text) {
  size_t width = 0;
  for (unsigned char c : text) width += (c & 0xC0) != 0x80;
  return width;
}

std::string render_table(const Comparison& comparison) {
  std::string sweeps;
  for (const SweepFits& sweep : comparison.sweeps) sweeps += "\n" + sweep_table(sweep);
  if (comparison.runs.empty()) return sweeps.empty() ? sweeps : sweeps.substr(1);
  // The terminal gets the columns that fit a line: run, method, link, loss, times, bytes.
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths;
  std::vector<size_t> shown;
  for (const char* header : {"run", "method", "link", "val loss", "wall s", "blocked s", "cross-node B/node (ledger)",
                             "time to target s"}) {
    for (size_t c = 0; c < columns().size(); ++c) {
      if (columns()[c].header == std::string(header)) shown.push_back(c);
    }
  }
  std::vector<std::string> header;
  for (size_t c : shown) header.push_back(columns()[c].header);
  cells.push_back(header);
  for (const RunRecord& run : comparison.runs) {
    std::vector<std::string> row;
    for (size_t c : shown) row.push_back(columns()[c].shown(run, comparison));
    cells.push_back(row);
  }
  for (const auto& row : cells) {
    widths.resize(row.size());
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], display_width(row[i]));
  }
  std::string out;
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string pad(widths[i] - display_width(row[i]), ' ');
      out += (i ? "  " : "") + (columns()[shown[i]].text ? row[i] + pad : pad + row[i]);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += "\n";
  }
  if (comparison.target) out += "target loss " + fixed(*comparison.target, 4) + " (" + comparison.target_origin + ")\n";
  return out + sweeps;
}

void write_html_report(const fs::path& out, const std::string& html, bool overwrite) {
  write_generated_file(out, html, overwrite, {"report", kGeneratorMarker, "report", "strait report"});
}

}  // namespace strait::report
