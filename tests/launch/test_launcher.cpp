// The launcher runs real processes: small bash scripts stand in for the ranks, and each test runs
// the launcher itself in a forked child, because it installs signal handlers and some tests
// signal it.
#include "strait/launch/launcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "strait/core/error.h"
#include "strait/core/threads.h"
#include "strait/launch/rank_environment.h"
#include "test_support.h"

namespace strait::launch {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::ScratchDir;

// Rank script fragments. Every script gets the scratch directory as $1.
const std::string kRecordPid = "echo $$ > \"$1/pid_$RANK\"\n";
const std::string kSleepThenMarkDone = "sleep 30\ntouch \"$1/done_$RANK\"\n";

std::string wait_for_pids(int count) {
  return "while [ \"$(ls \"$1\" | grep -c '^pid_')\" -lt " + std::to_string(count) + " ]; do sleep 0.02; done\n";
}

// `commands` run by one rank only, once `pids` other ranks have recorded their pids.
std::string on_rank_once_others_started(int rank, int pids, const std::string& commands) {
  return "if [ \"$RANK\" = " + std::to_string(rank) + " ]; then\n" + wait_for_pids(pids) + commands + "fi\n";
}

std::string write_script(const ScratchDir& dir, const std::string& body) {
  fs::path path = dir / "rank.sh";
  testing::write_file(path, "#!/bin/bash\n" + body);
  fs::permissions(path, fs::perms::owner_exec, fs::perm_options::add);
  return path.string();
}

LaunchOptions options_for(const ScratchDir& dir, const std::string& script_body, int nproc_per_node) {
  LaunchOptions options;
  options.program = write_script(dir, script_body);
  options.arguments = {dir.path().string()};
  options.nproc_per_node = nproc_per_node;
  options.grace = 10s;  // tests that need the SIGKILL escalation shorten it
  return options;
}

struct LaunchResult {
  int status = -1;  // the launcher's exit status: run_launch's result
  std::string out, err;
  Clock::duration elapsed{};
};

// run_launch in a forked child with `environment` added to its own, its stdout and stderr going to
// files in `dir`.
class LauncherProcess {
 public:
  LauncherProcess(const LaunchOptions& options, const ScratchDir& dir,
                  const std::map<std::string, std::string>& environment = {})
      : out_(dir / "launcher.out"), err_(dir / "launcher.err"), start_(Clock::now()) {
    pid_ = fork();
    if (pid_ == 0) run_child(options, environment);
  }

  pid_t pid() const { return pid_; }

  LaunchResult wait(Clock::duration timeout = 20s) {
    LaunchResult result;
    int wait_status = 0;
    while (waitpid(pid_, &wait_status, WNOHANG) == 0) {
      if (Clock::now() - start_ > timeout) {
        kill(pid_, SIGKILL);  // the ranks die with it (PR_SET_PDEATHSIG)
        waitpid(pid_, &wait_status, 0);
        ADD_FAILURE() << "the launcher did not finish in time";
        return result;
      }
      std::this_thread::sleep_for(5ms);
    }
    result.elapsed = Clock::now() - start_;
    result.status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
    result.out = testing::read_file(out_);
    result.err = testing::read_file(err_);
    return result;
  }

 private:
  [[noreturn]] void run_child(const LaunchOptions& options, const std::map<std::string, std::string>& environment) {
    for (const auto& [name, value] : environment) setenv(name.c_str(), value.c_str(), 1);
    dup2(open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDOUT_FILENO);
    dup2(open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDERR_FILENO);
    try {
      _exit(run_launch(options));
    } catch (const std::exception& error) {
      std::string message = std::string("exception: ") + error.what() + "\n";
      [[maybe_unused]] ssize_t written = write(STDERR_FILENO, message.data(), message.size());
      _exit(100);
    }
  }

