// Durable file writes. Nothing strait writes may leave a half-written file where a valid one
// was: every file goes to a temporary name in the same directory, is fsync'ed, then renamed
// over the target, and the directory is fsync'ed so the rename itself survives a crash.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace strait {

// Writes `size` bytes to `path` atomically (temp file + fsync + rename + fsync of the directory).
// Throws strait::Error naming the path and the system error on failure; the old file, if any,
// is untouched in that case.
void atomic_write_file(const std::filesystem::path& path, const void* data, size_t size);
void atomic_write_file(const std::filesystem::path& path, const std::string& contents);

// Reads a whole file; throws strait::Error("cannot read <path>: <reason>") if it is missing.
std::string read_whole_file(const std::filesystem::path& path);

// fsync on a directory, so that entries created or renamed in it are durable.
void fsync_directory(const std::filesystem::path& dir);

// What a command writes to its --out directory, so that --overwrite replaces only directories
// that command made: `marker` is a file it writes into every one of them.
struct OutputKind {
  const char* command;      // "prepare", "export": the start of every message
  const char* marker;       // e.g. "prepare.json"
  const char* description;  // e.g. "a prepared data directory"
};

// Before a command publishes its output at `path`: an existing `path` is an error unless it is
// an empty directory or holds kind.marker (a path given by mistake, such as a home directory or
// another command's output, is never deleted), and then unless `overwrite`. Each error names the
// path and why, e.g. "prepare: X does not look like a prepared data directory (no prepare.json);
// refusing to replace it".
void check_replaceable_output(const std::filesystem::path& path, bool overwrite, const OutputKind& kind);

// A file a command generates (a page, a chart): `marker` is a string every such file holds.
struct GeneratedFile {
  const char* command;      // "report", "plan": the start of every message
  const char* marker;
  const char* description;  // e.g. "report", as in "an earlier report"
  const char* writer;       // e.g. "strait report"
};

// Writes `contents` to `path` atomically. An existing `path` is replaced only with `overwrite`,
// and only if it is a file holding kind.marker (a path given by mistake is never overwritten);
// otherwise strait::Error, e.g. "report: X exists (pass --overwrite to replace an earlier
// report)", "report: X was not written by strait report; refusing to replace it".
void write_generated_file(const std::filesystem::path& path, const std::string& contents, bool overwrite,
                          const GeneratedFile& kind);

// Removes the staging directories of StagedDirectory that killed commands left in `dir`:
// entries named ".<name>.staging-<pid>-<n>" (only those of `final_name` when it is not empty)
// whose process <pid> no longer runs; one whose process still runs is kept. Returns the paths
// removed, so the caller can say so.
std::vector<std::filesystem::path> remove_abandoned_staging(const std::filesystem::path& dir,
                                                            const std::string& final_name = "");

// A directory built under a temporary name next to its final place and renamed into place by
// commit(). If the object is destroyed without commit() (an exception, a crash), the temporary
// directory is removed and nothing at the final path changes.
class StagedDirectory {
 public:
  explicit StagedDirectory(std::filesystem::path final_path);
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  // Where to write the contents before commit().
  const std::filesystem::path& staging_path() const { return staging_path_; }
  // fsyncs the staged directory, renames it to the final path (which must not exist) and
  // fsyncs the parent.
  void commit();
  // Like commit(), but an existing directory at the final path is replaced: it is moved aside,
  // the staged one renamed into place, and only then the old one removed; if the rename fails
  // the old directory is put back. Returns a warning if the replaced copy could not be removed
  // (the new directory is in place either way), else an empty string.
  std::string commit_replacing();

 private:
  std::filesystem::path final_path_;
  std::filesystem::path staging_path_;
  bool committed_ = false;
};

}  // namespace strait
