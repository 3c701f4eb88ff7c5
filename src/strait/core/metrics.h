// Training metrics as JSON lines (one object per line, e.g. {"step": 10, "loss": 3.2}): easy
// to append to during a run, to tail, and to load with pandas or jq afterwards.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

namespace strait {

// Appends one JSON object per line to a file. Each line goes to the kernel in a single write(),
// so a crash of the process loses at most the line being written.
class MetricsWriter {
 public:
  // Opens `path` for append, creating it if needed. A torn last line left by a crash (one
  // without its newline) is dropped first. If keep_through_step >= 0, the existing file is first
  // rewritten (atomically) keeping only the lines whose "step" <= keep_through_step: a run that
  // resumes from a checkpoint regenerates the later lines. Lines without a "step" cannot be
  // placed before or after the checkpoint, so they are dropped too. Throws strait::Error naming
  // the file (and line) if it cannot be opened or a line to filter is malformed.
  explicit MetricsWriter(const std::filesystem::path& path, int64_t keep_through_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Throws strait::Error if `line` is not a JSON object or cannot be written.
  void write(const nlohmann::json& line);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Reads a metrics.jsonl file, skipping empty lines. Throws strait::Error naming the file and the
// line number of a line that is not a JSON object.
std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path);

}  // namespace strait
