// Relays a rank's output stream to the launcher's own stdout or stderr one whole line at a time,
// each line prefixed with the rank ("[rank 3] "). The launcher relays every rank from one thread,
// so as long as each line goes out whole, lines of different ranks never mix mid-line.
#pragma once

#include <cstddef>
#include <string>

namespace strait::launch {

class LineRelay {
 public:
  LineRelay(int fd, std::string prefix) : fd_(fd), prefix_(std::move(prefix)) {}

  // Adds bytes read from the rank and writes out every line they complete.
  void append(const char* data, size_t size);

  // The stream ended: writes a last line the rank left without a newline, adding one.
  void finish();

 private:
  int fd_;
  std::string prefix_;
  std::string pending_;  // the start of a line not yet complete
};

// A rank that never writes a newline (a progress bar redrawn with '\r') must not grow the relay
// without bound: a line this long goes out as it is, the rest continues on the next line.
constexpr size_t kMaxRelayedLineBytes = 64 * 1024;

// Writes all of `bytes` to `fd`, resuming after interrupted and partial writes; throws
// strait::Error when the descriptor fails.
void write_all(int fd, const std::string& bytes);

}  // namespace strait::launch
