#include "strait/strategy/ddp.h"

#include "strait/core/checksum.h"
#include "strait/core/error.h"

namespace strait {

DdpStrategy::DdpStrategy(std::unique_ptr<comm::Communicator> communicator, DdpOptions options)
    : comm_(std::move(communicator)), options_(options), last_snapshot_(comm_->ledger().snapshot()) {
  if (options_.bucket_bytes <= 0) throw Error("DDP bucket size must be > 0 bytes");
}

int DdpStrategy::rank() const { return comm_->topology().rank; }
int DdpStrategy::world_size() const { return comm_->topology().world_size; }

void DdpStrategy::synchronize_weights(LlamaModel& model) {
  torch::NoGradGuard no_grad;
  if (buckets_.empty()) build_buckets(model);  // hooks in place before the first backward
  std::vector<comm::Work> pending;
  for (const auto& parameter : model.parameters()) {
    pending.push_back(comm_->world().broadcast(parameter.tensor, 0, "broadcast_weights"));
  }
  for (auto& work : pending) work.wait();
  // Verify rather than trust: every replica hashes its weights and compares with rank 0's.
  uint64_t hash = 0;
  for (const auto& parameter : model.parameters()) {
    auto contiguous = parameter.tensor.detach().contiguous();
    hash = xxh64(contiguous.data_ptr(), contiguous.numel() * contiguous.element_size(), hash);
  }
  auto hashes = torch::zeros({world_size()}, torch::kInt64);
  hashes[rank()] = static_cast<int64_t>(hash);
  comm_->world().all_reduce_sum(hashes, "weights_checksum").wait();
  for (int r = 0; r < world_size(); ++r) {
    if (hashes[r].item<int64_t>() != hashes[0].item<int64_t>()) {
      throw Error("weights of rank " + std::to_string(r) + " differ from rank 0's after the broadcast (checksum " +
                  std::to_string(hashes[r].item<int64_t>()) + " vs " + std::to_string(hashes[0].item<int64_t>()) + ")");
    }
  }
}

namespace {

// Runs a callback after a parameter's gradient accumulator has added this backward's
// contribution into .grad() (a post hook on the accumulator, not a hook on the gradient, which
// would fire before accumulation).
class GradientReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  explicit GradientReadyHook(std::function<void()> ready) : ready_(std::move(ready)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    ready_();
    return outputs;
  }

 private:
  std::function<void()> ready_;
};

}  // namespace

void DdpStrategy::build_buckets(const LlamaModel& model) {
  const auto& parameters = model.parameters();
  Bucket current;
  int64_t current_bytes = 0;
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    current.parameters.push_back(it->tensor);
    current_bytes += it->tensor.numel() * static_cast<int64_t>(sizeof(float));
    if (current_bytes >= options_.bucket_bytes) {
      buckets_.push_back(std::move(current));
      current = Bucket{};
      current_bytes = 0;
    }
  }
  if (!current.parameters.empty()) buckets_.push_back(std::move(current));
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t numel = 0;
    for (const auto& parameter : buckets_[b].parameters) {
      numel += parameter.numel();
      auto accumulator = torch::autograd::impl::grad_accumulator(parameter);
      accumulator->add_post_hook(std::make_unique<GradientReadyHook>([this, b] { on_gradient_ready(b); }));
      accumulators_.push_back(std::move(accumulator));
    }
    buckets_[b].buffer = torch::empty({numel}, torch::kFloat32);
  }
}

void DdpStrategy::before_backward(bool last) { hooks_armed_ = last; }

void DdpStrategy::on_gradient_ready(size_t bucket) {
  if (!hooks_armed_) return;  // an earlier micro-batch: gradients are still accumulating
  ++buckets_[bucket].ready;
  launch_ready_buckets();
}

void DdpStrategy::launch_ready_buckets() {
  while (next_to_launch_ < buckets_.size() &&
         buckets_[next_to_launch_].ready == buckets_[next_to_launch_].parameters.size()) {
    launch(buckets_[next_to_launch_++]);
    ++buckets_started_in_backward_;
  }
}

void DdpStrategy::launch(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& parameter : bucket.parameters) {
    const int64_t n = parameter.numel();
    auto slice = bucket.buffer.narrow(0, offset, n);
    if (parameter.grad().defined()) slice.copy_(parameter.grad().view({n}));
    else slice.zero_();  // a parameter this replica did not use contributes nothing
    offset += n;
  }
  bucket.reduction = all_reduce(bucket.buffer);
}

comm::Work DdpStrategy::all_reduce(const torch::Tensor& buffer) {
  if (options_.hierarchical && comm_->topology().num_nodes > 1) {
    return comm_->hierarchical_all_reduce_sum(buffer);  // three phases, one asynchronous Work
  }
  return comm_->world().all_reduce_sum(buffer, "allreduce_gradients");
}

void DdpStrategy::reduce_gradients(LlamaModel& model) {
  torch::NoGradGuard no_grad;
  if (buckets_.empty()) build_buckets(model);
  // Buckets the hooks did not start (the first step, unused parameters) start now, in order.
  while (next_to_launch_ < buckets_.size()) launch(buckets_[next_to_launch_++]);
  const double scale = 1.0 / static_cast<double>(world_size());
  for (auto& bucket : buckets_) {
    bucket.reduction->wait();
    bucket.buffer.mul_(scale);  // average = sum / replicas (this Gloo has no AVG)
    int64_t offset = 0;
    for (auto& parameter : bucket.parameters) {
      const int64_t n = parameter.numel();
      auto averaged = bucket.buffer.narrow(0, offset, n).view(parameter.sizes());
      if (parameter.grad().defined()) parameter.mutable_grad().copy_(averaged);
      else parameter.mutable_grad() = averaged.clone();
      offset += n;
    }
    bucket.ready = 0;
    bucket.reduction.reset();
  }
  next_to_launch_ = 0;
  hooks_armed_ = false;
}

double DdpStrategy::mean_over_replicas(double value) {
  auto scalar = torch::tensor({value}, torch::kFloat64);
  comm_->world().all_reduce_sum(scalar, "allreduce_metrics").wait();
  return scalar.item<double>() / static_cast<double>(world_size());
}

nlohmann::json DdpStrategy::take_step_traffic() {
  auto now = comm_->ledger().snapshot();
  auto step = now - last_snapshot_;
  last_snapshot_ = now;
  auto json = step.to_json();
  json.erase("operations");
  return json;
}

nlohmann::json DdpStrategy::report() {
  return {{"traffic", comm_->ledger().to_json()},
          {"buckets", buckets_.size()},
          {"buckets_started_during_backward", buckets_started_in_backward_}};
}

void DdpStrategy::barrier() { comm_->world().barrier().wait(); }

}  // namespace strait