  fs::path out_, err_;
  Clock::time_point start_;
  pid_t pid_ = -1;
};

LaunchResult launch(const LaunchOptions& options, const ScratchDir& dir,
                    const std::map<std::string, std::string>& environment = {}) {
  return LauncherProcess(options, dir, environment).wait();
}

std::map<std::string, std::string> read_environment_file(const fs::path& path) {
  std::map<std::string, std::string> variables;
  std::istringstream lines(testing::read_file(path));
  for (std::string line; std::getline(lines, line);) {
    size_t equals = line.find('=');
    if (equals != std::string::npos) variables[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return variables;
}

std::set<std::string> files_starting_with(const ScratchDir& dir, const std::string& prefix) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.insert(name);
  }
  return names;
}

// Whether any process in process group `group` is alive (zombies, awaiting their reaper, count as
// dead), from /proc/PID/stat: "pid (comm) state ppid pgrp ...".
bool group_alive(pid_t group) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    size_t comm_end = stat.rfind(')');
    if (comm_end == std::string::npos) continue;
    std::istringstream fields(stat.substr(comm_end + 1));
    char state = 0;
    pid_t parent = 0, process_group = 0;
    fields >> state >> parent >> process_group;
    if (process_group == group && state != 'Z' && state != 'X') return true;
  }
  return false;
}

