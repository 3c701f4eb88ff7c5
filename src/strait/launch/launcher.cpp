#include "strait/launch/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <optional>
#include <utility>

#include "strait/core/error.h"
#include "strait/core/threads.h"
#include "strait/launch/line_relay.h"
#include "strait/launch/process.h"

namespace strait::launch {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& problem) { throw Error("strait launch: " + problem); }

[[noreturn]] void fail_with_errno(const std::string& what) { fail(what + ": " + std::strerror(errno)); }

void report(const std::string& message) { write_all(STDERR_FILENO, "strait launch: " + message + "\n"); }

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  UniqueFd read_end, write_end;
};

// Close-on-exec, so that no rank inherits another rank's pipes or the launcher's signal pipe.
Pipe make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) fail_with_errno("cannot create a pipe");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void set_nonblocking(int fd) {
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) fail_with_errno("cannot make a pipe non-blocking");
}

// ---- Options and the ranks' environment ----

void validate_program(const std::string& program) {
  if (program.empty()) fail("no program to run was given");
  struct stat info {};
  if (stat(program.c_str(), &info) != 0) fail_with_errno("program " + program);
  if (!S_ISREG(info.st_mode)) fail("program " + program + " is not a regular file");
  if (access(program.c_str(), X_OK) != 0) fail("program " + program + " is not executable");
}

void validate(const LaunchOptions& options) {
  if (options.nproc_per_node < 1) {
    fail("nproc_per_node must be at least 1, got " + std::to_string(options.nproc_per_node));
  }
  if (options.nnodes < 1) fail("nnodes must be at least 1, got " + std::to_string(options.nnodes));
  if (options.node_rank < 0 || options.node_rank >= options.nnodes) {
    fail("node_rank " + std::to_string(options.node_rank) + " is out of range for " +
         std::to_string(options.nnodes) + " nodes (expected 0.." + std::to_string(options.nnodes - 1) + ")");
  }
  if (options.master_addr.empty()) fail("master_addr is empty");
  if (options.master_port < 1 || options.master_port > 65535) {
    fail("master_port " + std::to_string(options.master_port) + " is not a TCP port (expected 1..65535)");
  }
  if (options.grace.count() < 0) {
    fail("grace must not be negative, got " + std::to_string(options.grace.count()) + " ms");
  }
  validate_program(options.program);
}

int global_rank(const LaunchOptions& options, int local_rank) {
  return options.node_rank * options.nproc_per_node + local_rank;
}

using Variables = std::vector<std::pair<std::string, std::string>>;

Variables rank_variables(const LaunchOptions& options, int local_rank, int threads) {
  std::string node_rank = std::to_string(options.node_rank);
  return {{"RANK", std::to_string(global_rank(options, local_rank))},
          {"WORLD_SIZE", std::to_string(options.nnodes * options.nproc_per_node)},
          {"LOCAL_RANK", std::to_string(local_rank)},
          {"LOCAL_WORLD_SIZE", std::to_string(options.nproc_per_node)},
          {"GROUP_RANK", node_rank},
          {"STRAIT_NODE_RANK", node_rank},
          {"MASTER_ADDR", options.master_addr},
          {"MASTER_PORT", std::to_string(options.master_port)},
          {"OMP_NUM_THREADS", std::to_string(threads)},
          {"STRAIT_THREADS", std::to_string(threads)}};
}

// ---- Signals ----

// spawn_process blocks these around fork and resets them in the child.
constexpr std::array<int, 3> kHandledSignals{SIGINT, SIGTERM, SIGCHLD};

volatile sig_atomic_t g_signal_pipe = -1;  // write end of the running launch's SignalPipe

void on_signal(int signal) {
  int saved_errno = errno;
  unsigned char byte = static_cast<unsigned char>(signal);
  // A full pipe already guarantees that the launcher wakes up, so a failed write loses nothing.
  [[maybe_unused]] ssize_t written = write(g_signal_pipe, &byte, 1);
  errno = saved_errno;
}

