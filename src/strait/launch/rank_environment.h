// Who this process is in a distributed run, whichever launcher started it: `strait launch`,
// torchrun, Open MPI's mpirun, MPICH's mpiexec (Hydra), or nothing (a single process).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace strait::launch {

struct RankEnvironment {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1, node_rank = 0, num_nodes = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "single";  // "strait", "torchrun", "mpirun" or "single"
  // torchrun's agent serves the rendezvous store itself (TORCHELASTIC_USE_AGENT_STORE=True).
  bool launcher_serves_store = false;
};

// Looks up one environment variable; nothing when it is not set.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads the rank variables of whichever launcher started this process, from `env`:
//  strait launch / torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (the node rank;
//    strait also sets STRAIT_NODE_RANK, which marks the launcher as "strait");
//  Open MPI: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
//    OMPI_COMM_WORLD_LOCAL_SIZE; MPICH/Hydra: PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
//    (node rank = rank / local size);
//  none of these: a single process.
// MASTER_ADDR and MASTER_PORT name the rendezvous; they default to 127.0.0.1:29500 only when all
// ranks are on one node. Ranks must be numbered node by node (node n holds ranks
// n * local_world_size ...), and world_size = local_world_size * num_nodes. Throws strait::Error
// naming the variable and its value for a missing, non-integer or inconsistent variable.
RankEnvironment read_rank_environment(const EnvironmentLookup& env);

// The same, from this process's real environment.
RankEnvironment read_rank_environment();

}  // namespace strait::launch
