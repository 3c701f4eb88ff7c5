// The outer half of a strategy: how replicas that train apart are brought together after
// optimizer steps. Outer methods talk only to the group that links one rank of each replica
// (the ranks with the same index inside their replicas), so an outer sync moves each replica's
// share of the model across the replica boundary once.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "strait/model/llama.h"

namespace strait {

class OuterSync {
 public:
  virtual ~OuterSync() = default;
  virtual std::string name() const = 0;
  // See Strategy::after_step.
  virtual void after_step(int64_t step, LlamaModel& model, bool final_step) = 0;
  // Method-specific figures for the run summary.
  virtual nlohmann::json report() const = 0;
};

}  // namespace strait
