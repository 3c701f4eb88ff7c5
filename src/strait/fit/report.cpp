#include "strait/fit/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "strait/core/error.h"

namespace strait::fit {
namespace {

using nlohmann::json;

std::vector<double> column(const std::vector<Cell>& cells, double Cell::*field) {
  std::vector<double> values;
  for (const Cell& cell : cells) values.push_back(cell.*field);
  return values;
}

size_t distinct(const std::vector<Cell>& cells, double Cell::*field) {
  std::set<double> values;
  for (const Cell& cell : cells) values.insert(cell.*field);
  return values.size();
}

// For each N, only the cells with the most tokens at that N (see MethodFit::power_law_cells).
std::vector<Cell> largest_tokens_per_params(const std::vector<Cell>& cells) {
  std::map<double, double> most_tokens;
  for (const Cell& cell : cells) most_tokens[cell.params] = std::max(most_tokens[cell.params], cell.tokens);
  std::vector<Cell> kept;
  for (const Cell& cell : cells) {
    if (cell.tokens == most_tokens[cell.params]) kept.push_back(cell);
  }
  return kept;
}

// Why L(N, D) cannot be fitted to `cells`, or "" when it can.
std::string tokens_law_obstacle(const std::vector<Cell>& cells) {
  const size_t n_values = distinct(cells, &Cell::params);
  const size_t d_values = distinct(cells, &Cell::tokens);
  if (cells.size() <= kPowerLawTokensParameters) {
    return std::to_string(cells.size()) + " cells, need at least " + std::to_string(kPowerLawTokensParameters + 1);
  }
  if (n_values < 3) return std::to_string(n_values) + " distinct N, need at least 3";
  if (d_values < 3) return std::to_string(d_values) + " distinct D, need at least 3";
  std::map<double, std::set<double>> tokens_of_params;
  for (const Cell& cell : cells) tokens_of_params[cell.params].insert(cell.tokens);
  const bool some_n_has_several_d = std::any_of(tokens_of_params.begin(), tokens_of_params.end(),
                                                [](const auto& entry) { return entry.second.size() > 1; });
  if (!some_n_has_several_d) {
    return "every N was trained for one token count (D follows N), so D's effect cannot be told from N's";
  }
  return "";
}

MethodFit fit_method(const std::string& method, std::vector<Cell> cells, const std::string& file) {
  MethodFit result;
  result.method = method;
  result.cells = std::move(cells);
  result.power_law_cells = largest_tokens_per_params(result.cells);
  result.power_law_dropped_cells = result.power_law_cells.size() < result.cells.size();
  const std::vector<Cell>& points = result.power_law_cells;
  const std::string which = result.power_law_dropped_cells ? " (with the most tokens at each N)" : "";
  if (points.size() <= kPowerLawParameters) {
    throw Error("fit: method '" + method + "' has " + std::to_string(points.size()) + " cells" + which + " in " +
                file + ", need at least " + std::to_string(kPowerLawParameters + 1) +
                " to fit L(N) = E + A*N^-alpha (more than its " + std::to_string(kPowerLawParameters) +
                " parameters)");
  }
  if (const size_t n_values = distinct(points, &Cell::params); n_values < 3) {
    throw Error("fit: method '" + method + "' has " + std::to_string(n_values) + " distinct non_embedding_params in " +
                file + ", need at least 3 to fit L(N) = E + A*N^-alpha");
  }
  result.power_law = fit_power_law(column(points, &Cell::params), column(points, &Cell::loss));
  result.tokens_law_skipped = tokens_law_obstacle(result.cells);
  if (result.tokens_law_skipped.empty()) {
    result.tokens_law = fit_power_law_tokens(column(result.cells, &Cell::params), column(result.cells, &Cell::tokens),
                                             column(result.cells, &Cell::loss));
  }
  return result;
}

std::string format(const char* pattern, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, value);
  return buffer;
}

void append_fit_text(std::string& out, const Fit& fit, const std::vector<Cell>& cells, bool residual_table) {
  out += "  " + fit.model + ": ";
  if (!fit.converged) {
    out += "FAILED: " + fit.failure + "\n";
    return;
  }
  out += std::to_string(fit.points) + " points, " + std::to_string(fit.degrees_of_freedom) +
         " degrees of freedom, converged in " + std::to_string(fit.evaluations) + " evaluations\n";
  char line[160];
  std::snprintf(line, sizeof(line), "    %-6s %12s %12s   %s\n", "", "value", "std error", "95% interval");
  out += line;
  for (const Estimate& e : fit.estimates) {
    std::snprintf(line, sizeof(line), "    %-6s %12.6g %12.4g   [%.6g, %.6g]\n", e.name.c_str(), e.value, e.std_error,
                  e.low, e.high);
    out += line;
  }
  out += "    R² " + format("%.5f", fit.r_squared) + ", residual std " + format("%.4g", fit.residual_std) +
         ", largest |residual| " + format("%.4g", fit.max_abs_residual) + "\n";
  if (!residual_table) return;
  std::snprintf(line, sizeof(line), "    %6s %12s %12s %10s %10s %10s\n", "line", "N", "D", "loss", "fitted", "residual");
  out += line;
  for (size_t i = 0; i < cells.size(); ++i) {
    std::snprintf(line, sizeof(line), "    %6zu %12.4g %12.4g %10.5f %10.5f %+10.5f\n", cells[i].line, cells[i].params,
                  cells[i].tokens, cells[i].loss, fit.fitted[i], cells[i].loss - fit.fitted[i]);
    out += line;
  }
}

json fit_json(const Fit& fit, const std::vector<Cell>& cells) {
  json out = {{"model", fit.model}, {"converged", fit.converged}, {"points", fit.points},
              {"degrees_of_freedom", fit.degrees_of_freedom}};
  if (!fit.converged) {
    out["failure"] = fit.failure;
    return out;
  }
  json parameters = json::object();
  for (const Estimate& e : fit.estimates) {
    parameters[e.name] = {{"value", e.value}, {"std_error", e.std_error}, {"low", e.low}, {"high", e.high}};
  }
  out["parameters"] = parameters;
  out["r_squared"] = fit.r_squared;  // NaN is written as null
  out["residual_std"] = fit.residual_std;
  out["max_abs_residual"] = fit.max_abs_residual;
  out["evaluations"] = fit.evaluations;
  json residuals = json::array();
  for (size_t i = 0; i < cells.size(); ++i) {
    residuals.push_back({{"line", cells[i].line}, {"non_embedding_params", cells[i].params},
                         {"tokens", cells[i].tokens}, {"final_val_loss", cells[i].loss}, {"fitted", fit.fitted[i]},
                         {"residual", cells[i].loss - fit.fitted[i]}});
  }
  out["residuals"] = residuals;
  return out;
}

std::string alpha_interval_text(const MethodFit& method) {
  const Estimate& alpha = method.power_law.estimate("alpha");
  return method.method + " " + format("%.4g", alpha.value) + " [" + format("%.4g", alpha.low) + ", " +
         format("%.4g", alpha.high) + "]";
}

}  // namespace

