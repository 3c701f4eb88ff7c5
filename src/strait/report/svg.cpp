#include "strait/report/svg.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>

namespace strait::report {

namespace {

// Okabe and Ito's colour-blind-safe palette (yellow left out: unreadable on white).
const char* const kColors[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"};
constexpr int kColorCount = sizeof(kColors) / sizeof(kColors[0]);
// Series beyond the palette repeat its colours with a dash pattern.
const char* const kDashes[] = {"", "6 3", "2 3", "8 3 2 3"};
constexpr int kDashCount = sizeof(kDashes) / sizeof(kDashes[0]);

// A series' colour and dash pattern: its own choice, else by its position (colours first; the
// fourth pattern only by choice, so that charts without choices look as they always did).
std::string color_of(const Series& series, size_t i) {
  return kColors[series.color >= 0 ? series.color % kColorCount : static_cast<int>(i % kColorCount)];
}
std::string dash_of(const Series& series, size_t i) {
  return kDashes[series.dash >= 0 ? series.dash % kDashCount : static_cast<int>((i / kColorCount) % 3)];
}

constexpr double kPlotWidth = 460, kHeight = 400;
constexpr double kLeft = 80, kTop = 40, kBottom = 60;  // margins around the plot

// Text runs about 6.6 px a character at the charts' 12 px.
double text_width(const std::vector<std::string>& texts) {
  size_t longest = 0;
  for (const std::string& text : texts) longest = std::max(longest, text.size());
  return 6.6 * static_cast<double>(longest);
}

// The horizontal layout of a chart: the plot between a left margin (axis labels, or a bar
// chart's row names) and a right one as wide as the legend needs.
struct Frame {
  double left, right, width;
  Frame(double left_margin, const std::vector<std::string>& legend)
      : left(left_margin), right(left_margin + kPlotWidth), width(right + std::clamp(40 + text_width(legend), 120.0, 360.0)) {}
};

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", value);
  return text;
}

// Where data values land on one axis of the plot area.
class Scale {
 public:
  Scale(const Axis& axis, double low, double high, double from, double to) : axis_(axis), from_(from), to_(to) {
    if (axis.log && axis.log_125) {
      low_ = std::log10(step_125_below(low));
      high_ = std::max(std::log10(step_125_above(high)), low_ + std::log10(2.0));
    } else if (axis.log) {
      low_ = std::floor(std::log10(low));
      high_ = std::max(std::ceil(std::log10(high)), low_ + 1);
    } else {
      step_ = round_step((high - low) / 5);
      low_ = std::floor(low / step_) * step_;
      high_ = std::max(std::ceil(high / step_) * step_, low_ + step_);
    }
  }
  double operator()(double value) const {
    const double t = axis_.log ? std::log10(value) : value;
    return from_ + (t - low_) / (high_ - low_) * (to_ - from_);
  }
  std::vector<double> ticks() const {
    std::vector<double> values;
    if (axis_.log && axis_.log_125) {
      for (double e = std::floor(low_); e <= high_ + 1e-9; ++e) {
        for (double m : {1.0, 2.0, 5.0}) {
          const double t = e + std::log10(m);
          if (t >= low_ - 1e-9 && t <= high_ + 1e-9) values.push_back(m * std::pow(10.0, e));
        }
      }
    } else if (axis_.log) {
      for (double e = low_; e <= high_ + 1e-9; ++e) values.push_back(std::pow(10.0, e));
    } else {
      for (double v = low_; v <= high_ + step_ * 1e-6; v += step_) values.push_back(std::abs(v) < step_ * 1e-9 ? 0 : v);
    }
    return values;
  }

 private:
  // 1, 2 or 5 times a power of ten, at least `raw`.
  static double round_step(double raw) {
    if (!(raw > 0)) return 1;
    const double power = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
      if (m * power >= raw) return m * power;
    }
    return 10 * power;
  }
  // The largest 1, 2 or 5 times a power of ten at most `value`, and the smallest at least it.
  static double step_125_below(double value) {
    const double power = std::pow(10.0, std::floor(std::log10(value)));
    double below = power;
    for (double m : {2.0, 5.0}) {
      if (m * power <= value * (1 + 1e-12)) below = m * power;
    }
    return below;
  }
  static double step_125_above(double value) {
    const double power = std::pow(10.0, std::floor(std::log10(value)));
    for (double m : {1.0, 2.0, 5.0}) {
      if (m * power >= value * (1 - 1e-12)) return m * power;
    }
    return 10 * power;
  }
  Axis axis_;
  double from_, to_;
  double low_ = 0, high_ = 1, step_ = 1;
};

bool usable(const Axis& axis, double value) { return std::isfinite(value) && (!axis.log || value > 0); }

// The range of the usable values; [0, 1] (or [1, 10] on a log axis) when there are none.
std::pair<double, double> range_of(const Axis& axis, const std::vector<double>& values, bool from_zero) {
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (double v : values) {
    if (usable(axis, v)) low = std::min(low, v), high = std::max(high, v);
  }
  if (!(low <= high)) return axis.log ? std::make_pair(1.0, 10.0) : std::make_pair(0.0, 1.0);
  if (from_zero && !axis.log) low = std::min(low, 0.0);
  if (low == high) {
    if (axis.log) return {low / 2, high * 2};
    const double pad = low == 0 ? 1 : std::abs(low) * 0.05;
    return {low - pad, high + pad};
  }
  return {low, high};
}

std::string svg_open(const std::string& title, const Frame& frame, double height) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 " + number(frame.width) + " " +
         number(height) + "\" width=\"" + number(frame.width) + "\" height=\"" + number(height) +
         "\" role=\"img\">\n<title>" + escape(title) + "</title>\n<text x=\"" + number((frame.left + frame.right) / 2) +
         "\" y=\"22\" text-anchor=\"middle\" class=\"title\">" + escape(title) + "</text>\n";
}

