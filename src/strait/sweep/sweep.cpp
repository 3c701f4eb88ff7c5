#include "strait/sweep/sweep.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/core/threads.h"
#include "strait/fit/cells.h"
#include "strait/launch/process.h"

namespace strait::sweep {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

fs::path cell_dir(const SweepOptions& options, const Cell& cell) { return options.out / "cells" / cell.name; }

// What `strait train --config` gets: the cell's options with its run directory. Threads and
// resume are flags, so the file stays the same however the sweep is run (--parallel).
json cell_config_json(const Cell& cell, const fs::path& dir) {
  TrainConfig config = cell.config;
  config.out = dir.string();
  return to_json(config);
}

// The options that decide a cell's result: what must not change between attempts.
json identity_of(const json& config) {
  json identity = config;
  for (const char* per_attempt : {"data", "out", "threads", "gloo_interface", "resume", "resume_from", "overwrite",
                                  "stop_after"}) {
    identity.erase(per_attempt);
  }
  return identity;
}

// The cells already recorded in DIR/cells.jsonl, by name.
std::map<std::string, json> read_finished(const fs::path& path) {
  std::map<std::string, json> finished;
  if (!fs::exists(path)) return finished;
  std::ifstream in(path);
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json record;
    try {
      record = json::parse(line);
    } catch (const json::parse_error&) {
      throw Error(path.string() + ":" + std::to_string(number) + ": not a JSON object (a line strait sweep wrote?)");
    }
    if (!record.is_object() || !record.contains("cell") || !record["cell"].is_string()) {
      throw Error(path.string() + ":" + std::to_string(number) + ": no \"cell\" name");
    }
    finished[record["cell"].get<std::string>()] = record;
  }
  return finished;
}

// One write of the whole line to a file opened for appending, then fsync: a line is in the file
// whole or not at all, even if the sweep is killed right after.
void append_line(const fs::path& path, const std::string& line) {
  const int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open " + path.string() + ": " + std::strerror(errno));
  const std::string text = line + "\n";
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  const int saved_errno = errno;
  close(fd);
  if (!written) throw Error("cannot append to " + path.string() + ": " + std::strerror(saved_errno));
}

// The step of the newest checkpoint in a run directory (checkpoints/step-N), 0 without one.
int64_t newest_checkpoint_step(const fs::path& run_dir) {
  int64_t newest = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(run_dir / "checkpoints", error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) != 0) continue;
    try {
      newest = std::max<int64_t>(newest, std::stoll(name.substr(5)));
    } catch (const std::exception&) {
    }
  }
  return newest;
}

// A TCP port on loopback that was free a moment ago, for a multi-rank cell's rendezvous; cells
// running side by side get different ones.
int free_port(const std::set<int>& taken) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Error(std::string("cannot open a socket to find a free port: ") + std::strerror(errno));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      port = ntohs(address.sin_port);
    }
    close(fd);
    if (port > 0 && taken.count(port) == 0) return port;
  }
  throw Error("cannot find a free TCP port on loopback for a cell's rendezvous");
}

std::string duration_text(double seconds) {
  const auto total = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  char text[32];
  if (total >= 3600) std::snprintf(text, sizeof(text), "%lldh%02lldm", total / 3600, total / 60 % 60);
  else std::snprintf(text, sizeof(text), "%lldm%02llds", total / 60, total % 60);
  return text;
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The last non-empty line of a cell's log, to show with its failure.
std::string last_line_of(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  return last;
}

// SIGINT and SIGTERM only set these while a sweep runs; the loop forwards them to the cells.
volatile sig_atomic_t g_signals_received = 0;
volatile sig_atomic_t g_last_signal = 0;

void on_stop_signal(int signal) {
  g_last_signal = signal;
  g_signals_received = g_signals_received + 1;
}

class StopSignalHandlers {
 public:
  StopSignalHandlers() {
    g_signals_received = 0;
    g_last_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous_int_);
    sigaction(SIGTERM, &action, &previous_term_);
  }
  ~StopSignalHandlers() {
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
  }
  StopSignalHandlers(const StopSignalHandlers&) = delete;
  StopSignalHandlers& operator=(const StopSignalHandlers&) = delete;

 private:
  struct sigaction previous_int_ {}, previous_term_ {};
};

