#include "strait/strategy/local_sgd.h"

#include <chrono>

#include "strait/core/error.h"

namespace strait {

LocalSgd::LocalSgd(comm::Group& replicas, int64_t sync_every) : replicas_(replicas), sync_every_(sync_every) {
  if (sync_every_ < 1) throw Error("local SGD: sync_every must be >= 1, got " + std::to_string(sync_every_));
}

void LocalSgd::after_step(int64_t step, LlamaModel& model, bool final_step) {
  if (step % sync_every_ != 0 && !final_step) return;
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const auto& parameters = model.parameters();
  if (!flat_.defined()) {
    int64_t count = 0;
    for (const auto& parameter : parameters) count += parameter.tensor.numel();
    flat_ = torch::empty({count}, torch::kFloat32);
  }
  // One all-reduce of every weight: fewer, larger messages suit a slow link.
  int64_t offset = 0;
  for (const auto& parameter : parameters) {
    const int64_t n = parameter.tensor.numel();
    flat_.narrow(0, offset, n).copy_(parameter.tensor.view({n}));
    offset += n;
  }
  replicas_.all_reduce_sum(flat_, "outer_allreduce_weights").wait();
  flat_.div_(static_cast<double>(replicas_.size()));
  offset = 0;
  for (const auto& parameter : parameters) {
    const int64_t n = parameter.tensor.numel();
    parameter.tensor.view({n}).copy_(flat_.narrow(0, offset, n));
    offset += n;
  }
  ++syncs_;
  seconds_blocked_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json LocalSgd::report() const {
  return {{"sync_every", sync_every_}, {"outer_syncs", syncs_}, {"outer_sync_seconds", seconds_blocked_}};
}

}  // namespace strait
