#include "strait/report/scaling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "strait/report/svg.h"

namespace strait::report {

namespace {

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), pattern, value);
  return text;
}

// How the page shows a constant (4 significant digits), and the exact value it sorts and
// checks by (round-trips to the same double).
std::string shown(double value) { return format("%.4g", value); }
std::string exact(double value) { return format("%.17g", value); }

double power_law(const fit::Fit& fit, double n) {
  return fit.estimate("E").value + fit.estimate("A").value * std::pow(n, -fit.estimate("alpha").value);
}

std::string chart(const SweepFits& sweep) {
  std::vector<Series> series;
  for (size_t i = 0; i < sweep.fits.methods.size(); ++i) {
    const fit::MethodFit& method = sweep.fits.methods[i];
    Series cells{method.method + ": cells", {}};
    for (const fit::Cell& cell : method.power_law_cells) cells.points.emplace_back(cell.params, cell.loss);
    cells.color = static_cast<int>(i);
    cells.line = false;
    series.push_back(cells);
    if (!method.power_law.converged) continue;
    Series curve{method.method + ": fit, α = " + shown(method.power_law.estimate("alpha").value),
                 fitted_curve(method, 48)};
    curve.color = static_cast<int>(i);
    curve.markers = false;
    series.push_back(curve);
  }
  return line_chart("Final validation loss against non-embedding parameters",
                    {"non-embedding parameters N (log scale)", true, Axis::Unit::Count, true},
                    {"final validation loss", false, Axis::Unit::Plain}, series);
}

// One constant's cells: its value, then its interval.
std::string constant_cells(const fit::Estimate& e) {
  return "<td data-value=\"" + exact(e.value) + "\">" + shown(e.value) + "</td><td data-low=\"" + exact(e.low) +
         "\" data-high=\"" + exact(e.high) + "\">[" + shown(e.low) + ", " + shown(e.high) + "]</td>";
}

std::string table(const SweepFits& sweep) {
  std::string out =
      "<div class=\"table\"><table class=\"fits\">\n<thead><tr><th class=\"text\">method</th><th>cells</th><th>E</th>"
      "<th>E 95%</th><th>A</th><th>A 95%</th><th>α</th><th>α 95%</th><th>R²</th><th>residual std</th></tr></thead>\n"
      "<tbody>\n";
  for (const fit::MethodFit& method : sweep.fits.methods) {
    const fit::Fit& fit = method.power_law;
    out += "<tr><td class=\"text\">" + escape(method.method) + "</td><td>" + std::to_string(method.power_law_cells.size()) +
           "</td>";
    if (!fit.converged) {
      out += "<td class=\"text\" colspan=\"8\">did not converge: " + escape(fit.failure) + "</td></tr>\n";
      continue;
    }
    for (const char* name : {"E", "A", "alpha"}) out += constant_cells(fit.estimate(name));
    out += "<td data-value=\"" + exact(fit.r_squared) + "\">" + format("%.4f", fit.r_squared) + "</td><td data-value=\"" +
           exact(fit.residual_std) + "\">" + shown(fit.residual_std) + "</td></tr>\n";
  }
  return out + "</tbody>\n</table></div>\n";
}

}  // namespace

SweepFits load_sweep(const std::filesystem::path& dir) { return {dir, fit::fit_cells(fit::read_cells(dir))}; }

std::vector<std::pair<double, double>> fitted_curve(const fit::MethodFit& method, int count) {
  std::vector<std::pair<double, double>> points;
  if (!method.power_law.converged || method.power_law_cells.empty() || count < 2) return points;
  const auto [low, high] = std::minmax_element(method.power_law_cells.begin(), method.power_law_cells.end(),
                                               [](const fit::Cell& a, const fit::Cell& b) { return a.params < b.params; });
  for (int i = 0; i < count; ++i) {
    const double n = low->params * std::pow(high->params / low->params, i / static_cast<double>(count - 1));
    points.emplace_back(n, power_law(method.power_law, n));
  }
  return points;
}

std::string sweep_html(const SweepFits& sweep) {
  const fit::Report& fits = sweep.fits;
  std::string note = std::to_string(fits.input.cells.size()) + " cells of " + fits.input.path.string() + ", " +
                     std::to_string(fits.methods.size()) +
                     " method(s). Per method, L(N) = E + A·N^-α fitted to its cells' final validation loss by least "
                     "squares, N being non-embedding parameters (strait fit prints the same, with every residual); "
                     "intervals are 95%.";
  for (const fit::MethodFit& method : fits.methods) {
    if (method.power_law_dropped_cells) {
      note += " " + method.method + ": where one N was trained for several token counts, only the cells with the "
                                    "most tokens are shown and fitted.";
    }
  }
  std::string out = "<h2>Scaling laws: " + escape(sweep.dir.string()) + "</h2>\n<p class=\"note\">" + escape(note) +
                    "</p>\n" + chart(sweep) + table(sweep) + "<p class=\"note alpha\">α intervals: ";
  std::string conclusions;
  for (const std::string& line : fit::alpha_conclusions(fits)) conclusions += (conclusions.empty() ? "" : "; ") + line;
  return out + escape(conclusions) + ".</p>\n";
}

std::string sweep_table(const SweepFits& sweep) {
  const fit::Report& fits = sweep.fits;
  std::string out = "sweep " + fits.input.path.string() + ": " + std::to_string(fits.input.cells.size()) +
                    " cells; L(N) = E + A*N^-alpha with 95% intervals\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%-20s %5s  %-28s %-30s %s\n", "method", "cells", "E", "A", "alpha");
  out += line;
  for (const fit::MethodFit& method : fits.methods) {
    const fit::Fit& fit = method.power_law;
    if (!fit.converged) {
      std::snprintf(line, sizeof(line), "%-20s %5zu  did not converge: ", method.method.c_str(), method.power_law_cells.size());
      out += line + fit.failure + "\n";
      continue;
    }
    std::string constants[3];
    int i = 0;
    for (const char* name : {"E", "A", "alpha"}) {
      const fit::Estimate& e = fit.estimate(name);
      constants[i++] = shown(e.value) + " [" + shown(e.low) + ", " + shown(e.high) + "]";
    }
    std::snprintf(line, sizeof(line), "%-20s %5zu  %-28s %-30s %s\n", method.method.c_str(), method.power_law_cells.size(),
                  constants[0].c_str(), constants[1].c_str(), constants[2].c_str());
    out += line;
  }
  for (const std::string& conclusion : fit::alpha_conclusions(fits)) out += "alpha: " + conclusion + "\n";
  return out;
}

}  // namespace strait::report
