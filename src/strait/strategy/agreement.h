// Checking that ranks agree: every member's value of a small integer (a step, a weight hash),
// gathered so that each member sees all of them and can name the ones that differ.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "strait/comm/group.h"

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

}  // namespace strait