struct Running {
  size_t index;  // into grid.cells
  Clock::time_point start;
  int port = 0;
};

class Sweep {
 public:
  Sweep(const Grid& grid, const SweepOptions& options) : grid_(grid), options_(options) {}
  int run();

 private:
  void say(size_t index, const std::string& what) const {
    if (!options_.progress) return;
    options_.progress("sweep: cell " + std::to_string(index + 1) + "/" + std::to_string(grid_.cells.size()) + " " +
                      grid_.cells[index].name + ": " + what);
  }
  void check_recorded_options() const;
  void start(size_t index);
  void finish(pid_t pid, int wait_status);
  void forward_signals();
  std::string eta() const;
  double cost(size_t index) const {  // training compute is proportional to N x D
    const Cell& cell = grid_.cells[index];
    return static_cast<double>(cell.non_embedding_params) * static_cast<double>(cell.steps * cell.tokens_per_step);
  }

  const Grid& grid_;
  const SweepOptions& options_;
  std::map<std::string, json> finished_;
  std::map<pid_t, Running> running_;
  std::vector<size_t> pending_;  // not yet started, in grid order
  std::vector<std::string> failures_;
  int forwarded_ = 0;           // signals forwarded to the running cells so far
  bool stopping_ = false;       // no new cells: a signal or --fail-fast
  bool stop_sent_ = false;      // the running cells were asked to stop: their 143 or 130 is no failure
  double done_seconds_ = 0, done_cost_ = 0;  // cells finished by this invocation
  size_t done_ = 0;
  Clock::time_point start_ = Clock::now();
};

void Sweep::check_recorded_options() const {
  for (const Cell& cell : grid_.cells) {
    const fs::path recorded = cell_dir(options_, cell) / "cell.json";
    if (!fs::exists(recorded)) continue;
    const json before = identity_of(json::parse(read_whole_file(recorded)));
    const json now = identity_of(cell_config_json(cell, cell_dir(options_, cell)));
    const std::string differences = describe_differences(before, "in " + recorded.string(), now, "in the grid");
    if (differences.empty()) continue;
    throw Error("cell " + cell.name + " was started with other options than " + grid_.source.string() +
                " gives it: " + differences + " (sweep into another --out, or remove " +
                cell_dir(options_, cell).string() + " and its line in cells.jsonl)");
  }
}

void Sweep::start(size_t index) {
  const Cell& cell = grid_.cells[index];
  const fs::path dir = cell_dir(options_, cell);
  fs::create_directories(dir);
  const fs::path config_file = dir / "cell.json";
  if (!fs::exists(config_file)) atomic_write_file(config_file, cell_config_json(cell, dir).dump(2) + "\n");
  const int per_cell = std::max(1, available_cores() / options_.parallel);
  const int64_t threads = cell.config.threads > 0 ? cell.config.threads : std::max(1, per_cell / cell.replicas);
  std::vector<std::string> train = {"train", "--config", config_file.string(), "--resume", "--threads",
                                    std::to_string(threads)};
  std::vector<std::string> argv = {options_.program};
  Running entry{index, Clock::now(), 0};
  if (cell.replicas > 1) {
    std::set<int> taken;
    for (const auto& [pid, other] : running_) taken.insert(other.port);
    entry.port = free_port(taken);
    argv.insert(argv.end(), {"launch", "--nproc-per-node", std::to_string(cell.replicas), "--master-port",
                             std::to_string(entry.port), "--"});
  }
  argv.insert(argv.end(), train.begin(), train.end());

  const fs::path log = dir / "train.log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (log_fd < 0) throw Error("cannot open " + log.string() + ": " + std::strerror(errno));
  std::string command;
  for (const auto& part : argv) command += (command.empty() ? "" : " ") + part;
  const std::string header = "strait sweep: " + command + "\n";
  [[maybe_unused]] ssize_t written = write(log_fd, header.data(), header.size());
  // SIGTERM when the sweep dies: the cell then writes a checkpoint that the next sweep resumes.
  const pid_t pid = launch::spawn_process(options_.program, argv, launch::environment_with({}), log_fd, log_fd, SIGTERM);
  close(log_fd);
  running_[pid] = entry;

  const int64_t from = newest_checkpoint_step(dir);
  std::string what = from > 0 ? "resuming from step " + std::to_string(from) + " of " : "started, ";
  what += std::to_string(cell.steps) + " steps, " + compact_number(static_cast<double>(cell.steps * cell.tokens_per_step)) +
          " tokens, N " + compact_number(static_cast<double>(cell.non_embedding_params)) + ", " +
          std::to_string(cell.replicas) + (cell.replicas > 1 ? " ranks" : " rank") + " x " + std::to_string(threads) +
          (threads > 1 ? " threads" : " thread") + "; log " + log.string();
  say(index, what);
}