// The ranks that ran kSleepThenMarkDone did not finish it, and nothing they started lives on.
void expect_stopped(const ScratchDir& dir, const std::vector<int>& ranks) {
  for (int rank : ranks) {
    std::string suffix = "_" + std::to_string(rank);
    EXPECT_FALSE(fs::exists(dir / ("done" + suffix))) << "rank " << rank << " ran to completion";
    pid_t group = std::stoi(testing::read_file(dir / ("pid" + suffix)));
    Clock::time_point deadline = Clock::now() + 3s;  // a killed process takes a moment to go
    while (group_alive(group) && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(group_alive(group)) << "rank " << rank << " or a process it started is still running";
  }
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

int expected_threads(int nproc_per_node) { return std::max(1, available_cores() / nproc_per_node); }

TEST(Launcher, EveryRankGetsItsEnvironmentAndArguments) {
  ScratchDir dir;
  const std::string script = "env > \"$1/env_$RANK\"\nprintf '%s\\n' \"${@:2}\" > \"$1/args_$RANK\"\n";
  LaunchOptions options = options_for(dir, script, 3);
  options.nnodes = 2;
  options.node_rank = 1;
  options.master_addr = "10.1.2.3";
  options.master_port = 29555;
  options.arguments.insert(options.arguments.end(), {"train", "--data", "a b"});

  // An inherited RANK (the launcher itself started by a launcher) must not reach the ranks.
  LaunchResult result = launch(options, dir, {{"RANK", "99"}, {"STRAIT_TEST_INHERITED", "kept"}});
  ASSERT_EQ(result.status, 0) << result.err;

  EXPECT_EQ(files_starting_with(dir, "env_"), (std::set<std::string>{"env_3", "env_4", "env_5"}));
  for (int rank = 3; rank <= 5; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    std::map<std::string, std::string> env = read_environment_file(dir / ("env_" + std::to_string(rank)));
    std::string threads = std::to_string(expected_threads(3));
    const std::map<std::string, std::string> expected{
        {"RANK", std::to_string(rank)}, {"WORLD_SIZE", "6"},       {"LOCAL_RANK", std::to_string(rank - 3)},
        {"LOCAL_WORLD_SIZE", "3"},      {"GROUP_RANK", "1"},       {"STRAIT_NODE_RANK", "1"},
        {"MASTER_ADDR", "10.1.2.3"},    {"MASTER_PORT", "29555"},  {"OMP_NUM_THREADS", threads},
        {"STRAIT_THREADS", threads},    {"STRAIT_TEST_INHERITED", "kept"}};
    for (const auto& [name, value] : expected) EXPECT_EQ(env[name], value) << name;
    EXPECT_EQ(testing::read_file(dir / ("args_" + std::to_string(rank))), "train\n--data\na b\n");

    // What the launcher sets is exactly what a rank reads back.
    RankEnvironment read_back = read_rank_environment([&](const std::string& name) -> std::optional<std::string> {
      if (env.count(name) == 0) return std::nullopt;
      return env[name];
    });
    EXPECT_EQ(read_back.launcher, "strait");
    EXPECT_EQ(read_back.rank, rank);
    EXPECT_EQ(read_back.local_rank, rank - 3);
    EXPECT_EQ(read_back.node_rank, 1);
    EXPECT_EQ(read_back.num_nodes, 2);
    EXPECT_EQ(read_back.master_addr, "10.1.2.3");
    EXPECT_EQ(read_back.master_port, 29555);
  }
}

// Oversubscribing the cores is catastrophic for OpenMP: the ranks share them.
TEST(Launcher, RanksShareTheAvailableCores) {
  for (int nproc_per_node : {1, 2}) {
    ScratchDir dir;
    const std::string script = "echo \"$OMP_NUM_THREADS $STRAIT_THREADS\" > \"$1/threads_$RANK\"\n";
    LaunchResult result = launch(options_for(dir, script, nproc_per_node), dir);
    ASSERT_EQ(result.status, 0) << result.err;
    std::string threads = std::to_string(expected_threads(nproc_per_node));
    for (int rank = 0; rank < nproc_per_node; ++rank) {
      EXPECT_EQ(testing::read_file(dir / ("threads_" + std::to_string(rank))), threads + " " + threads + "\n")
          << nproc_per_node << " ranks per node";
    }
  }
}

// Checks that `output` consists of exactly `lines` lines per rank R of "[rank R] rank R " + `body`
// (whose one group is the line number, counting from 1 in order), then of `last` if given.
void expect_whole_prefixed_lines(const std::string& output, const std::string& body, int ranks, int lines,
                                 const std::string& last) {
  const std::regex line_pattern(R"(\[rank (\d)\] rank (\d) )" + body);
  const std::regex last_pattern(R"(\[rank (\d)\] rank (\d) )" + last);
  std::map<int, int> next_line;
  std::set<int> finished;
  std::istringstream stream(output);
  for (std::string line; std::getline(stream, line);) {
    std::smatch match;
    if (!last.empty() && std::regex_match(line, match, last_pattern) && match[1] == match[2]) {
      int rank = std::stoi(match[1]);
      EXPECT_EQ(next_line[rank], lines) << "rank " << rank << " wrote its last line early";
      EXPECT_TRUE(finished.insert(rank).second) << "rank " << rank << " wrote its last line twice";
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, match, line_pattern) && match[1] == match[2]) << "mangled line: " << line;
    int rank = std::stoi(match[1]);
    EXPECT_EQ(std::stoi(match[3]), ++next_line[rank]) << "rank " << rank << " lines out of order";
  }
  ASSERT_EQ(next_line.size(), static_cast<size_t>(ranks));
  for (const auto& [rank, count] : next_line) EXPECT_EQ(count, lines) << "rank " << rank;
  if (!last.empty()) {
    EXPECT_EQ(finished.size(), static_cast<size_t>(ranks));
  }
}

TEST(Launcher, RelaysWholeLinesPrefixedWithTheRank) {
  ScratchDir dir;
  // Each stdout line comes in two writes (bash's printf flushes every time); the last has no newline.
  const std::string script =
      "for i in $(seq 1 200); do\n"
      "  printf 'rank %s out %s ' \"$RANK\" \"$i\"\n"
      "  printf '%0100d\\n' 0\n"
      "  echo \"rank $RANK err $i\" >&2\n"
      "done\n"
      "printf 'rank %s no newline' \"$RANK\"\n";
  LaunchResult result = launch(options_for(dir, script, 4), dir);
  ASSERT_EQ(result.status, 0) << result.err;
  expect_whole_prefixed_lines(result.out, R"(out (\d+) 0{100})", 4, 200, "no newline");
  expect_whole_prefixed_lines(result.err, R"(err (\d+))", 4, 200, "");
}

TEST(Launcher, WithoutPrefixLinesPassUnchanged) {
  ScratchDir dir;
  LaunchOptions options = options_for(dir, "echo \"plain $RANK\"\n", 2);
  options.prefix_output = false;
  LaunchResult result = launch(options, dir);
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_TRUE(result.out == "plain 0\nplain 1\n" || result.out == "plain 1\nplain 0\n") << result.out;
}

TEST(Launcher, AFailingRankStopsTheOthers) {
  ScratchDir dir;
  const std::string script = on_rank_once_others_started(1, 2, "exit 3\n") + kRecordPid + kSleepThenMarkDone;
  LaunchResult result = launch(options_for(dir, script, 3), dir);
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_LT(result.elapsed, 5s) << "the sleeping ranks were not stopped by SIGTERM";
  EXPECT_TRUE(contains(result.err, "strait launch: rank 1 exited with status 3 (first failure); "
                                   "stopping the other ranks"))
      << result.err;
  expect_stopped(dir, {0, 2});
}

TEST(Launcher, RanksIgnoringSigtermAreKilledAfterTheGracePeriod) {
  ScratchDir dir;
  const std::string script =
      on_rank_once_others_started(0, 1, "exit 1\n") + "trap '' TERM\n" + kRecordPid + kSleepThenMarkDone;
  LaunchOptions options = options_for(dir, script, 2);
  options.grace = 300ms;
  LaunchResult result = launch(options, dir);
  EXPECT_EQ(result.status, 1) << result.err;
  EXPECT_GE(result.elapsed, 300ms) << "SIGKILL came before the grace period ended";
  EXPECT_LT(result.elapsed, 5s);
  EXPECT_TRUE(contains(result.err, "rank 0 exited with status 1 (first failure)")) << result.err;
  expect_stopped(dir, {1});
}

TEST(Launcher, ARankKilledBySignalGives128PlusTheSignal) {
  ScratchDir dir;
  const std::string script = on_rank_once_others_started(0, 1, "kill -9 $$\n") + kRecordPid + kSleepThenMarkDone;
  LaunchResult result = launch(options_for(dir, script, 2), dir);
  EXPECT_EQ(result.status, 128 + 9) << result.err;
  EXPECT_TRUE(contains(result.err, "rank 0 was killed by signal 9")) << result.err;
  expect_stopped(dir, {1});
}

TEST(Launcher, SigintToTheLauncherStopsEveryRank) {
  ScratchDir dir;
  LauncherProcess launcher(options_for(dir, kRecordPid + kSleepThenMarkDone, 2), dir);
  Clock::time_point deadline = Clock::now() + 10s;
  while (files_starting_with(dir, "pid_").size() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  Clock::time_point interrupted = Clock::now();
  kill(launcher.pid(), SIGINT);
  LaunchResult result = launcher.wait();
  EXPECT_EQ(result.status, 128 + SIGINT) << result.err;  // the ranks died of the forwarded SIGINT
  EXPECT_LT(Clock::now() - interrupted, 3s);
  EXPECT_TRUE(contains(result.err, "received signal 2")) << result.err;
  expect_stopped(dir, {0, 1});
}

// Each invalid option is reported by name, before any rank starts.
TEST(Launcher, InvalidOptionsAreRejectedBeforeSpawning) {
  ScratchDir dir;
  const LaunchOptions valid = options_for(dir, "touch \"$1/ran\"\n", 1);
  const std::vector<std::pair<std::function<void(LaunchOptions&)>, std::string>> cases{
      {[](LaunchOptions& o) { o.nproc_per_node = 0; }, "nproc_per_node must be at least 1, got 0"},
      {[](LaunchOptions& o) { o.nnodes = 0; }, "nnodes must be at least 1, got 0"},
      {[](LaunchOptions& o) {
         o.nnodes = 2;
         o.node_rank = 2;
       },
       "node_rank 2 is out of range for 2 nodes"},
      {[](LaunchOptions& o) { o.node_rank = -1; }, "node_rank -1 is out of range"},
      {[](LaunchOptions& o) { o.master_port = 0; }, "master_port 0 is not a TCP port"},
      {[](LaunchOptions& o) { o.master_port = 65536; }, "master_port 65536 is not a TCP port"},
      {[](LaunchOptions& o) { o.master_addr = ""; }, "master_addr is empty"},
      {[](LaunchOptions& o) { o.grace = -1ms; }, "grace must not be negative"},
      {[](LaunchOptions& o) { o.program = ""; }, "no program to run"},
      {[&](LaunchOptions& o) { o.program = (dir / "missing").string(); }, "missing: No such file or directory"},
      {[&](LaunchOptions& o) { o.program = dir.path().string(); }, "is not a regular file"},
      {[&](LaunchOptions& o) {
         fs::permissions(o.program, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                         fs::perm_options::remove);
       },
       "rank.sh is not executable"}};
  for (const auto& [break_options, expected] : cases) {
    LaunchOptions options = valid;
    break_options(options);
    try {
      run_launch(options);
      ADD_FAILURE() << "accepted invalid options; expected: " << expected;
    } catch (const Error& error) {
      EXPECT_TRUE(contains(error.what(), expected)) << error.what();
    }
  }
  EXPECT_FALSE(fs::exists(dir / "ran"));
}

}  // namespace
}  // namespace strait::launch
