#include "launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "test_support.h"

extern char** environ;

namespace strait::testing {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> environment_for(const JobSpec& spec, int rank, int port) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const auto equals = text.find('=');
    if (equals != std::string::npos) variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  variables["RANK"] = std::to_string(rank);
  variables["WORLD_SIZE"] = std::to_string(spec.world_size);
  variables["LOCAL_WORLD_SIZE"] = std::to_string(spec.local_world_size);
  variables["MASTER_ADDR"] = "127.0.0.1";
  variables["MASTER_PORT"] = std::to_string(port);
  variables["STRAIT_COMM_TIMEOUT_MS"] = std::to_string(spec.timeout_ms);
  variables["OMP_NUM_THREADS"] = "1";
  auto overrides = spec.rank_env.find(rank);
  if (overrides != spec.rank_env.end()) {
    for (const auto& [name, value] : overrides->second) variables[name] = value;
  }
  std::vector<std::string> result;
  for (const auto& [name, value] : variables) result.push_back(name + "=" + value);
  return result;
}

std::vector<std::string> arguments_for(const JobSpec& spec, int rank) {
  std::vector<std::string> arguments = {STRAIT_COMM_WORKER, spec.scenario};
  arguments.insert(arguments.end(), spec.args.begin(), spec.args.end());
  auto extra = spec.rank_args.find(rank);
  if (extra != spec.rank_args.end()) arguments.insert(arguments.end(), extra->second.begin(), extra->second.end());
  return arguments;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& text : strings) pointers.push_back(text.data());
  pointers.push_back(nullptr);
  return pointers;
}

pid_t spawn(const JobSpec& spec, int rank, int port, const std::string& log_path) {
  std::vector<std::string> arguments = arguments_for(spec, rank);
  std::vector<std::string> environment = environment_for(spec, rank, port);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int status = posix_spawn(&pid, arguments[0].c_str(), &actions, nullptr, c_strings(arguments).data(),
                                 c_strings(environment).data());
  posix_spawn_file_actions_destroy(&actions);
  if (status != 0) throw std::runtime_error("cannot start " + arguments[0] + ": " + std::strerror(status));
  return pid;
}

void record_exit(RankOutcome& outcome, int status, Clock::time_point start) {
  outcome.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
}

void read_output(RankOutcome& outcome, const std::string& log_path) {
  outcome.output = read_file(log_path);
  std::istringstream lines(outcome.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("RESULT ", 0) == 0) outcome.result = nlohmann::json::parse(line.substr(7));
    if (line.rfind("ERROR ", 0) == 0) outcome.error = line.substr(6);
  }
}

bool is_stuck(const JobSpec& spec, int rank) {
  return std::find(spec.stuck_ranks.begin(), spec.stuck_ranks.end(), rank) != spec.stuck_ranks.end();
}

void kill_rank(pid_t pid, RankOutcome& outcome, Clock::time_point start) {
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  record_exit(outcome, status, start);
  outcome.killed = true;
}

}  // namespace

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), size) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    throw std::runtime_error("cannot find a free port: " + std::string(std::strerror(errno)));
  }
  close(fd);
  return ntohs(address.sin_port);
}

std::vector<RankOutcome> run_job(const JobSpec& spec) {
  std::vector<int> ranks = spec.ranks;
  if (ranks.empty()) {
    for (int rank = 0; rank < spec.world_size; ++rank) ranks.push_back(rank);
  }
  const int port = spec.port != 0 ? spec.port : free_port();
  ScratchDir logs;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(spec.deadline_s);
  std::vector<RankOutcome> outcomes(ranks.size());
  std::vector<pid_t> running(ranks.size());
  for (size_t i = 0; i < ranks.size(); ++i) {
    outcomes[i].rank = ranks[i];
    running[i] = spawn(spec, ranks[i], port, (logs / std::to_string(ranks[i])).string());
  }
  for (;;) {
    bool others_running = false;
    for (size_t i = 0; i < ranks.size(); ++i) {
      int status = 0;
      if (running[i] != 0 && waitpid(running[i], &status, WNOHANG) == running[i]) {
        record_exit(outcomes[i], status, start);
        running[i] = 0;
      }
      others_running = others_running || (running[i] != 0 && !is_stuck(spec, ranks[i]));
    }
    const bool past_deadline = Clock::now() >= deadline;
    if (!others_running || past_deadline) {
      for (size_t i = 0; i < ranks.size(); ++i) {
        if (running[i] != 0) kill_rank(running[i], outcomes[i], start);
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (size_t i = 0; i < ranks.size(); ++i) read_output(outcomes[i], (logs / std::to_string(ranks[i])).string());
  return outcomes;
}

std::string describe(const std::vector<RankOutcome>& outcomes) {
  std::ostringstream text;
  for (const RankOutcome& outcome : outcomes) {
    text << "--- rank " << outcome.rank << ": exit " << outcome.exit_code << ", signal " << outcome.signal
         << (outcome.killed ? ", killed by the harness" : "") << ", " << outcome.seconds << " s\n"
         << outcome.output.substr(0, 4000) << "\n";
  }
  return text.str();
}

::testing::AssertionResult all_succeeded(const std::vector<RankOutcome>& outcomes) {
  for (const RankOutcome& outcome : outcomes) {
    if (outcome.exit_code != 0 || outcome.result.is_null()) {
      return ::testing::AssertionFailure() << "rank " << outcome.rank << " did not succeed\n" << describe(outcomes);
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult all_failed_with(const std::vector<RankOutcome>& outcomes,
                                           const std::vector<std::string>& fragments) {
  for (const RankOutcome& outcome : outcomes) {
    if (outcome.exit_code != 1 || outcome.killed) {
      return ::testing::AssertionFailure() << "rank " << outcome.rank << " did not fail on its own\n"
                                           << describe(outcomes);
    }
    for (const std::string& fragment : fragments) {
      if (outcome.error.find(fragment) == std::string::npos) {
        return ::testing::AssertionFailure() << "rank " << outcome.rank << "'s error lacks '" << fragment << "'\n"
                                             << describe(outcomes);
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace strait::testing