Report fit_cells(const CellFile& input) {
  Report report;
  report.input = input;
  std::vector<std::string> order;
  std::map<std::string, std::vector<Cell>> by_method;
  for (const Cell& cell : input.cells) {
    if (by_method.count(cell.method) == 0) order.push_back(cell.method);
    by_method[cell.method].push_back(cell);
  }
  for (const std::string& method : order) {
    report.methods.push_back(fit_method(method, by_method[method], input.path.string()));
    const MethodFit& fitted = report.methods.back();
    if (!fitted.power_law.converged) report.failures.push_back(method + " " + fitted.power_law.model + ": " + fitted.power_law.failure);
    if (fitted.tokens_law && !fitted.tokens_law->converged) {
      report.failures.push_back(method + " " + fitted.tokens_law->model + ": " + fitted.tokens_law->failure);
    }
  }
  for (size_t i = 0; i < report.methods.size(); ++i) {
    for (size_t j = i + 1; j < report.methods.size(); ++j) {
      const Fit& a = report.methods[i].power_law;
      const Fit& b = report.methods[j].power_law;
      if (!a.converged || !b.converged) continue;
      const Estimate& alpha_a = a.estimate("alpha");
      const Estimate& alpha_b = b.estimate("alpha");
      report.alpha_pairs.push_back({report.methods[i].method, report.methods[j].method,
                                    alpha_a.low <= alpha_b.high && alpha_b.low <= alpha_a.high});
    }
  }
  return report;
}

