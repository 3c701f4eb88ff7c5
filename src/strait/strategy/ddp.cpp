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
  for (auto& bucket : buckets_) {
    int64_t numel = 0;
    for (const auto& parameter : bucket.parameters) numel += parameter.numel();
    bucket.buffer = torch::empty({numel}, torch::kFloat32);
  }
}

comm::Work DdpStrategy::all_reduce(const torch::Tensor& buffer) {
  if (options_.hierarchical && comm_->topology().num_nodes > 1) {
    comm_->hierarchical_all_reduce_sum(buffer);  // synchronous: three dependent phases
    return comm::Work{};                         // a finished Work
  }
  return comm_->world().all_reduce_sum(buffer, "allreduce_gradients");
}

void DdpStrategy::reduce_gradients(LlamaModel& model) {
  torch::NoGradGuard no_grad;
  if (buckets_.empty()) build_buckets(model);
  std::vector<comm::Work> pending;
  for (auto& bucket : buckets_) {
    int64_t offset = 0;
    for (const auto& parameter : bucket.parameters) {
      const int64_t n = parameter.numel();
      auto slice = bucket.buffer.narrow(0, offset, n);
      if (parameter.grad().defined()) slice.copy_(parameter.grad().view({n}));
      else slice.zero_();
      offset += n;
    }
    pending.push_back(all_reduce(bucket.buffer));
  }
  const double scale = 1.0 / static_cast<double>(world_size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending[b].wait();
    Bucket& bucket = buckets_[b];
    bucket.buffer.mul_(scale);  // average = sum / replicas (this Gloo has no AVG)
    int64_t offset = 0;
    for (auto& parameter : bucket.parameters) {
      const int64_t n = parameter.numel();
      auto averaged = bucket.buffer.narrow(0, offset, n).view(parameter.sizes());
      if (parameter.grad().defined()) parameter.mutable_grad().copy_(averaged);
      else parameter.mutable_grad() = averaged.clone();
      offset += n;
    }
  }
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

nlohmann::json DdpStrategy::traffic_totals() { return comm_->ledger().to_json(); }

void DdpStrategy::barrier() { comm_->world().barrier().wait(); }

}  // namespace strait
