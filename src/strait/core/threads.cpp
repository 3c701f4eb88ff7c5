#include "strait/core/threads.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <filesystem>
#include <fstream>
#include <sched.h>
#include <sstream>
#include <vector>

namespace strait {

namespace fs = std::filesystem;

namespace {

const fs::path kCgroupRoot = "/sys/fs/cgroup";

int affinity_cores() {
  // cpu_set_t holds only 1024 CPUs; grow the mask until the kernel accepts it on bigger machines.
  for (int cpus = 1024; cpus <= (1 << 20); cpus *= 2) {
    size_t size = CPU_ALLOC_SIZE(cpus);
    std::vector<unsigned char> storage(size);
    auto* mask = reinterpret_cast<cpu_set_t*>(storage.data());
    if (sched_getaffinity(0, size, mask) == 0) return CPU_COUNT_S(size, mask);
    if (errno != EINVAL) break;
  }
  return 1;
}

// The process's cgroup v2 directory, from the "0::/path" line of /proc/self/cgroup. Inside a
// container's cgroup namespace that path is "/", i.e. the cgroup root itself.
fs::path own_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 3, "0::") == 0) return kCgroupRoot / fs::path(line.substr(3)).relative_path();
  }
  return kCgroupRoot;
}

std::optional<int> core_limit_of(const fs::path& cgroup) {
  std::ifstream in(cgroup / "cpu.max");
  if (!in) return std::nullopt;
  std::stringstream contents;
  contents << in.rdbuf();
  return cpu_max_core_limit(contents.str());
}

// A quota on any ancestor limits this cgroup too, so take the tightest one up to the root.
std::optional<int> cgroup_core_limit() {
  std::optional<int> limit;
  for (fs::path dir = own_cgroup();; dir = dir.parent_path()) {
    std::optional<int> here = core_limit_of(dir);
    if (here && (!limit || *here < *limit)) limit = here;
    if (dir == kCgroupRoot || dir == dir.parent_path()) return limit;
  }
}

}  // namespace

std::optional<int> cpu_max_core_limit(const std::string& cpu_max_contents) {
  std::istringstream in(cpu_max_contents);
  std::string quota_text;
  long long period = 0;
  if (!(in >> quota_text >> period) || period <= 0 || quota_text == "max") return std::nullopt;
  std::istringstream quota_in(quota_text);
  long long quota = 0;
  if (!(quota_in >> quota) || !quota_in.eof() || quota <= 0) return std::nullopt;
  long long cores = quota / period + (quota % period != 0);
  return static_cast<int>(std::clamp(cores, 1LL, static_cast<long long>(INT_MAX)));
}

int available_cores() {
  int cores = affinity_cores();
  if (std::optional<int> limit = cgroup_core_limit()) cores = std::min(cores, *limit);
  return std::max(1, cores);
}

}  // namespace strait
