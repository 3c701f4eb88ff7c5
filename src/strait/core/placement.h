// Where a piece of training state lives across the ranks of a job.
#pragma once

namespace strait {

// Replicated: the same on every rank (rank 0 writes it once, every rank loads that copy).
// PerRank: each rank's own (every rank writes its copy, and resumes from it).
enum class Placement { Replicated, PerRank };

inline const char* to_string(Placement placement) {
  return placement == Placement::Replicated ? "replicated" : "per_rank";
}

}  // namespace strait