std::string Sweep::eta() const {
  if (done_cost_ <= 0) return "ETA after the first cell";
  double remaining = 0;
  for (size_t index : pending_) remaining += cost(index);
  for (const auto& [pid, entry] : running_) remaining += cost(entry.index);
  const double seconds = remaining * done_seconds_ / done_cost_ / options_.parallel;
  return "ETA " + duration_text(seconds);
}

void Sweep::finish(pid_t pid, int wait_status) {
  const Running entry = running_.at(pid);
  running_.erase(pid);
  const Cell& cell = grid_.cells[entry.index];
  const double wall = seconds_since(entry.start);
  const fs::path dir = cell_dir(options_, cell), log = dir / "train.log";
  const int status = launch::exit_code(wait_status);
  std::string problem;
  json summary;
  if (status != 0) {
    problem = launch::describe_exit(wait_status);
  } else if (!fs::exists(dir / "summary.json")) {
    problem = "exited without a summary.json";
  } else {
    summary = json::parse(read_whole_file(dir / "summary.json"));
    const double loss = summary.value("final_val_loss", std::nan(""));
    if (summary.value("last_step", int64_t{0}) < cell.steps) problem = "stopped before its last step";
    else if (!std::isfinite(loss)) problem = "its final validation loss is not finite (diverged?)";
  }
  if (!problem.empty()) {
    if (stop_sent_ && (status == 128 + SIGTERM || status == 128 + SIGINT)) {
      say(entry.index, "stopped (" + problem + "); the next sweep resumes it");
      return;
    }
    failures_.push_back(cell.name + " (" + log.string() + ")");
    const std::string last = last_line_of(log);
    say(entry.index, "FAILED: " + problem + "; see " + log.string() + (last.empty() ? "" : ": " + last));
    if (options_.fail_fast && !stopping_) {
      stopping_ = stop_sent_ = true;
      for (const auto& [other, running] : running_) kill(-other, SIGTERM);
    }
    return;
  }
  append_line(options_.out / fit::kCellsFileName, cell_record(cell, summary, wall).dump());
  ++done_;
  done_seconds_ += wall;
  done_cost_ += cost(entry.index);
  char loss[32];
  std::snprintf(loss, sizeof(loss), "%.4f", summary.at("final_val_loss").get<double>());
  say(entry.index, "finished in " + duration_text(wall) + ", val loss " + loss + "; elapsed " +
                       duration_text(seconds_since(start_)) + ", " + eta());
}

// Each signal the sweep received goes once to every running cell's process group; the cells
// stop with a checkpoint (a second signal: at once), and no new cell starts.
void Sweep::forward_signals() {
  const int received = g_signals_received;
  if (received == forwarded_) return;
  const int signal = g_last_signal;
  if (forwarded_ == 0 && options_.progress) {
    options_.progress("sweep: " + launch::describe_signal(signal) + " received: forwarding it to " +
                      std::to_string(running_.size()) + " running cell(s), which stop with a checkpoint; "
                      "no new cells start (a second signal stops them at once)");
  }
  for (; forwarded_ < received; ++forwarded_) {
    for (const auto& [pid, entry] : running_) kill(-pid, signal);
  }
  stopping_ = stop_sent_ = true;
}

