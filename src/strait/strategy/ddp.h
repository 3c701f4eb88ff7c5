// DDP, the baseline every other method is measured against: each replica computes gradients on
// its own slice of the global batch; every step they are averaged with bucketed all-reduces.
//
// Buckets are filled in reverse parameter order (the order backward produces gradients in) up
// to `bucket_bytes`, each flattened into one buffer and all-reduced asynchronously, so the
// buckets' reductions are in flight together. With more than one node the all-reduce is
// topology-aware (Communicator::hierarchical_all_reduce_sum): reduce-scatter inside the node,
// all-reduce of each local rank's slice across nodes, all-gather inside the node, so every
// gradient byte crosses the node boundary once.
#pragma once

#include <memory>
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
  void reduce_gradients(LlamaModel& model) override;
  double mean_over_replicas(double value) override;
  nlohmann::json take_step_traffic() override;
  nlohmann::json traffic_totals() override;
  void barrier() override;

 private:
  struct Bucket {
    std::vector<torch::Tensor> parameters;  // in bucket order
    torch::Tensor buffer;                   // flat fp32, the sum of their numels
  };
  void build_buckets(const LlamaModel& model);
  comm::Work all_reduce(const torch::Tensor& buffer);

  std::unique_ptr<comm::Communicator> comm_;
  DdpOptions options_;
  std::vector<Bucket> buckets_;
  comm::LedgerSnapshot last_snapshot_;
};

}  // namespace strait
