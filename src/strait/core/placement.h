// Where a piece of training state lives across the ranks of a job.
#pragma once

namespace strait {

// Replicated: the same on every rank (rank 0 writes it once, every rank loads that copy).
// PerRank: each rank's own (every rank writes its copy, and resumes from it).
// Sharded: each rank holds a disjoint part (ZeRO-3's shards); the whole is their union.
enum class Placement { Replicated, PerRank, Sharded };

inline const char* to_string(Placement placement) {
  switch (placement) {
    case Placement::Replicated: return "replicated";
    case Placement::PerRank: return "per_rank";
    case Placement::Sharded: return "sharded";
  }
  return "?";
}

}  // namespace strait
