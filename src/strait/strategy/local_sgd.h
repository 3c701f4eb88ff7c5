// Local SGD, the simplest outer method: every replica trains on its own data with its own
// optimizer for `sync_every` (H) steps, then the replicas' weights are averaged (ALGORITHMS.md
// section 2: DiLoCo's outer step with plain SGD, learning rate 1, no momentum) and every replica
// continues from the average. Between syncs no byte crosses a replica boundary; the inner
// optimizers' moments stay each replica's own (per-rank state in checkpoints).
#pragma once

#include <cstdint>

#include "strait/comm/group.h"
#include "strait/strategy/outer.h"

namespace strait {

class LocalSgd final : public OuterSync {
 public:
  // `replicas` links this rank with the ranks of the same index in every other replica; it must
  // outlive this object. Throws strait::Error if sync_every < 1.
  LocalSgd(comm::Group& replicas, int64_t sync_every);

  std::string name() const override { return "local-sgd"; }
  // Averages the weights over the replicas when step is a multiple of H or the final step.
  void after_step(int64_t step, LlamaModel& model, bool final_step) override;
  nlohmann::json report() const override;

 private:
  comm::Group& replicas_;
  int64_t sync_every_;
  int64_t syncs_ = 0;
  double seconds_blocked_ = 0.0;  // in outer syncs, over the run
  torch::Tensor flat_;            // (total parameter count) fp32: all weights in one all-reduce
};

}  // namespace strait