std::string text(double x, double y, const std::string& content, const std::string& anchor, const std::string& extra = "") {
  return "<text x=\"" + number(x) + "\" y=\"" + number(y) + "\" text-anchor=\"" + anchor + "\"" + extra + ">" +
         escape(content) + "</text>\n";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& css_class) {
  return "<line x1=\"" + number(x1) + "\" y1=\"" + number(y1) + "\" x2=\"" + number(x2) + "\" y2=\"" + number(y2) +
         "\" class=\"" + css_class + "\"/>\n";
}

// Gridlines and tick labels of a horizontal value axis along the bottom of the plot.
std::string x_axis(const Scale& scale, const Axis& axis, const Frame& frame, double bottom) {
  std::string out;
  for (double tick : scale.ticks()) {
    const double x = scale(tick);
    out += line(x, kTop, x, bottom, "grid");
    out += text(x, bottom + 16, format_value(tick, axis.unit), "middle");
  }
  out += text((frame.left + frame.right) / 2, bottom + 40, axis.label, "middle", " class=\"label\"");
  return out;
}

// `series`: a line chart's (their lines or markers), else one square per name (bars).
std::string legend(const std::vector<std::string>& names, const Frame& frame, const std::vector<Series>* series) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    const double y = kTop + 8 + 18 * static_cast<double>(i);
    const double x = frame.right + 16;
    const std::string color = series ? color_of((*series)[i], i) : kColors[i % kColorCount];
    if (series && !(*series)[i].line) {
      out += "<circle cx=\"" + number(x + 10) + "\" cy=\"" + number(y) + "\" r=\"4.5\" fill=\"#fff\" stroke=\"" + color +
             "\" stroke-width=\"2\"/>\n";
    } else if (series) {
      out += "<line x1=\"" + number(x) + "\" y1=\"" + number(y) + "\" x2=\"" + number(x + 20) + "\" y2=\"" + number(y) +
             "\" stroke=\"" + color + "\" stroke-width=\"2\" stroke-dasharray=\"" + dash_of((*series)[i], i) + "\"/>\n";
    } else {
      out += "<rect x=\"" + number(x + 4) + "\" y=\"" + number(y - 6) + "\" width=\"12\" height=\"12\" fill=\"" + color +
             "\"/>\n";
    }
    out += text(x + 26, y + 4, names[i], "start");
  }
  return out;
}

}  // namespace

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_value(double value, Axis::Unit unit) {
  // 3 significant digits of the value in thousands' steps, then the step's unit.
  const auto with_prefix = [value](const std::array<const char*, 5>& units, const char* separator) {
    int i = 0;
    double scaled = value;
    while (std::abs(scaled) >= 1000 && i < 4) scaled /= 1000, ++i;
    char text[32];
    std::snprintf(text, sizeof(text), "%.3g%s%s", scaled, separator, units[i]);
    return std::string(text);
  };
  switch (unit) {
    case Axis::Unit::Bytes: return with_prefix({"B", "kB", "MB", "GB", "TB"}, " ");
    case Axis::Unit::BitRate: return with_prefix({"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"}, " ");
    case Axis::Unit::Count: return with_prefix({"", "k", "M", "G", "T"}, "");
    case Axis::Unit::Plain: break;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.4g", value);
  return text;
}

std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

std::string line_chart(const std::string& title, const Axis& x, const Axis& y, const std::vector<Series>& series) {
  std::vector<double> xs, ys;
  std::vector<std::string> names;
  for (const Series& s : series) {
    names.push_back(s.name);
    for (const auto& [px, py] : s.points) {
      if (usable(x, px) && usable(y, py)) xs.push_back(px), ys.push_back(py);
    }
  }
  const Frame frame(kLeft, names);
  const auto [x_low, x_high] = range_of(x, xs, true);
  const auto [y_low, y_high] = range_of(y, ys, false);
  const double bottom = kHeight - kBottom;
  const Scale sx(x, x_low, x_high, frame.left, frame.right), sy(y, y_low, y_high, bottom, kTop);

  std::string out = svg_open(title, frame, kHeight);
  out += x_axis(sx, x, frame, bottom);
  for (double tick : sy.ticks()) {
    out += line(frame.left, sy(tick), frame.right, sy(tick), "grid");
    out += text(frame.left - 6, sy(tick) + 4, format_value(tick, y.unit), "end");
  }
  out += text(18, (kTop + bottom) / 2, y.label, "middle",
              " class=\"label\" transform=\"rotate(-90 18 " + number((kTop + bottom) / 2) + ")\"");
  out += "<rect x=\"" + number(frame.left) + "\" y=\"" + number(kTop) + "\" width=\"" + number(kPlotWidth) +
         "\" height=\"" + number(bottom - kTop) + "\" class=\"frame\"/>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const std::string color = color_of(series[i], i);
    // Hollow markers for a series without a line, so that they stand out from the lines' dots.
    const std::string marker = series[i].line ? "r=\"2.5\" fill=\"" + color + "\""
                                              : "r=\"4.5\" fill=\"#fff\" stroke=\"" + color + "\" stroke-width=\"2\"";
    std::string points, values, markers;
    for (const auto& [px, py] : series[i].points) {
      if (!usable(x, px) || !usable(y, py)) continue;
      points += number(sx(px)) + "," + number(sy(py)) + " ";
      char value[64];
      std::snprintf(value, sizeof(value), "%.17g,%.17g", px, py);
      values += (values.empty() ? "" : " ") + std::string(value);
      markers += "<circle cx=\"" + number(sx(px)) + "\" cy=\"" + number(sy(py)) + "\" " + marker + "><title>" +
                 escape(series[i].name + ": " + format_value(py, y.unit) + " at " + format_value(px, x.unit)) +
                 "</title></circle>\n";
    }
    if (series[i].line) {
      out += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\" stroke-dasharray=\"" +
             dash_of(series[i], i) + "\" points=\"" + points + "\" data-points=\"" + values + "\"/>\n";
    }
    if (series[i].markers) out += markers;
  }
  out += legend(names, frame, &series);
  return out + "</svg>\n";
}

