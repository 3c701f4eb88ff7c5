#include "strait/core/file_lock.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "strait/core/error.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

// The PID a holder wrote, or a placeholder if it has not written it yet (it writes right after
// taking the lock).
std::string holder_of(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  return n > 0 ? std::string(text, static_cast<size_t>(n)) : std::string("(PID not yet written)");
}

}  // namespace

FileLock::FileLock(fs::path path, const std::string& what) : path_(std::move(path)) {
  // A releaser removes the file while it still holds the lock, so a lock taken on a file that
  // is no longer at `path` (removed, or replaced by a newer one) guards nothing: retry on the
  // file now there.
  for (;;) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw Error("cannot open the lock file " + path_.string() + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      const std::string message =
          error == EWOULDBLOCK ? what + " is in use by process " + holder_of(fd) + " (it holds " + path_.string() + ")"
                               : "cannot lock " + path_.string() + ": " + std::strerror(error);
      ::close(fd);
      throw Error(message);
    }
    struct stat opened {}, current {};
    if (::fstat(fd, &opened) == 0 && ::stat(path_.c_str(), &current) == 0 && opened.st_dev == current.st_dev &&
        opened.st_ino == current.st_ino) {
      fd_ = fd;
      break;
    }
    ::close(fd);
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const std::string reason = std::strerror(errno);
    ::unlink(path_.c_str());
    ::close(fd_);
    throw Error("cannot write " + path_.string() + ": " + reason);
  }
}

FileLock::FileLock(FileLock&& other) noexcept : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

FileLock::~FileLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace strait