// The self-pipe trick: the handlers only write the signal's number to a pipe that the launcher
// polls next to the ranks' output, so signals are handled in ordinary code, not in a handler.
class SignalPipe {
 public:
  SignalPipe() {
    if (g_signal_pipe >= 0) fail("another launch is already running in this process");
    Pipe pipe = make_pipe();
    set_nonblocking(pipe.read_end.get());
    set_nonblocking(pipe.write_end.get());
    read_end_ = std::move(pipe.read_end);
    write_end_ = std::move(pipe.write_end);
    g_signal_pipe = write_end_.get();
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    for (size_t i = 0; i < kHandledSignals.size(); ++i) sigaction(kHandledSignals[i], &action, &previous_[i]);
  }
  ~SignalPipe() {
    for (size_t i = 0; i < kHandledSignals.size(); ++i) sigaction(kHandledSignals[i], &previous_[i], nullptr);
    g_signal_pipe = -1;
  }
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;

  int fd() const { return read_end_.get(); }

  // The signals that arrived since the last call, oldest first.
  std::vector<int> take() {
    std::vector<int> signals;
    unsigned char byte = 0;
    while (read(read_end_.get(), &byte, 1) == 1) signals.push_back(byte);
    return signals;
  }

 private:
  UniqueFd read_end_, write_end_;
  std::array<struct sigaction, kHandledSignals.size()> previous_{};
};

struct RankOutput {
  UniqueFd fd;  // non-blocking read end of the rank's stdout or stderr pipe; closed at end of stream
  LineRelay relay;
};

struct Rank {
  int global_rank;
  pid_t pid;
  bool running;
  RankOutput out, err;
};

class Launch {
 public:
  explicit Launch(const LaunchOptions& options) : options_(options) {}
  ~Launch();
  Launch(const Launch&) = delete;
  Launch& operator=(const Launch&) = delete;

  int run();

 private:
  void spawn_ranks();
  bool any_running() const;
  void wait_for_events();
  int poll_timeout_ms() const;
  void handle_signals();
  void reap_exited_ranks();
  void record_exit(const Rank& rank, int wait_status);
  void stop_ranks(int signal);
  void kill_if_grace_expired();
  void signal_running_ranks(int signal);
  void drain_output();

  const LaunchOptions& options_;
  SignalPipe signals_;  // before spawning, so that no SIGCHLD goes unseen
  std::vector<Rank> ranks_;
  std::optional<int> first_failure_;  // exit code of the first rank that failed
  bool stopping_ = false;
  int forwarded_signals_ = 0;  // SIGINT/SIGTERM received and forwarded to the ranks
  std::optional<Clock::time_point> kill_deadline_;  // while stopping, until SIGKILL has been sent
};

// Reads what the rank wrote so far and relays it; at end of stream flushes and closes. Returns
// whether it read any bytes.
void close_output(RankOutput& output) {
  output.relay.finish();
  output.fd.reset();
}

bool read_chunk(RankOutput& output) {
  char buffer[64 * 1024];
  ssize_t n = read(output.fd.get(), buffer, sizeof(buffer));
  if (n > 0) {
    output.relay.append(buffer, static_cast<size_t>(n));
    return true;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
  close_output(output);  // end of stream, or an unreadable pipe: nothing more will come
  return false;
}

int Launch::run() {
  spawn_ranks();
  while (any_running()) {
    wait_for_events();
    reap_exited_ranks();
    kill_if_grace_expired();
  }
  drain_output();
  return first_failure_.value_or(0);
}

// Only reached with ranks still running when the launch failed half-way (an exception).
Launch::~Launch() {
  for (Rank& rank : ranks_) {
    if (!rank.running) continue;
    kill(-rank.pid, SIGKILL);
    waitpid(rank.pid, nullptr, 0);
  }
}

void Launch::spawn_ranks() {
  int threads = std::max(1, available_cores() / options_.nproc_per_node);
  std::vector<std::string> argv{options_.program};
  argv.insert(argv.end(), options_.arguments.begin(), options_.arguments.end());
  ranks_.reserve(options_.nproc_per_node);
  for (int local_rank = 0; local_rank < options_.nproc_per_node; ++local_rank) {
    Pipe out = make_pipe(), err = make_pipe();
    set_nonblocking(out.read_end.get());
    set_nonblocking(err.read_end.get());
    // A launcher killed outright can neither relay output nor stop the ranks: they die with it.
    pid_t pid = spawn_process(options_.program, argv, environment_with(rank_variables(options_, local_rank, threads)),
                              out.write_end.get(), err.write_end.get(), SIGKILL);
    // The write ends close when `out` and `err` go: the rank then holds the only writers, so the
    // pipes reach end of stream once it (and whatever it started) is gone.
    int rank = global_rank(options_, local_rank);
    std::string prefix = options_.prefix_output ? "[rank " + std::to_string(rank) + "] " : "";
    ranks_.push_back(Rank{rank, pid, true, RankOutput{std::move(out.read_end), LineRelay(STDOUT_FILENO, prefix)},
                          RankOutput{std::move(err.read_end), LineRelay(STDERR_FILENO, prefix)}});
  }
}

bool Launch::any_running() const {
  return std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& rank) { return rank.running; });
}

