#include "strait/strategy/strategy.h"

namespace strait {

namespace {

class SingleProcessStrategy final : public Strategy {
 public:
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void synchronize_weights(LlamaModel&) override {}
  void before_backward(bool) override {}
  void reduce_gradients(LlamaModel&) override {}
  double mean_over_replicas(double value) override { return value; }
  nlohmann::json take_step_traffic() override { return nlohmann::json::object(); }
  nlohmann::json report() override { return nlohmann::json::object(); }
  void barrier() override {}
};

}  // namespace

std::unique_ptr<Strategy> make_single_process_strategy() { return std::make_unique<SingleProcessStrategy>(); }

}  // namespace strait
