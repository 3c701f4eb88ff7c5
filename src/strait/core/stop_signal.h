// Preemption: SIGTERM and SIGINT ask a trainer to stop cleanly. The handler only records the
// first signal in an atomic (async-signal-safe); the training loop reads it between steps,
// finishes the step, writes a checkpoint and exits with 128 + the signal. A second signal
// writes one line and ends the process at once (_exit(128 + signal)), without a checkpoint.
#pragma once

#include <string>

namespace strait {

// Installs the handlers for SIGTERM and SIGINT while it exists (the previous ones come back on
// destruction). One at a time per process.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// The first stop signal received while StopSignals existed (SIGTERM or SIGINT), 0 if none.
int stop_signal_received();

// "SIGTERM", "SIGINT", or "signal N".
std::string signal_name(int signal);

}  // namespace strait