// Sleeps until a rank writes output, a signal arrives (SIGCHLD included) or the grace period ends.
void Launch::wait_for_events() {
  std::vector<pollfd> fds{{signals_.fd(), POLLIN, 0}};
  std::vector<RankOutput*> outputs;
  for (Rank& rank : ranks_) {
    for (RankOutput* output : {&rank.out, &rank.err}) {
      if (!output->fd.is_open()) continue;
      fds.push_back({output->fd.get(), POLLIN, 0});
      outputs.push_back(output);
    }
  }
  if (poll(fds.data(), fds.size(), poll_timeout_ms()) < 0) {
    if (errno == EINTR) return;
    fail_with_errno("poll failed");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (fds[i + 1].revents != 0) read_chunk(*outputs[i]);
  }
  if (fds[0].revents != 0) handle_signals();
}

int Launch::poll_timeout_ms() const {
  if (!kill_deadline_) return -1;
  auto remaining = std::chrono::ceil<std::chrono::milliseconds>(*kill_deadline_ - Clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, remaining.count()));
}

// SIGCHLD needs nothing here: every wake-up reaps. SIGINT and SIGTERM go on to the ranks. A
// trainer stops at a step its ranks agree on and writes a checkpoint first, which may take
// longer than any fixed grace period: the first signal only forwards. The second one (the ranks
// then exit at once) also starts the grace period, after which SIGKILL follows.
void Launch::handle_signals() {
  for (int signal : signals_.take()) {
    if (signal == SIGCHLD) continue;
    const bool again = forwarded_signals_++ > 0;
    report("received " + describe_signal(signal) + "; forwarding it to the ranks" +
           (again ? " (again: those still running after the grace period are killed)" : ""));
    signal_running_ranks(signal);
    stopping_ = true;
    if (again && !kill_deadline_) kill_deadline_ = Clock::now() + options_.grace;
  }
}

void Launch::reap_exited_ranks() {
  for (Rank& rank : ranks_) {
    if (!rank.running) continue;
    int wait_status = 0;
    pid_t reaped = waitpid(rank.pid, &wait_status, WNOHANG);
    if (reaped == 0 || (reaped < 0 && errno == EINTR)) continue;
    if (reaped < 0) fail_with_errno("lost track of rank " + std::to_string(rank.global_rank));
    rank.running = false;
    record_exit(rank, wait_status);
  }
}

void Launch::record_exit(const Rank& rank, int wait_status) {
  if (exit_code(wait_status) == 0 || first_failure_) return;
  first_failure_ = exit_code(wait_status);
  std::string message =
      "rank " + std::to_string(rank.global_rank) + " " + describe_exit(wait_status) + " (first failure)";
  // After a forwarded SIGINT the ranks are already stopping, perhaps saving a checkpoint: let them.
  bool stop_others = !stopping_ && any_running();
  report(stop_others ? message + "; stopping the other ranks" : message);
  if (stop_others) stop_ranks(SIGTERM);
}

void Launch::stop_ranks(int signal) {
  signal_running_ranks(signal);
  if (stopping_) return;
  stopping_ = true;
  kill_deadline_ = Clock::now() + options_.grace;
}

void Launch::kill_if_grace_expired() {
  if (!kill_deadline_ || Clock::now() < *kill_deadline_) return;
  signal_running_ranks(SIGKILL);
  kill_deadline_.reset();
}

void Launch::signal_running_ranks(int signal) {
  for (const Rank& rank : ranks_) {
    if (rank.running) kill(-rank.pid, signal);
  }
}

// Every rank has exited, so what they wrote is in the pipes: relay it. Whatever a rank left running
// in the background may still hold a pipe open; its later output is not waited for.
void Launch::drain_output() {
  for (Rank& rank : ranks_) {
    for (RankOutput* output : {&rank.out, &rank.err}) {
      bool more = output->fd.is_open();
      while (more) more = read_chunk(*output);
      if (output->fd.is_open()) close_output(*output);
    }
  }
}

}  // namespace

int run_launch(const LaunchOptions& options) {
  validate(options);
  return Launch(options).run();
}

}  // namespace strait::launch