int Sweep::run() {
  fs::create_directories(options_.out / "cells");
  finished_ = read_finished(options_.out / fit::kCellsFileName);
  check_recorded_options();
  for (size_t index = 0; index < grid_.cells.size(); ++index) {
    const auto found = finished_.find(grid_.cells[index].name);
    if (found == finished_.end()) {
      pending_.push_back(index);
      continue;
    }
    const json& record = found->second;
    const auto loss = record.find("final_val_loss");
    say(index, "skipped (finished earlier" +
                   (loss != record.end() && loss->is_number() ? ", val loss " + loss->dump() : std::string()) + ")");
  }
  if (options_.progress) {
    options_.progress("sweep: " + std::to_string(grid_.cells.size()) + " cells from " + grid_.source.string() + " in " +
                      options_.out.string() + ": " + std::to_string(finished_.size()) + " finished earlier, " +
                      std::to_string(pending_.size()) + " to run, " + std::to_string(options_.parallel) +
                      " at a time on " + std::to_string(available_cores()) + " cores");
  }
  const StopSignalHandlers handlers;
  while (true) {
    forward_signals();
    while (!stopping_ && !pending_.empty() && running_.size() < static_cast<size_t>(options_.parallel)) {
      const size_t index = pending_.front();
      pending_.erase(pending_.begin());
      start(index);
    }
    if (running_.empty()) break;
    int wait_status = 0;
    const pid_t pid = waitpid(-1, &wait_status, WNOHANG);
    if (pid > 0 && running_.count(pid)) {
      finish(pid, wait_status);
    } else if (pid == 0 || (pid < 0 && errno == EINTR)) {
      // Polling keeps a signal that lands between the check above and a blocking wait from going
      // unnoticed until a cell ends; a sleep interrupted by the signal ends early.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (options_.progress) {
    std::string line = "sweep: " + std::to_string(grid_.cells.size()) + " cells: " + std::to_string(done_) +
                       " finished now, " + std::to_string(finished_.size()) + " earlier";
    if (!failures_.empty()) line += ", " + std::to_string(failures_.size()) + " failed";
    if (!pending_.empty()) line += ", " + std::to_string(pending_.size()) + " not run";
    line += "; elapsed " + duration_text(seconds_since(start_)) + "; results in " +
            (options_.out / fit::kCellsFileName).string();
    options_.progress(line);
  }
  if (forwarded_ > 0) return 128 + g_last_signal;
  if (!failures_.empty()) {
    std::string list;
    for (const auto& failure : failures_) list += (list.empty() ? "" : "; ") + failure;
    throw Error("sweep: " + std::to_string(failures_.size()) + " cell(s) failed: " + list);
  }
  return 0;
}

}  // namespace

json cell_record(const Cell& cell, const json& summary, double wall_s) {
  const int64_t steps = summary.value("last_step", cell.steps);
  const int64_t tokens_per_step = summary.value("tokens_per_step", cell.tokens_per_step);
  const TrainConfig& config = cell.config;
  json record = {
      {"cell", cell.name},
      {"method", cell.method},
      {"strategy", config.strategy == "auto" ? "single" : config.strategy},
      {"replicas", cell.replicas},
      {"model", cell.model},
      {"non_embedding_params", cell.non_embedding_params},
      {"parameters", summary.value("parameters", json())},
      {"tokens", steps * tokens_per_step},
      {"steps", steps},
      {"tokens_per_step", tokens_per_step},
      {"final_val_loss", summary.at("final_val_loss")},
      {"final_loss", summary.value("final_loss", json())},
      {"wall_s", wall_s},
      {"tokens_per_s", summary.value("tokens_per_s", json())},
      {"run_dir", summary.value("run_dir", json())},
  };
  if (cell.sync_every > 0) record["sync_every"] = cell.sync_every;
  const ModelConfig& model = cell.dimensions;
  record.update({{"hidden_size", model.hidden_size}, {"intermediate_size", model.intermediate_size},
                 {"num_layers", model.num_layers}, {"num_heads", model.num_heads},
                 {"context_length", model.context_length}, {"tie_embeddings", model.tie_embeddings},
                 {"batch_size", config.batch_size}, {"seq_len", config.seq_len > 0 ? config.seq_len : model.context_length},
                 {"grad_accum", config.grad_accum}, {"lr", config.lr}, {"seed", config.seed}});
  return record;
}

int run_sweep(const Grid& grid, const SweepOptions& options) {
  if (options.parallel < 1) throw Error("sweep: --parallel must be >= 1, got " + std::to_string(options.parallel));
  Sweep sweep(grid, options);
  return sweep.run();
}

}  // namespace strait::sweep
