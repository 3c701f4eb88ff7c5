// `strait launch`: starts the local ranks of a distributed run, like torchrun's standalone mode,
// and stays in front of them: relays their output, forwards signals, and stops them all when one
// fails, so that a crashed rank never leaves the others hanging in a collective.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace strait::launch {

struct LaunchOptions {
  int nproc_per_node = 1, nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string program;                 // path of the executable to run for each rank (strait itself: /proc/self/exe)
  std::vector<std::string> arguments;  // passed to each rank, e.g. {"train", "--data", ...}
  bool prefix_output = true;           // prefix every line of each rank's stdout/stderr with "[rank R] "
  // After a rank fails, or a second signal arrives, ranks still running this long after it get SIGKILL.
  std::chrono::milliseconds grace{5000};
};

// Spawns nproc_per_node local ranks (global rank = node_rank * nproc_per_node + local_rank), each in
// its own process group with stdin from /dev/null and the environment RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, GROUP_RANK, STRAIT_NODE_RANK, MASTER_ADDR, MASTER_PORT, and OMP_NUM_THREADS =
// STRAIT_THREADS = max(1, available_cores() / nproc_per_node) (oversubscribed cores are catastrophic
// for OpenMP). Relays their stdout and stderr line by line to its own, prefixed; forwards SIGINT and
// SIGTERM to every rank's process group; when a rank exits non-zero, reports it ("strait launch:
// rank 2 exited with status 1 (first failure); stopping the other ranks") and sends SIGTERM to the
// others. Ranks still running `grace` after that SIGTERM, or after a second forwarded signal, get
// SIGKILL; after the first forwarded signal they are waited for (a trainer writes a checkpoint).
// Returns 0 if every rank exited 0, else the first failing rank's status (128 + signal for a rank
// killed by a signal). Throws strait::Error for invalid options, before spawning anything.
// Installs its own SIGINT, SIGTERM and SIGCHLD handlers while it runs (restored afterwards), so at
// most one launch may run in a process at a time.
int run_launch(const LaunchOptions& options);

}  // namespace strait::launch
