#include "strait/launch/line_relay.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "strait/core/error.h"

namespace strait::launch {

void write_all(int fd, const std::string& bytes) {
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw Error("strait launch: cannot write to file descriptor " + std::to_string(fd) + ": " + std::strerror(errno));
    }
    written += static_cast<size_t>(n);
  }
}

void LineRelay::append(const char* data, size_t size) {
  size_t searched = pending_.size();  // pending_ holds no newline
  pending_.append(data, size);
  std::string lines;  // every completed line, so that they go out in one write
  size_t line_start = 0;
  for (size_t newline; (newline = pending_.find('\n', searched)) != std::string::npos; searched = line_start) {
    lines += prefix_;
    lines.append(pending_, line_start, newline + 1 - line_start);
    line_start = newline + 1;
  }
  pending_.erase(0, line_start);
  if (pending_.size() >= kMaxRelayedLineBytes) {
    lines += prefix_ + pending_ + '\n';
    pending_.clear();
  }
  if (!lines.empty()) write_all(fd_, lines);
}

void LineRelay::finish() {
  if (pending_.empty()) return;
  write_all(fd_, prefix_ + pending_ + '\n');
  pending_.clear();
}

}  // namespace strait::launch
