#include "strait/core/stop_signal.h"

#include <atomic>
#include <csignal>
#include <unistd.h>

#include "strait/core/error.h"

namespace strait {

namespace {

static_assert(std::atomic<int>::is_always_lock_free, "the handler may only touch a lock-free atomic");
std::atomic<int> g_first_signal{0};
std::atomic<bool> g_installed{false};
struct sigaction g_previous_term, g_previous_int;

void on_stop_signal(int signal) {
  int none = 0;
  if (g_first_signal.compare_exchange_strong(none, signal)) return;
  // The second signal: only async-signal-safe calls from here on.
  static const char message[] = "strait: second stop signal: exiting at once, without a checkpoint\n";
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, message, sizeof(message) - 1);
  ::_exit(128 + signal);
}

}  // namespace

StopSignals::StopSignals() {
  if (g_installed.exchange(true)) throw Error("stop signal handlers are already installed in this process");
  g_first_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // interrupted reads and writes resume instead of failing with EINTR
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGINT, &action, &g_previous_int);
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
  g_installed = false;
}

int stop_signal_received() { return g_first_signal.load(); }

std::string signal_name(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGINT) return "SIGINT";
  return "signal " + std::to_string(signal);
}

}  // namespace strait
