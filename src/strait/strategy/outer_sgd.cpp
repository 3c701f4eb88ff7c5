#include "strait/strategy/outer_sgd.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/strategy/agreement.h"

namespace strait {

OuterSgd::OuterSgd(std::unique_ptr<ReplicaExchange> exchange, OuterSgdOptions options)
    : exchange_(std::move(exchange)), options_(options) {
  const std::string method = name();
  if (options_.sync_every < 1) {
    throw Error(method + ": sync_every must be >= 1, got " + std::to_string(options_.sync_every));
  }
  if (!(options_.lr > 0)) throw Error(method + ": outer lr must be > 0, got " + std::to_string(options_.lr));
  if (options_.momentum < 0 || options_.momentum >= 1) {
    throw Error(method + ": outer momentum must be in [0, 1), got " + std::to_string(options_.momentum));
  }
}

std::string OuterSgd::name() const {
  return options_.rule == OuterSgdOptions::Rule::Diloco ? "diloco" : "local-sgd";
}

void OuterSgd::prepare(const LlamaModel& model) {
  int64_t count = 0;
  for (const auto& parameter : model.parameters()) count += parameter.tensor.numel();
  weights_ = torch::zeros({count}, torch::kFloat32);
  if (options_.rule == OuterSgdOptions::Rule::Diloco) {
    global_ = torch::zeros({count}, torch::kFloat32);
    momentum_ = torch::zeros({count}, torch::kFloat32);
  }
}

void OuterSgd::start_from(const LlamaModel& model) {
  if (global_.defined()) flatten(model, global_);
}

void OuterSgd::flatten(const LlamaModel& model, const torch::Tensor& into) const {
  int64_t offset = 0;
  for (const auto& parameter : model.parameters()) {
    const int64_t n = parameter.tensor.numel();
    into.narrow(0, offset, n).copy_(parameter.tensor.detach().reshape({n}));
    offset += n;
  }
}

void OuterSgd::unflatten(const torch::Tensor& from, LlamaModel& model) const {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& parameter : model.parameters()) {
    const int64_t n = parameter.tensor.numel();
    parameter.tensor.view({n}).copy_(from.narrow(0, offset, n));
    offset += n;
  }
}

void OuterSgd::after_step(int64_t step, LlamaModel& model, bool final_step) {
  if (step % options_.sync_every != 0 && !final_step) return;
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  flatten(model, weights_);
  nlohmann::json figures = {{"step", step}};
  if (options_.rule == OuterSgdOptions::Rule::AverageWeights) {
    exchange_->mean(weights_, "outer_weights");
  } else {
    torch::Tensor pseudo_gradient = global_ - weights_;  // Δ = θ − θ_r
    figures["pseudo_gradient_norm"] = pseudo_gradient.norm().item<double>();
    exchange_->mean(pseudo_gradient, "outer_pseudo_gradient");
    figures["mean_pseudo_gradient_norm"] = pseudo_gradient.norm().item<double>();
    momentum_.mul_(options_.momentum).add_(pseudo_gradient);
    const torch::Tensor update =
        options_.nesterov ? pseudo_gradient.add_(momentum_, options_.momentum) : momentum_;
    global_.sub_(update, options_.lr);
    weights_.copy_(global_);
  }
  simulate_silent_corruption(weights_);
  unflatten(weights_, model);
  require_identical_replicas(weights_, step);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++syncs_;
  seconds_blocked_ += seconds;
  figures["blocked_ms"] = seconds * 1000.0;
  last_sync_ = std::move(figures);
}

// Fault injection for tests: STRAIT_TEST_DESYNC_RANK=R moves global rank R's weights by one
// step of float32 rounding after every outer step, as a silent corruption of the exchange would,
// so a test can show that the hash check stops the run.
void OuterSgd::simulate_silent_corruption(const torch::Tensor& weights) const {
  const char* rank = std::getenv("STRAIT_TEST_DESYNC_RANK");
  comm::Group* across = exchange_->across();
  if (rank == nullptr || across == nullptr || across->members()[across->rank()] != std::atoi(rank)) return;
  weights[0] = std::nextafter(weights[0].item<float>(), std::numeric_limits<float>::infinity());
}

void OuterSgd::require_identical_replicas(const torch::Tensor& weights, int64_t step) {
  if (exchange_->across() == nullptr) return;  // one replica
  comm::Group& across = *exchange_->across();
  const auto hash = static_cast<int64_t>(xxh64(weights.data_ptr(), weights.numel() * sizeof(float), 0));
  const std::vector<int64_t> hashes = gather_int64(across, hash, "outer_weights_checksum");
  std::string differences;
  for (int r = 1; r < across.size(); ++r) {
    if (hashes[r] != hashes[0]) {
      differences += (differences.empty() ? "" : ", ") + std::string("replica ") + std::to_string(r) + " (rank " +
                     std::to_string(across.members()[r]) + ")";
    }
  }
  if (!differences.empty()) {
    throw Error(name() + ": after the outer step of step " + std::to_string(step) + " the weights of " + differences +
                " differ from replica 0's (rank " + std::to_string(across.members()[0]) +
                "); the replicas would silently train apart");
  }
}

NamedTensors OuterSgd::state() {
  if (!global_.defined()) return {};
  return {{"outer.weights", global_}, {"outer.momentum", momentum_}};
}

nlohmann::json OuterSgd::take_sync_metrics() {
  nlohmann::json taken = std::move(last_sync_);
  last_sync_ = nlohmann::json::object();
  return taken.is_null() ? nlohmann::json::object() : taken;
}

nlohmann::json OuterSgd::report() const {
  nlohmann::json report = {{"sync_every", options_.sync_every},
                           {"outer_dtype", codec::to_string(options_.wire)},
                           {"outer_syncs", syncs_},
                           {"outer_sync_seconds", seconds_blocked_}};
  if (options_.rule == OuterSgdOptions::Rule::Diloco) {
    report["outer_lr"] = options_.lr;
    report["outer_momentum"] = options_.momentum;
    report["outer_nesterov"] = options_.nesterov;
  }
  return report;
}

}  // namespace strait