std::string format_report(const Report& report) {
  std::string out = "strait fit: " + report.input.path.string() + ": " + std::to_string(report.input.cells.size()) +
                    " cells, " + std::to_string(report.methods.size()) + " method(s); intervals are 95%\n";
  for (const MethodFit& method : report.methods) {
    const auto [n_min, n_max] = std::minmax_element(method.cells.begin(), method.cells.end(),
                                                    [](const Cell& a, const Cell& b) { return a.params < b.params; });
    const auto [d_min, d_max] = std::minmax_element(method.cells.begin(), method.cells.end(),
                                                    [](const Cell& a, const Cell& b) { return a.tokens < b.tokens; });
    out += "\n" + method.method + ": " + std::to_string(method.cells.size()) + " cells, N " +
           format("%.4g", n_min->params) + " to " + format("%.4g", n_max->params) + ", D " +
           format("%.4g", d_min->tokens) + " to " + format("%.4g", d_max->tokens) + "\n";
    if (method.power_law_dropped_cells) {
      out += "  (L(N) uses the " + std::to_string(method.power_law_cells.size()) +
             " cells with the most tokens at each N; L(N,D) uses all)\n";
    }
    append_fit_text(out, method.power_law, method.power_law_cells, true);
    if (method.tokens_law) {
      append_fit_text(out, *method.tokens_law, method.cells, false);
    } else {
      out += "  L(N,D) not fitted: " + method.tokens_law_skipped + "\n";
    }
  }
  std::string intervals;
  for (const MethodFit& method : report.methods) {
    if (method.power_law.converged) intervals += (intervals.empty() ? "" : "; ") + alpha_interval_text(method);
  }
  out += "\nalpha of L(N): " + (intervals.empty() ? std::string("no L(N) converged") : intervals) + "\n";
  for (const std::string& line : alpha_conclusions(report)) out += "  " + line + "\n";
  return out;
}

std::vector<std::string> alpha_conclusions(const Report& report) {
  if (report.alpha_pairs.empty()) return {"fewer than two methods with a converged L(N): nothing to compare"};
  std::vector<std::string> apart;
  for (const AlphaOverlap& pair : report.alpha_pairs) {
    if (!pair.overlap) {
      apart.push_back(pair.first + " and " + pair.second +
                      ": the intervals do not overlap: the methods scale differently in non-embedding parameters");
    }
  }
  if (apart.empty()) return {"every pair of intervals overlaps: consistent with comparable scaling in non-embedding parameters"};
  return apart;
}

json report_json(const Report& report) {
  json methods = json::array();
  for (const MethodFit& method : report.methods) {
    json entry = {{"method", method.method}, {"cells", method.cells.size()},
                  {"fit_n", fit_json(method.power_law, method.power_law_cells)},
                  {"fit_n_cells", method.power_law_cells.size()}};
    entry["fit_nd"] = method.tokens_law ? fit_json(*method.tokens_law, method.cells) : json(nullptr);
    if (!method.tokens_law) entry["fit_nd_skipped"] = method.tokens_law_skipped;
    methods.push_back(entry);
  }
  json pairs = json::array();
  bool all_overlap = true;
  for (const AlphaOverlap& pair : report.alpha_pairs) {
    pairs.push_back({{"methods", {pair.first, pair.second}}, {"overlap", pair.overlap}});
    all_overlap = all_overlap && pair.overlap;
  }
  return {{"input", report.input.path.string()},
          {"cells", report.input.cells.size()},
          {"interval", 0.95},
          {"methods", methods},
          {"alpha", {{"overlap", report.alpha_pairs.empty() ? json(nullptr) : json(all_overlap)}, {"pairs", pairs}}},
          {"failures", report.failures}};
}

}  // namespace strait::fit
