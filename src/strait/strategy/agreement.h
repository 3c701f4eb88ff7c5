// Checking that ranks agree: every member's value of a small integer (a step, a weight hash),
// gathered so that each member sees all of them and can name the ones that differ.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "strait/comm/group.h"
#include "strait/strategy/outer.h"

namespace strait {

// Every member's `value`, in group rank order; every member must call it.
inline std::vector<int64_t> gather_int64(comm::Group& group, int64_t value, const std::string& label) {
  torch::Tensor mine = torch::tensor({value}, torch::kInt64);
  std::vector<torch::Tensor> all;
  for (int i = 0; i < group.size(); ++i) all.push_back(torch::empty({1}, torch::kInt64));
  group.all_gather(mine, all, label).wait();
  std::vector<int64_t> values;
  for (const auto& tensor : all) values.push_back(tensor.item<int64_t>());
  return values;
}

// The mean of a per-rank scalar over `group`; each of `votes` (this rank's) becomes true on every
// member if any member's was. The votes ride in the same all-reduce as the value, in one float64:
// each rank adds stop + (n + 1) time_up, so the sum holds the count of each (exact: small integers).
inline double mean_with_votes(comm::Group& group, double value, ReplicaVotes& votes) {
  const double base = static_cast<double>(group.size() + 1);
  auto scalars = torch::tensor({value, (votes.stop ? 1.0 : 0.0) + (votes.time_up ? base : 0.0)}, torch::kFloat64);
  group.all_reduce_sum(scalars, "allreduce_metrics").wait();
  const double counts = scalars[1].item<double>();
  votes.stop = std::fmod(counts, base) > 0;
  votes.time_up = counts >= base;
  return scalars[0].item<double>() / static_cast<double>(group.size());
}

}  // namespace strait
