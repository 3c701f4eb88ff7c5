// Where a rank sits in the job: its node and its place inside the node.
//
// Ranks of one node are contiguous: node n holds global ranks [n * local_world_size,
// (n + 1) * local_world_size). Launchers (strait launch, torchrun, mpirun with --map-by node
// off) number ranks this way, and the intra-node and cross-node groups rely on it.
#pragma once

#include <string>
#include <vector>

namespace strait::comm {

struct Topology {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  int num_nodes = 1;

  // Derives the node fields from a global rank. Throws strait::Error if world_size is not a
  // multiple of local_world_size or the rank is out of range.
  static Topology of_rank(int rank, int world_size, int local_world_size);

  // Throws strait::Error naming the first inconsistent field and what it should be.
  void validate() const;

  int node_of(int global_rank) const;
  bool same_node(int global_rank_a, int global_rank_b) const;

  // Global ranks of node `node`, ascending.
  std::vector<int> ranks_of_node(int node) const;
  // Global ranks with local rank `local`, one per node, ascending.
  std::vector<int> ranks_with_local_rank(int local) const;

  // e.g. "rank 3 of 4 (node 1 of 2, local rank 1 of 2)"
  std::string describe() const;
};

// "0, 2, 3": a list of ranks for messages.
std::string join_ranks(const std::vector<int>& ranks);

}  // namespace strait::comm
