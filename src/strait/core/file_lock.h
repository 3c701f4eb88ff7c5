// An advisory lock held for as long as a process works on something (a run directory), so
// that a second process gives up at once instead of interleaving its writes with the first's.
#pragma once

#include <filesystem>
#include <string>

namespace strait {

// flock(LOCK_EX) on `path` (created if missing), holding this process's PID as text. The kernel
// drops the lock when the process dies, however it dies, so a lock file left by a killed
// process never blocks anyone; a released lock file is removed.
class FileLock {
 public:
  // Throws strait::Error "<what> is in use by process <PID> (it holds <path>)" if another
  // process holds the lock, or naming the path and the system error if it cannot be taken.
  FileLock(std::filesystem::path path, const std::string& what);
  ~FileLock();
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace strait
