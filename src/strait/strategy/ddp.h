// DDP, the baseline every other method is measured against: each replica computes gradients on
// its own slice of the global batch; every step they are averaged with bucketed all-reduces.
//
// Buckets are filled in reverse parameter order (the order backward produces gradients in) up
// to `bucket_bytes`. During the step's last backward, a hook on each parameter's gradient
// accumulator notes when its gradient is complete; a bucket whose gradients are all complete is
// flattened into one buffer and its all-reduce started at once, so communication overlaps the
// rest of backward. Buckets are launched strictly in order (bucket i only after i-1): every
// rank must issue collectives in the same order, whatever order its hooks happen to fire in. With more than one node the all-reduce is
// topology-aware (Communicator::hierarchical_all_reduce_sum): reduce-scatter inside the node,
// all-reduce of each local rank's slice across nodes, all-gather inside the node, so every
// gradient byte crosses the node boundary once.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "strait/comm/communicator.h"
#include "strait/strategy/strategy.h"

namespace strait {

struct DdpOptions {
  int64_t bucket_bytes = 25 << 20;
  // Hierarchical all-reduce when the job spans several nodes; flat ring otherwise.
  bool hierarchical = true;
};

class DdpStrategy final : public Strategy {
 public:
  DdpStrategy(std::unique_ptr<comm::Communicator> communicator, DdpOptions options);

  std::string name() const override { return "ddp"; }
  int rank() const override;
  int world_size() const override;
  void synchronize_weights(LlamaModel& model) override;
  void before_backward(bool last) override;
  void reduce_gradients(LlamaModel& model) override;
  double mean_over_replicas(double value) override;
  nlohmann::json take_step_traffic() override;
  nlohmann::json report() override;
  void barrier() override;

 private:
  struct Bucket {
    std::vector<torch::Tensor> parameters;  // in bucket order
    torch::Tensor buffer;                   // flat fp32, the sum of their numels
    size_t ready = 0;                       // parameters whose gradient is complete this step
    std::optional<comm::Work> reduction;    // set once launched
  };
  void build_buckets(const LlamaModel& model);
  void on_gradient_ready(size_t bucket);
  void launch_ready_buckets();
  void launch(Bucket& bucket);
  comm::Work all_reduce(const torch::Tensor& buffer);

  std::unique_ptr<comm::Communicator> comm_;
  DdpOptions options_;
  std::vector<Bucket> buckets_;
  size_t next_to_launch_ = 0;
  int64_t buckets_started_in_backward_ = 0;  // over the run, for the report
  bool hooks_armed_ = false;  // only the step's last backward reduces
  // The parameters hold their gradient accumulators weakly: without these references the
  // accumulators (and the hooks on them) could be destroyed and the hooks silently never fire.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  comm::LedgerSnapshot last_snapshot_;
};

}  // namespace strait
