#include "strait/core/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string_view>
#include <unistd.h>

#include "strait/core/error.h"
#include "strait/core/fileio.h"

namespace strait {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json parse_line(const fs::path& path, size_t line_number, std::string_view text) {
  const std::string where = path.string() + " line " + std::to_string(line_number);
  json line;
  try {
    line = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& error) {
    throw Error(where + ": malformed JSON: " + error.what());
  }
  if (!line.is_object()) throw Error(where + ": is a JSON " + std::string(line.type_name()) + ", expected an object");
  return line;
}

// Calls visit(line_number, text) for each non-empty line of `contents`, numbered from 1.
template <typename Visit>
void for_each_line(std::string_view contents, Visit visit) {
  size_t line_number = 1;
  while (!contents.empty()) {
    size_t end = std::min(contents.find('\n'), contents.size());
    if (end > 0) visit(line_number, contents.substr(0, end));
    contents.remove_prefix(std::min(end + 1, contents.size()));
    ++line_number;
  }
}

// Everything up to and including the last newline: a crash can leave a partial line after it.
std::string_view complete_lines(const std::string& contents) {
  size_t last_newline = contents.rfind('\n');
  return std::string_view(contents).substr(0, last_newline == std::string::npos ? 0 : last_newline + 1);
}

bool keep_line(const fs::path& path, size_t line_number, std::string_view text, int64_t keep_through_step) {
  json line = parse_line(path, line_number, text);
  auto step = line.find("step");
  if (step == line.end()) return false;
  if (!step->is_number_integer()) {
    throw Error(path.string() + " line " + std::to_string(line_number) + ": \"step\" is " + step->dump() +
                ", expected an integer");
  }
  return step->is_number_unsigned() ? step->get<uint64_t>() <= static_cast<uint64_t>(keep_through_step)
                                    : step->get<int64_t>() <= keep_through_step;
}

// Drops a torn last line and, if keep_through_step >= 0, the lines past that step, rewriting
// the file atomically only when something changes.
void prepare_existing_file(const fs::path& path, int64_t keep_through_step) {
  if (!fs::exists(path)) return;
  const std::string contents = read_whole_file(path);
  std::string kept;
  if (keep_through_step < 0) {
    kept = complete_lines(contents);
  } else {
    for_each_line(complete_lines(contents), [&](size_t line_number, std::string_view text) {
      if (keep_line(path, line_number, text, keep_through_step)) kept.append(text).push_back('\n');
    });
  }
  if (kept != contents) atomic_write_file(path, kept);
}

}  // namespace

MetricsWriter::MetricsWriter(const fs::path& path, int64_t keep_through_step) : path_(path) {
  prepare_existing_file(path, keep_through_step);
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open metrics file " + path.string() + ": " + std::strerror(errno));
}

MetricsWriter::~MetricsWriter() { ::close(fd_); }

void MetricsWriter::write(const json& line) {
  if (!line.is_object()) {
    throw Error("metrics line for " + path_.string() + " is a JSON " + line.type_name() + ", expected an object");
  }
  // Replacing invalid UTF-8 beats losing a metrics line over, say, a mangled file name in it.
  std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  // One write() per line: O_APPEND makes it land whole at the end of the file.
  const char* bytes = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t written = ::write(fd_, bytes, left);
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) throw Error("cannot write metrics file " + path_.string() + ": " + std::strerror(errno));
    bytes += written;
    left -= static_cast<size_t>(written);
  }
}

std::vector<json> read_metrics(const fs::path& path) {
  const std::string contents = read_whole_file(path);
  std::vector<json> lines;
  for_each_line(contents, [&](size_t line_number, std::string_view text) {
    lines.push_back(parse_line(path, line_number, text));
  });
  return lines;
}

}  // namespace strait
