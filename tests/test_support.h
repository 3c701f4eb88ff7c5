// Helpers shared by strait's tests: scratch directories, file snapshots, running the CLI.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace strait::testing {

// A fresh directory under the system temp dir, removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Every regular file under `root` (recursively) mapped to its full contents, so a test can
// assert that a failed command left everything already on disk untouched.
std::map<std::string, std::string> snapshot_tree(const std::filesystem::path& root);

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& contents);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// A TCP port on loopback that was free a moment ago (the kernel's pick for port 0), for a test's
// rendezvous: ctest runs tests in parallel, so fixed ports would collide.
int free_tcp_port();

// `path` in single quotes, for a shell command line (test paths hold no quotes).
std::string quoted(const std::filesystem::path& path);

// Runs a shell command line, capturing its combined output.
CommandResult run_command(const std::string& command_line);

// Runs the strait binary built alongside the tests with the given arguments.
CommandResult run_strait(const std::string& arguments);

// `n` samples of N(0, stddev²) from a generator seeded with `seed`: test data that is the same
// on every run.
std::vector<float> normal_floats(size_t n, uint32_t seed, float stddev = 1.0f);

}  // namespace strait::testing