std::string bar_chart(const BarChart& chart) {
  const double row_height = 26;
  const double height = kTop + kBottom + row_height * static_cast<double>(std::max<size_t>(chart.rows.size(), 1));
  // Row labels sit in the left margin, as wide as the longest needs.
  const Frame frame(std::clamp(20 + text_width(chart.rows), kLeft, 360.0), chart.segments);
  const double bottom = height - kBottom;
  std::vector<double> extents;
  for (const auto& row : chart.values) {
    double total = 0;
    for (double v : row) {
      if (!usable(chart.axis, v)) continue;
      if (chart.stacked) total += v;
      else extents.push_back(v);
    }
    if (chart.stacked) extents.push_back(total);
  }
  const auto [low, high] = range_of(chart.axis, extents, true);
  const Scale scale(chart.axis, low, high, frame.left, frame.right);
  const double base = chart.axis.log ? scale(scale.ticks().front()) : scale(0);

  std::string out = svg_open(chart.title, frame, height);
  out += x_axis(scale, chart.axis, frame, bottom);
  for (size_t r = 0; r < chart.rows.size(); ++r) {
    const double top = kTop + row_height * static_cast<double>(r) + 4;
    out += text(frame.left - 6, top + row_height / 2 + 4, chart.rows[r], "end");
    double start = base, stacked_total = 0;
    const double thickness = chart.stacked ? row_height - 8 : (row_height - 8) / static_cast<double>(chart.segments.size());
    for (size_t s = 0; s < chart.segments.size() && s < chart.values[r].size(); ++s) {
      const double value = chart.values[r][s];
      if (!usable(chart.axis, value)) continue;
      stacked_total += value;
      const double end = chart.stacked ? scale(stacked_total) : scale(value);
      const double y = chart.stacked ? top : top + thickness * static_cast<double>(s);
      out += "<rect x=\"" + number(std::min(start, end)) + "\" y=\"" + number(y) + "\" width=\"" +
             number(std::abs(end - start)) + "\" height=\"" + number(thickness) + "\" fill=\"" + kColors[s % kColorCount] +
             "\"><title>" + escape(chart.rows[r] + ", " + chart.segments[s] + ": " + format_value(value, chart.axis.unit)) +
             "</title></rect>\n";
      if (chart.stacked) start = end;
    }
  }
  out += legend(chart.segments, frame, nullptr);
  return out + "</svg>\n";
}

}  // namespace strait::report
