// DDP, the baseline every other method is measured against, as an inner method: each rank of a
// replica computes gradients on its own slice of the replica's batch; every step they are
// averaged over the replica's group with bucketed all-reduces, clipped and applied.
//
// Buckets are filled in reverse parameter order (the order backward produces gradients in) up
// to `bucket_bytes`. During the step's last backward, a hook on each parameter's gradient
// accumulator notes when its gradient is complete; a bucket whose gradients are all complete is
// flattened into one buffer and its all-reduce started at once, so communication overlaps the
// rest of backward. Buckets are launched strictly in order (bucket i only after i-1): every
// // rank must issue collectives in the same order, whatever order its hooks happen to fire in.
// Each all-reduce runs in the background (comm::Work) while backward goes on; step() waits for
// them all. When the replica is the whole job and spans several nodes, the all-reduce is
// topology-aware (Communicator::hierarchical_all_reduce_sum): reduce-scatter inside the node,
// all-reduce of each local rank's slice across nodes, all-gather inside the node, so every
// gradient byte crosses the node boundary once.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "strait/comm/communicator.h"
#include "strait/strategy/inner.h"

namespace strait {

struct DdpOptions {
  int64_t bucket_bytes = 25 << 20;
  // Hierarchical all-reduce when the replica is the whole job and spans several nodes; flat
  // ring otherwise.
  bool hierarchical = true;
};

class DdpInner final : public InnerSync {
 public:
  // `replica` is this rank's replica group (the communicator's world() when DDP is the whole
  // strategy); the communicator must outlive this object.
  DdpInner(comm::Communicator& communicator, comm::Group& replica, DdpOptions options);

  std::string name() const override { return "ddp"; }
  void prepare(const LlamaModel& model) override;
  void before_backward(bool last) override;
  double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) override;
  double mean(double value, ReplicaVotes& votes) override;
  double take_blocked_seconds() override;
  nlohmann::json report() const override;

 private:
  struct Bucket {
    std::vector<torch::Tensor> parameters;  // in bucket order
    torch::Tensor buffer;                   // flat fp32, the sum of their numels
    size_t ready = 0;                       // parameters whose gradient is complete this step
    std::optional<comm::Work> reduction;    // set once launched
  };
  void build_buckets(const LlamaModel& model);
  // Waits for every bucket and leaves the replica's mean gradient in each parameter's .grad().
  void reduce_gradients(const LlamaModel& model);
  void on_gradient_ready(size_t bucket);
  void launch_ready_buckets();
  void launch(Bucket& bucket);
  comm::Work all_reduce(const torch::Tensor& buffer);

  comm::Communicator& comm_;
  comm::Group& replica_;
  DdpOptions options_;
  std::vector<Bucket> buckets_;
  size_t next_to_launch_ = 0;
  int64_t buckets_started_in_backward_ = 0;  // over the run, for the report
  double blocked_seconds_ = 0;               // waiting on reductions, since take_blocked_seconds()
  bool hooks_armed_ = false;  // only the step's last backward reduces
  // The parameters hold their gradient accumulators weakly: without these references the
  // accumulators (and the hooks on them) could be destroyed and the hooks silently never fire.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
};

}  // namespace strait
