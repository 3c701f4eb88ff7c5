#include "strait/launch/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string_view>

#include "strait/core/error.h"

extern char** environ;

namespace strait::launch {

namespace {

// The signals strait's parent processes (launch, sweep) handle themselves.
constexpr std::array<int, 3> kParentSignals{SIGINT, SIGTERM, SIGCHLD};

std::vector<char*> null_terminated(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Blocks the parent's signals while it exists. Around fork, this keeps a signal from running the
// parent's handler in the child, where it would write into the parent's signal pipe.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigset_t blocked;
    sigemptyset(&blocked);
    for (int signal : kParentSignals) sigaddset(&blocked, signal);
    pthread_sigmask(SIG_BLOCK, &blocked, &previous_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

 private:
  sigset_t previous_;
};

// Runs in the forked child, so it calls only async-signal-safe functions (the parent may have threads).
[[noreturn]] void exec_child(const char* program, char* const argv[], char* const envp[], int stdout_fd,
                             int stderr_fd, pid_t parent, int parent_death_signal) {
  setpgid(0, 0);
  // fork rather than posix_spawn, to set this. It fires when the forking thread ends.
  prctl(PR_SET_PDEATHSIG, parent_death_signal);
  if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(stdout_fd, STDOUT_FILENO) < 0 ||
      dup2(stderr_fd, STDERR_FILENO) < 0) {
    _exit(127);
  }
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int signal : kParentSignals) sigaction(signal, &default_action, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(program, argv, envp);
  for (const char* part : {"strait: cannot execute ", program, "\n"}) {
    [[maybe_unused]] ssize_t written = write(STDERR_FILENO, part, strlen(part));
  }
  _exit(127);
}

}  // namespace

pid_t spawn_process(const std::string& program, std::vector<std::string> argv, std::vector<std::string> envp,
                    int stdout_fd, int stderr_fd, int parent_death_signal) {
  // Everything the child needs is built before fork: it may not allocate.
  std::vector<char*> argv_pointers = null_terminated(argv);
  std::vector<char*> envp_pointers = null_terminated(envp);
  pid_t parent = getpid();
  BlockedSignals blocked;
  pid_t pid = fork();
  if (pid < 0) throw Error("cannot fork to run " + program + ": " + std::strerror(errno));
  if (pid == 0) {
    exec_child(program.c_str(), argv_pointers.data(), envp_pointers.data(), stdout_fd, stderr_fd, parent,
               parent_death_signal);
  }
  // Also set here: the group must exist before the parent's first kill(-pid), which may come
  // before the child runs.
  setpgid(pid, pid);
  return pid;
}

std::vector<std::string> environment_with(const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::vector<std::string> block;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    std::string_view name = text.substr(0, text.find('='));
    bool replaced = std::any_of(overrides.begin(), overrides.end(), [&](const auto& v) { return v.first == name; });
    if (!replaced) block.emplace_back(text);
  }
  for (const auto& [name, value] : overrides) block.push_back(name + "=" + value);
  return block;
}

int exit_code(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

std::string describe_signal(int signal) {
  return "signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
}

std::string describe_exit(int wait_status) {
  if (WIFSIGNALED(wait_status)) return "was killed by " + describe_signal(WTERMSIG(wait_status));
  return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
}

}  // namespace strait::launch
