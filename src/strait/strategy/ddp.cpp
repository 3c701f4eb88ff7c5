#include "strait/strategy/ddp.h"

#include <chrono>
#include <cmath>
#include <utility>

#include "strait/core/error.h"
#include "strait/strategy/agreement.h"

namespace strait {

DdpInner::DdpInner(comm::Communicator& communicator, comm::Group& replica, DdpOptions options)
    : comm_(communicator), replica_(replica), options_(options) {
  if (options_.bucket_bytes <= 0) throw Error("DDP bucket size must be > 0 bytes");
}

void DdpInner::prepare(const LlamaModel& model) {
  if (buckets_.empty()) build_buckets(model);  // hooks in place before the first backward
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

void DdpInner::build_buckets(const LlamaModel& model) {
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

void DdpInner::before_backward(bool last) { hooks_armed_ = last; }

void DdpInner::on_gradient_ready(size_t bucket) {
  if (!hooks_armed_) return;  // an earlier micro-batch: gradients are still accumulating
  ++buckets_[bucket].ready;
  launch_ready_buckets();
}

void DdpInner::launch_ready_buckets() {
  while (next_to_launch_ < buckets_.size() &&
         buckets_[next_to_launch_].ready == buckets_[next_to_launch_].parameters.size()) {
    launch(buckets_[next_to_launch_++]);
    ++buckets_started_in_backward_;
  }
}

void DdpInner::launch(Bucket& bucket) {
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

comm::Work DdpInner::all_reduce(const torch::Tensor& buffer) {
  const bool whole_job = &replica_ == &comm_.world();
  if (options_.hierarchical && whole_job && comm_.topology().num_nodes > 1) {
    return comm_.hierarchical_all_reduce_sum(buffer);
  }
  return replica_.all_reduce_sum(buffer, "allreduce_gradients");
}

double DdpInner::step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) {
  reduce_gradients(model);
  // Every rank holds the same averaged gradient, so the norm and the update are the same too.
  const double norm = clip_grad_norm(model.parameters(), max_norm);
  optimizer.step(lr);
  return norm;
}

void DdpInner::reduce_gradients(const LlamaModel& model) {
  torch::NoGradGuard no_grad;
  prepare(model);
  // Buckets the hooks did not start (the first step, unused parameters) start now, in order.
  while (next_to_launch_ < buckets_.size()) launch(buckets_[next_to_launch_++]);
  const double scale = 1.0 / static_cast<double>(replica_.size());
  for (auto& bucket : buckets_) {
    const auto wait_start = std::chrono::steady_clock::now();
    bucket.reduction->wait();
    blocked_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
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

double DdpInner::take_blocked_seconds() { return std::exchange(blocked_seconds_, 0.0); }

double DdpInner::mean(double value, ReplicaVotes& votes) { return mean_with_votes(replica_, value, votes); }

nlohmann::json DdpInner::report() const {
  return {{"buckets", buckets_.size()}, {"buckets_started_during_backward", buckets_started_in_backward_}};
}

}  // namespace strait
