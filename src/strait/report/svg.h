// Self-contained SVG charts for `strait report`: no scripts, no fonts or styles from outside,
// so the page renders offline. Every chart is an <svg> element with a <title> per mark that a
// browser shows on hover.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace strait::report {

struct Axis {
  std::string label;
  bool log = false;  // decades; values <= 0 are left out
  // How tick values print: plain numbers, bytes with SI prefixes (kB, MB, GB), or link rates in
  // bits per second (kbit/s, Mbit/s, Gbit/s), or counts with SI prefixes (100k, 2M).
  enum class Unit { Plain, Bytes, BitRate, Count } unit = Unit::Plain;
  // A log axis that ends at and is ticked at 1, 2 and 5 times powers of ten rather than whole
  // decades: for data that spans a decade or two (ignored on a linear axis).
  bool log_125 = false;
};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y)
  // The palette colour and dash pattern (indices, taken modulo their counts); -1: by the
  // series' position, as before.
  int color = -1, dash = -1;
  bool line = true;  // false: hollow markers only, no polyline (measured points next to lines)
  bool markers = true;  // false: the polyline alone (a fitted curve)
};

// One polyline with markers per series, a legend, gridlines and ticks at round values. Each
// polyline carries its points' values too, as data-points="x,y x,y" (%.17g), so that a test or
// a script can read them back exactly.
std::string line_chart(const std::string& title, const Axis& x, const Axis& y, const std::vector<Series>& series);

// One horizontal bar per row; `values[row][segment]`: stacked when `stacked`, side by side
// (one thin bar per segment) otherwise. NaN leaves a segment out.
struct BarChart {
  std::string title;
  Axis axis;
  std::vector<std::string> rows;
  std::vector<std::string> segments;
  std::vector<std::vector<double>> values;
  bool stacked = true;
};
std::string bar_chart(const BarChart& chart);

// Text for HTML and SVG: & < > " escaped.
std::string escape(const std::string& text);

// 1234567 -> "1.23 MB"; 0.5 -> "0.5".
std::string format_value(double value, Axis::Unit unit);

// A setting as a command line would have it (printf's %g): 0.5, 13.8, 1e-05.
std::string number_text(double value);

}  // namespace strait::report
