// How many threads strait should run. std::thread::hardware_concurrency() reports every core of
// the machine, but inside a container or under taskset the process may use far fewer, and
// oversubscribing them makes data loading and CPU kernels slower, not faster.
#pragma once

#include <optional>
#include <string>

namespace strait {

// Cores this process may use: the CPU affinity mask count (sched_getaffinity), further limited
// by the cgroup v2 CPU quota (cpu.max, "QUOTA PERIOD", ceil(QUOTA / PERIOD)) of the process's
// cgroup and its ancestors, when one is set; at least 1.
int available_cores();

// The core limit that the contents of a cgroup v2 cpu.max file impose: ceil(QUOTA / PERIOD),
// at least 1, or nothing for "max PERIOD" (no limit) and for contents it cannot parse.
std::optional<int> cpu_max_core_limit(const std::string& cpu_max_contents);

}  // namespace strait
