// Runs a job of strait_comm_worker processes on loopback and collects what each rank did.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace strait::testing {

struct JobSpec {
  int world_size = 2;
  int local_world_size = 2;
  std::string scenario;
  std::vector<std::string> args;                               // key=value, for every rank
  std::map<int, std::vector<std::string>> rank_args;           // extra key=value, per rank
  std::map<int, std::map<std::string, std::string>> rank_env;  // environment overrides, per rank
  std::vector<int> ranks;                                      // ranks to start; empty: all
  std::vector<int> stuck_ranks;                                // killed as soon as every other rank has exited
  int port = 0;                                                // the store's port; 0: a free one
  int timeout_ms = 5000;                                       // the communicator's timeout
  double deadline_s = 30;                                      // every rank still running then is killed
};

struct RankOutcome {
  int rank = -1;
  int exit_code = -1;  // -1 if it died of a signal
  int signal = 0;
  bool killed = false;    // by the harness, at the deadline or as a stuck rank
  double seconds = 0;     // from the job's start until this rank exited
  std::string output;     // stdout and stderr
  nlohmann::json result;  // the RESULT line; null without one
  std::string error;      // the ERROR line's message; empty without one
};

// Starts the ranks, waits for them (killing stragglers at the deadline) and returns one
// outcome per started rank, in the order of spec.ranks (or rank order).
std::vector<RankOutcome> run_job(const JobSpec& spec);

// A port on 127.0.0.1 that was free a moment ago.
int free_port();

// Every rank's exit status and output, for assertion messages.
std::string describe(const std::vector<RankOutcome>& outcomes);

// Every rank exited 0 with a RESULT line.
::testing::AssertionResult all_succeeded(const std::vector<RankOutcome>& outcomes);

// Every rank exited 1 on its own with an ERROR line containing each of `fragments`.
::testing::AssertionResult all_failed_with(const std::vector<RankOutcome>& outcomes,
                                           const std::vector<std::string>& fragments);

}  // namespace strait::testing
