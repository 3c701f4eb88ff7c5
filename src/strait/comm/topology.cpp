#include "strait/comm/topology.h"

#include "strait/core/error.h"

namespace strait::comm {

namespace {

void require(bool ok, const std::string& field, int value, const std::string& expected) {
  if (!ok) {
    throw Error("topology: " + field + " is " + std::to_string(value) + " (expected " + expected + ")");
  }
}

std::string range_text(int end) { return "in [0, " + std::to_string(end) + ")"; }

}  // namespace

Topology Topology::of_rank(int rank, int world_size, int local_world_size) {
  require(local_world_size >= 1, "local_world_size", local_world_size, ">= 1");
  require(world_size >= 1 && world_size % local_world_size == 0, "world_size", world_size,
          "a positive multiple of local_world_size " + std::to_string(local_world_size));
  Topology topology{rank,
                    world_size,
                    rank % local_world_size,
                    local_world_size,
                    rank / local_world_size,
                    world_size / local_world_size};
  topology.validate();
  return topology;
}

void Topology::validate() const {
  require(local_world_size >= 1, "local_world_size", local_world_size, ">= 1");
  require(num_nodes >= 1, "num_nodes", num_nodes, ">= 1");
  require(world_size == local_world_size * num_nodes, "world_size", world_size,
          "local_world_size * num_nodes = " + std::to_string(local_world_size * num_nodes));
  require(rank >= 0 && rank < world_size, "rank", rank, range_text(world_size));
  require(local_rank == rank % local_world_size, "local_rank", local_rank,
          std::to_string(rank % local_world_size) + ": ranks of a node are contiguous");
  require(node_rank == rank / local_world_size, "node_rank", node_rank,
          std::to_string(rank / local_world_size) + ": ranks of a node are contiguous");
}

int Topology::node_of(int global_rank) const {
  require(global_rank >= 0 && global_rank < world_size, "a peer's global rank", global_rank, range_text(world_size));
  return global_rank / local_world_size;
}

bool Topology::same_node(int global_rank_a, int global_rank_b) const {
  return node_of(global_rank_a) == node_of(global_rank_b);
}

std::vector<int> Topology::ranks_of_node(int node) const {
  require(node >= 0 && node < num_nodes, "node", node, range_text(num_nodes));
  std::vector<int> ranks;
  for (int local = 0; local < local_world_size; ++local) ranks.push_back(node * local_world_size + local);
  return ranks;
}

std::vector<int> Topology::ranks_with_local_rank(int local) const {
  require(local >= 0 && local < local_world_size, "local rank", local, range_text(local_world_size));
  std::vector<int> ranks;
  for (int node = 0; node < num_nodes; ++node) ranks.push_back(node * local_world_size + local);
  return ranks;
}

std::string Topology::describe() const {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (node " + std::to_string(node_rank) +
         " of " + std::to_string(num_nodes) + ", local rank " + std::to_string(local_rank) + " of " +
         std::to_string(local_world_size) + ")";
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::string text;
  for (size_t i = 0; i < ranks.size(); ++i) text += (i ? ", " : "") + std::to_string(ranks[i]);
  return text;
}

}  // namespace strait::comm
