#include "strait/launch/rank_environment.h"

#include <charconv>
#include <cstdlib>

#include "strait/core/error.h"

namespace strait::launch {

namespace {

// The names one launcher gives the four counts every launcher provides, and how it tells a
// rank's node.
struct RankVariables {
  std::string launcher;
  std::string rank, world_size, local_rank, local_world_size;
  void (*read_node_rank)(const EnvironmentLookup& env, RankEnvironment& result);
};

// MPI launchers export no node rank; with ranks numbered node by node it follows from the rank.
void node_rank_from_rank(const EnvironmentLookup&, RankEnvironment& result) {
  result.node_rank = result.rank / result.local_world_size;
}

std::string assignment(const std::string& name, int value) { return name + "=" + std::to_string(value); }

int parse_integer(const std::string& name, const std::string& value) {
  int result = 0;
  const char* end = value.data() + value.size();
  auto [stop, error] = std::from_chars(value.data(), end, result);
  if (value.empty() || error != std::errc() || stop != end) {
    throw Error("environment variable " + name + "='" + value + "' is not an integer");
  }
  return result;
}

std::optional<int> optional_integer(const EnvironmentLookup& env, const std::string& name) {
  std::optional<std::string> value = env(name);
  if (!value) return std::nullopt;
  return parse_integer(name, *value);
}

// A launcher sets all four counts; a partial set means a hand-made or broken environment, and
// guessing the missing ones could silently run every process as rank 0.
int required_integer(const EnvironmentLookup& env, const std::string& name, const RankVariables& names) {
  std::optional<int> value = optional_integer(env, name);
  if (!value) {
    throw Error("environment variable " + name + " is not set, but other " + names.launcher +
                " rank variables are: " + names.rank + ", " + names.world_size + ", " + names.local_rank +
                " and " + names.local_world_size + " are all needed");
  }
  return *value;
}

bool any_set(const EnvironmentLookup& env, const RankVariables& names) {
  return env(names.rank) || env(names.world_size) || env(names.local_rank) || env(names.local_world_size);
}

RankEnvironment read_counts(const EnvironmentLookup& env, const RankVariables& names) {
  RankEnvironment result;
  result.launcher = names.launcher;
  result.rank = required_integer(env, names.rank, names);
  result.world_size = required_integer(env, names.world_size, names);
  result.local_rank = required_integer(env, names.local_rank, names);
  result.local_world_size = required_integer(env, names.local_world_size, names);
  return result;
}

void check_counts(const RankEnvironment& result, const RankVariables& names) {
  if (result.world_size < 1) throw Error(assignment(names.world_size, result.world_size) + " must be at least 1");
  if (result.local_world_size < 1 || result.local_world_size > result.world_size) {
    throw Error(assignment(names.local_world_size, result.local_world_size) + " must be between 1 and " +
                assignment(names.world_size, result.world_size));
  }
  if (result.world_size % result.local_world_size != 0) {
    throw Error(assignment(names.world_size, result.world_size) + " is not a multiple of " +
                assignment(names.local_world_size, result.local_world_size) +
                ": strait needs the same number of ranks on every node");
  }
  if (result.rank < 0 || result.rank >= result.world_size) {
    throw Error(assignment(names.rank, result.rank) + " is out of range for " +
                assignment(names.world_size, result.world_size));
  }
  if (result.local_rank < 0 || result.local_rank >= result.local_world_size) {
    throw Error(assignment(names.local_rank, result.local_rank) + " is out of range for " +
                assignment(names.local_world_size, result.local_world_size));
  }
}

// Node n must hold ranks n * local_world_size onwards: the topology-aware collectives derive
// every rank's node from its rank.
void check_numbered_node_by_node(const RankEnvironment& result, const RankVariables& names) {
  if (result.rank != result.node_rank * result.local_world_size + result.local_rank) {
    throw Error(assignment(names.rank, result.rank) + " is not node " + std::to_string(result.node_rank) +
                " * " + assignment(names.local_world_size, result.local_world_size) + " + " +
                assignment(names.local_rank, result.local_rank) +
                ": strait needs ranks numbered node by node (with mpirun: --map-by slot)");
  }
}

// torchrun names the node GROUP_RANK; strait launch sets it too and adds STRAIT_NODE_RANK. Plain
// env:// setups may set neither, and then the node follows from the rank.
void read_node_rank(const EnvironmentLookup& env, RankEnvironment& result) {
  std::optional<int> group_rank = optional_integer(env, "GROUP_RANK");
  std::optional<int> strait_node_rank = optional_integer(env, "STRAIT_NODE_RANK");
  if (group_rank && strait_node_rank && *group_rank != *strait_node_rank) {
    throw Error(assignment("GROUP_RANK", *group_rank) + " disagrees with " +
                assignment("STRAIT_NODE_RANK", *strait_node_rank));
  }
  if (strait_node_rank) result.launcher = "strait";
  if (strait_node_rank || group_rank) {
    result.node_rank = strait_node_rank ? *strait_node_rank : *group_rank;
  } else {
    node_rank_from_rank(env, result);
  }
}

const RankVariables kTorchrunVariables{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                       read_node_rank};
const RankVariables kOpenMpiVariables{"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                      "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                                      node_rank_from_rank};
const RankVariables kMpichVariables{"mpirun", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
                                    node_rank_from_rank};

void read_master(const EnvironmentLookup& env, RankEnvironment& result) {
  for (const char* name : {"MASTER_ADDR", "MASTER_PORT"}) {
    if (result.num_nodes > 1 && !env(name)) {
      throw Error(std::string("environment variable ") + name + " is not set, but the " +
                  std::to_string(result.world_size) + " ranks span " + std::to_string(result.num_nodes) +
                  " nodes: set MASTER_ADDR and MASTER_PORT to rank 0's host and a free port "
                  "(with mpirun: -x MASTER_ADDR=... -x MASTER_PORT=...)");
    }
  }
  if (std::optional<std::string> address = env("MASTER_ADDR")) {
    if (address->empty()) throw Error("environment variable MASTER_ADDR is empty");
    result.master_addr = *address;
  }
  if (std::optional<int> port = optional_integer(env, "MASTER_PORT")) {
    if (*port < 1 || *port > 65535) throw Error(assignment("MASTER_PORT", *port) + " is not a TCP port (1..65535)");
    result.master_port = *port;
  }
}

RankEnvironment read_launched(const EnvironmentLookup& env, const RankVariables& names) {
  RankEnvironment result = read_counts(env, names);
  check_counts(result, names);
  result.num_nodes = result.world_size / result.local_world_size;
  names.read_node_rank(env, result);
  check_numbered_node_by_node(result, names);
  read_master(env, result);
  result.launcher_serves_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  return result;
}

}  // namespace

RankEnvironment read_rank_environment(const EnvironmentLookup& env) {
  for (const RankVariables* names : {&kTorchrunVariables, &kOpenMpiVariables, &kMpichVariables}) {
    if (any_set(env, *names)) return read_launched(env, *names);
  }
  RankEnvironment single;
  read_master(env, single);
  return single;
}

RankEnvironment read_rank_environment() {
  return read_rank_environment([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace strait::launch
