#include "strait/core/fileio.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

#include "strait/core/error.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

std::string system_error_text() { return std::strerror(errno); }

std::string unique_suffix() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::to_string(::getpid()) + "-" + std::to_string(generator() % 1000000000ULL);
}

void fsync_path(const fs::path& path, int open_flags) {
  int fd = ::open(path.c_str(), open_flags);
  if (fd < 0) throw Error("cannot open " + path.string() + " to sync it: " + system_error_text());
  int rc = ::fsync(fd);
  int saved_errno = errno;
  ::close(fd);
  if (rc != 0) {
    errno = saved_errno;
    throw Error("fsync failed for " + path.string() + ": " + system_error_text());
  }
}

void write_all(int fd, const fs::path& path, const char* bytes, size_t size) {
  while (size > 0) {
    ssize_t written = ::write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + path.string() + ": " + system_error_text());
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
}

}  // namespace

void fsync_directory(const fs::path& dir) { fsync_path(dir.empty() ? fs::path(".") : dir, O_RDONLY | O_DIRECTORY); }

void atomic_write_file(const fs::path& path, const void* data, size_t size) {
  fs::path directory = path.parent_path();
  fs::path temporary = path;
  temporary += ".tmp-" + unique_suffix();
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot create " + temporary.string() + ": " + system_error_text());
  try {
    write_all(fd, temporary, static_cast<const char*>(data), size);
    if (::fsync(fd) != 0) throw Error("fsync failed for " + temporary.string() + ": " + system_error_text());
  } catch (...) {
    ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    std::string reason = system_error_text();
    ::unlink(temporary.c_str());
    throw Error("cannot rename " + temporary.string() + " to " + path.string() + ": " + reason);
  }
  fsync_directory(directory);
}

void atomic_write_file(const fs::path& path, const std::string& contents) {
  atomic_write_file(path, contents.data(), contents.size());
}

void write_generated_file(const std::filesystem::path& path, const std::string& contents, bool overwrite,
                          const GeneratedFile& kind) {
  const std::string prefix = std::string(kind.command) + ": " + path.string();
  if (std::filesystem::exists(path)) {
    if (!overwrite) {
      throw Error(prefix + " exists (pass --overwrite to replace an earlier " + kind.description + ")");
    }
    if (!std::filesystem::is_regular_file(path) || read_whole_file(path).find(kind.marker) == std::string::npos) {
      throw Error(prefix + " was not written by " + kind.writer + "; refusing to replace it");
    }
  }
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  atomic_write_file(path, contents);
}

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string() + ": " + (fs::exists(path) ? "permission denied" : "no such file"));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw Error("cannot read " + path.string() + ": I/O error");
  return contents.str();
}

void check_replaceable_output(const fs::path& path, bool overwrite, const OutputKind& kind) {
  if (!fs::exists(path)) return;
  const std::string where = std::string(kind.command) + ": " + path.string();
  if (!fs::is_directory(path)) throw Error(where + " exists and is not a directory; refusing to replace it");
  if (!fs::is_empty(path) && !fs::exists(path / kind.marker)) {
    throw Error(where + " does not look like " + kind.description + " (no " + kind.marker +
                "); refusing to replace it");
  }
  if (!overwrite) throw Error(where + " already exists; pass --overwrite to replace it");
}

std::vector<fs::path> remove_abandoned_staging(const fs::path& dir, const std::string& final_name) {
  std::vector<fs::path> removed;
  if (!fs::is_directory(dir)) return removed;
  const std::string marker = ".staging-";
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(marker);
    if (name.empty() || name[0] != '.' || at == std::string::npos || !entry.is_directory()) continue;
    if (!final_name.empty() && name.compare(1, at - 1, final_name) != 0) continue;
    const std::string owner = name.substr(at + marker.size(), name.find('-', at + marker.size()) - at - marker.size());
    if (owner.empty() || owner.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stoll(owner));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its command still runs
    fs::remove_all(entry.path());
    removed.push_back(entry.path());
  }
  return removed;
}

// "out/" names the directory "out"; with the trailing separator its filename would be empty and
// the staging directory would land inside it.
StagedDirectory::StagedDirectory(fs::path final_path)
    : final_path_(final_path.has_filename() ? std::move(final_path) : final_path.parent_path()) {
  staging_path_ = final_path_.parent_path() / ("." + final_path_.filename().string() + ".staging-" + unique_suffix());
  std::error_code error;
  fs::create_directories(staging_path_, error);
  if (error) throw Error("cannot create " + staging_path_.string() + ": " + error.message());
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ignored;
  fs::remove_all(staging_path_, ignored);
}

void StagedDirectory::commit() {
  if (fs::exists(final_path_)) throw Error("cannot publish " + final_path_.string() + ": it already exists");
  fsync_directory(staging_path_);
  if (::rename(staging_path_.c_str(), final_path_.c_str()) != 0) {
    throw Error("cannot rename " + staging_path_.string() + " to " + final_path_.string() + ": " + system_error_text());
  }
  committed_ = true;
  fsync_directory(final_path_.parent_path());
}

std::string StagedDirectory::commit_replacing() {
  if (!fs::exists(final_path_)) {
    commit();
    return "";
  }
  const fs::path old = final_path_.parent_path() / ("." + final_path_.filename().string() + ".replaced-" + unique_suffix());
  std::error_code error;
  fs::rename(final_path_, old, error);
  if (error) throw Error("cannot move " + final_path_.string() + " aside to replace it: " + error.message());
  try {
    commit();
  } catch (...) {
    fs::rename(old, final_path_, error);
    throw;
  }
  fs::remove_all(old, error);
  return error ? "could not remove the replaced copy " + old.string() + ": " + error.message() : "";
}

}  // namespace strait
