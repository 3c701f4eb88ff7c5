#include "strait/strategy/outer_sgd.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/strategy/agreement.h"

namespace strait {

namespace {

// Adds `norm` to the figure `key` as the root of the sum of squares, so that several fragments
// at one step give the norm of their concatenation.
void add_norm(nlohmann::json& figures, const std::string& key, double norm) {
  const double earlier = figures.value(key, 0.0);
  figures[key] = std::sqrt(earlier * earlier + norm * norm);
}

void add_to_list(nlohmann::json& figures, const std::string& key, size_t index) {
  if (!figures.contains(key)) figures[key] = nlohmann::json::array();
  figures[key].push_back(index);
}

}  // namespace

int64_t fragment_of(const std::string& name, int64_t layers, int64_t fragments) {
  static const std::string kLayerPrefix = "model.layers.";
  if (name.rfind(kLayerPrefix, 0) == 0) return std::stoll(name.substr(kLayerPrefix.size())) % fragments;
  if (name.rfind("model.embed_tokens.", 0) == 0) return 0;
  return (layers - 1) % fragments;  // the final norm and the output head
}

OuterSgd::OuterSgd(std::unique_ptr<OuterExchange> exchange, OuterSgdOptions options,
                   std::unique_ptr<ReplicaExchange> background)
    : exchange_(std::move(exchange)), background_(std::move(background)), options_(options) {
  const std::string method = name();
  auto require = [&](bool ok, const std::string& problem) {
    if (!ok) throw Error(method + ": " + problem);
  };
  require(options_.sync_every >= 1, "sync_every must be >= 1, got " + std::to_string(options_.sync_every));
  require(options_.lr > 0, "outer lr must be > 0, got " + std::to_string(options_.lr));
  require(options_.momentum >= 0 && options_.momentum < 1,
          "outer momentum must be in [0, 1), got " + std::to_string(options_.momentum));
  require(options_.fragments >= 1, "fragments must be >= 1, got " + std::to_string(options_.fragments));
  require(options_.overlap_steps >= 0 && options_.overlap_steps < options_.sync_every,
          "overlap_steps must be in [0, sync_every = " + std::to_string(options_.sync_every) + "), got " +
              std::to_string(options_.overlap_steps));
  require(options_.fragment_mix >= 0 && options_.fragment_mix < 1,
          "fragment_mix must be in [0, 1), got " + std::to_string(options_.fragment_mix));
  require(pseudo_gradients() || !streaming(),
          "fragments and overlap_steps are streaming DiLoCo's (--strategy diloco or sparseloco)");
  require(options_.rule == OuterSgdOptions::Rule::Diloco || options_.overlap_steps == 0,
          "overlap_steps needs the dense exchange of --strategy diloco");
  require(options_.sync_every_seconds >= 0,
          "sync_every_seconds must be >= 0, got " + std::to_string(options_.sync_every_seconds));
  require(!time_boxed() || (options_.rule != OuterSgdOptions::Rule::SparseLoCo && !streaming() &&
                            options_.fragment_mix == 0),
          "sync_every_seconds needs the dense exchange of local-sgd or diloco, without streaming");
  require((background_ != nullptr) == (options_.overlap_steps > 0),
          "a background exchange is needed exactly when overlap_steps > 0");
}

std::string OuterSgd::name() const {
  switch (options_.rule) {
    case OuterSgdOptions::Rule::AverageWeights: return "local-sgd";
    case OuterSgdOptions::Rule::Diloco: return "diloco";
    case OuterSgdOptions::Rule::SparseLoCo: return "sparseloco";
  }
  return "?";
}

void OuterSgd::prepare(int64_t layers, const std::vector<NamedParameter>& weights) {
  if (options_.fragments > layers) {
    throw Error(name() + ": " + std::to_string(options_.fragments) + " fragments need at least as many layers, but the model has " +
                std::to_string(layers));
  }
  fragments_ = std::vector<Fragment>(static_cast<size_t>(options_.fragments));
  std::vector<std::vector<std::vector<int64_t>>> shapes(fragments_.size());  // per fragment, in its order
  int64_t count = 0;
  for (const auto& parameter : weights) {
    const int64_t n = parameter.tensor.numel();
    const auto fragment = static_cast<size_t>(fragment_of(parameter.name, layers, options_.fragments));
    shapes[fragment].push_back(parameter.tensor.sizes().vec());
    auto& ranges = fragments_[fragment].ranges;
    if (!ranges.empty() && ranges.back().first + ranges.back().second == count) {
      ranges.back().second += n;  // contiguous with the fragment's previous parameter
    } else {
      ranges.emplace_back(count, n);
    }
    count += n;
  }
  for (size_t p = 0; p < fragments_.size(); ++p) {
    for (const auto& range : fragments_[p].ranges) fragments_[p].size += range.second;
    fragments_[p].offset = static_cast<int64_t>(p) * options_.sync_every / options_.fragments;
  }
  exchange_->prepare(shapes);
  weights_ = torch::zeros({count}, torch::kFloat32);
  if (pseudo_gradients()) global_ = torch::zeros({count}, torch::kFloat32);
  if (pseudo_gradients() && options_.momentum > 0) momentum_ = torch::zeros({count}, torch::kFloat32);
  if (time_boxed()) {
    phase_seconds_ = options_.sync_every_seconds;
    replica_steps_ = torch::zeros({1}, torch::kInt64);
    steps_by_replica_.assign(static_cast<size_t>(replicas()), 0);
  }
  if (options_.overlap_steps > 0) {
    in_flight_ = torch::zeros({count}, torch::kFloat32);
    in_flight_since_ = torch::full({options_.fragments}, int64_t{-1}, torch::kInt64);
  }
}

void OuterSgd::start_from(const std::vector<NamedParameter>& weights) {
  if (global_.defined()) flatten(weights, global_);
}

void OuterSgd::flatten(const std::vector<NamedParameter>& weights, const torch::Tensor& into) {
  int64_t offset = 0;
  for (const auto& parameter : weights) {
    const int64_t n = parameter.tensor.numel();
    into.narrow(0, offset, n).copy_(parameter.tensor.detach().reshape({n}));
    offset += n;
  }
}

void OuterSgd::unflatten(const torch::Tensor& from, const std::vector<NamedParameter>& weights) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& parameter : weights) {
    const int64_t n = parameter.tensor.numel();
    parameter.tensor.view({n}).copy_(from.narrow(0, offset, n));
    offset += n;
  }
}

// The fragment's values of `flat`, contiguous: a view when the fragment is one range (P = 1),
// so DiLoCo works on its flat tensors in place.
torch::Tensor OuterSgd::gather(const torch::Tensor& flat, const Fragment& fragment) const {
  if (fragment.ranges.size() == 1) return flat.narrow(0, fragment.ranges[0].first, fragment.ranges[0].second);
  std::vector<torch::Tensor> parts;
  for (const auto& [offset, n] : fragment.ranges) parts.push_back(flat.narrow(0, offset, n));
  return torch::cat(parts);
}

void OuterSgd::scatter(const torch::Tensor& values, const torch::Tensor& flat, const Fragment& fragment) const {
  if (fragment.ranges.size() == 1 && values.data_ptr<float>() == flat.data_ptr<float>() + fragment.ranges[0].first) {
    return;  // `values` is gather's view of `flat`
  }
  int64_t position = 0;
  for (const auto& [offset, n] : fragment.ranges) {
    flat.narrow(0, offset, n).copy_(values.narrow(0, position, n));
    position += n;
  }
}

bool OuterSgd::time_up() {
  if (!time_boxed()) return false;
  const auto now = std::chrono::steady_clock::now();
  if (!window_start_) {
    window_start_ = now;  // a phase's clock starts when its first step ended
    return false;
  }
  return std::chrono::duration<double>(now - *window_start_).count() >= phase_seconds_;
}

int64_t OuterSgd::synced_progress() const {
  return time_boxed() ? replica_steps_.item<int64_t>() / replicas() : -1;
}

// Time-boxed: the replicas tell each other how many steps each ran in this phase, and this
// replica's contribution gets the factor R·s_r/Σs (see the header).
void OuterSgd::weigh_by_tokens(nlohmann::json& figures) {
  std::vector<int64_t> steps = {window_steps_};
  if (exchange_->across() != nullptr) steps = gather_int64(*exchange_->across(), window_steps_, "outer_replica_steps");
  int64_t total = 0;
  for (size_t r = 0; r < steps.size(); ++r) {
    // A peer's count is untrusted: a replica runs at least one step per phase, and a count that
    // does not fit the sums below is not one a replica could have run.
    if (steps[r] < 1 || steps[r] > (int64_t{1} << 40)) {
      throw Error(name() + ": replica " + std::to_string(r) + " reports " + std::to_string(steps[r]) +
                  " inner steps in a time-boxed phase; expected at least 1");
    }
    total += steps[r];
    steps_by_replica_[r] += steps[r];
  }
  const size_t mine = exchange_->across() ? static_cast<size_t>(exchange_->across()->rank()) : 0;
  weight_ = static_cast<double>(steps.size()) * static_cast<double>(steps[mine]) / static_cast<double>(total);
  replica_steps_ += total;
  // The next phase: S, or the part of it that the steps left need at this phase's pace (the
  // same on every rank: it follows from the counts they all have).
  const double progress_per_phase = static_cast<double>(total) / static_cast<double>(steps.size());
  const auto left = static_cast<double>(options_.run_steps - synced_progress());
  const double share = options_.run_steps > 0 ? std::clamp(left / progress_per_phase, 0.0, 1.0) : 1.0;
  phase_seconds_ = options_.sync_every_seconds * share;
  figures["replica_steps"] = steps;
  figures["progress"] = synced_progress();
}

// The next phase's clock starts when its first step ended: what the trainer does right after a
// sync (validation, a checkpoint) is not inner-phase time.
void OuterSgd::start_window() {
  window_steps_ = 0;
  window_start_.reset();
}

void OuterSgd::after_step(int64_t step, const std::vector<NamedParameter>& weights, bool final_step) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  nlohmann::json figures = {{"step", step}};
  if (time_boxed()) {
    ++window_steps_;
    if (!replica_votes_.time_up && !final_step) return;
    weigh_by_tokens(figures);
  }
  if (!pseudo_gradients()) {
    if (!time_boxed() && step % options_.sync_every != 0 && !final_step) return;
    average_weights(step, weights, figures);
  } else {
    // A time-boxed phase ends now (P = 1: the one fragment's offset is 0).
    const int64_t window_step = time_boxed() ? 0 : step % options_.sync_every;
    std::vector<bool> synced(fragments_.size(), false);  // applied at this step
    for (size_t p = 0; p < fragments_.size(); ++p) {
      if (fragments_[p].offset != window_step) continue;
      start_sync(step, p, weights, options_.overlap_steps == 0 ? (final_step ? 0.0 : options_.fragment_mix) : -1.0,
                 figures);
      synced[p] = options_.overlap_steps == 0;
    }
    for (size_t p = 0; p < fragments_.size(); ++p) {
      if (!in_flight(p)) continue;
      const int64_t since = in_flight_since_[static_cast<int64_t>(p)].item<int64_t>();
      if (step - since < options_.overlap_steps && !final_step) continue;
      await_exchange(p);
      finish_sync(step, p, weights, gather(in_flight_, fragments_[p]), final_step ? 0.0 : options_.fragment_mix, figures,
                  /*check_in_background=*/!final_step);
      in_flight_since_[static_cast<int64_t>(p)] = -1;
      synced[p] = true;
    }
    // The run ends on θ, the same on every replica: every fragment not just applied syncs now,
    // and the last syncs replace the replicas' fragments instead of mixing.
    for (size_t p = 0; p < fragments_.size() && final_step; ++p) {
      if (!synced[p]) start_sync(step, p, weights, 0.0, figures);
    }
    if (figures.size() == 1) return;  // nothing due at this step
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  seconds_blocked_ += seconds;
  figures["blocked_ms"] = seconds * 1000.0;
  figures["bytes_sent"] = bytes_sent_;
  bytes_sent_ = 0;
  last_sync_ = std::move(figures);
  if (time_boxed()) start_window();
}

void OuterSgd::average_weights(int64_t step, const std::vector<NamedParameter>& weights, nlohmann::json& figures) {
  flatten(weights, weights_);
  if (weight_ != 1.0) weights_.mul_(weight_);
  bytes_sent_ += exchange_->aggregate(0, weights_, "outer_weights", figures);
  simulate_silent_corruption(weights_);
  unflatten(weights_, weights);
  require_identical_replicas(weights_, step);
  ++syncs_;
}

// Takes fragment `index`'s pseudo-gradient Δ = θ − θ_r from the replica's weights now, and
// exchanges it: at once, then the outer step with fragment mix `mix` (>= 0), or in the
// background (mix < 0).
void OuterSgd::start_sync(int64_t step, size_t index, const std::vector<NamedParameter>& weights, double mix,
                          nlohmann::json& figures) {
  Fragment& fragment = fragments_[index];
  flatten(weights, weights_);
  torch::Tensor pseudo_gradient = gather(global_, fragment) - gather(weights_, fragment);
  add_norm(figures, "pseudo_gradient_norm", pseudo_gradient.norm().item<double>());
  if (weight_ != 1.0) pseudo_gradient.mul_(weight_);
  if (streaming()) add_to_list(figures, "fragments_started", index);
  if (mix >= 0) {
    bytes_sent_ += exchange_->aggregate(index, pseudo_gradient, "outer_pseudo_gradient", figures);
    finish_sync(step, index, weights, pseudo_gradient, mix, figures, /*check_in_background=*/false);
    return;
  }
  fragment.received = pseudo_gradient;
  in_flight_since_[static_cast<int64_t>(index)] = step;
  fragment.exchange = on_lane([exchange = background_.get(), values = fragment.received] {
    return exchange->mean(values, "outer_pseudo_gradient");
  });
}

// Waits for fragment `index`'s background exchange, if still running, and records its mean Δ
// in in_flight_ (where checkpoints keep it).
void OuterSgd::await_exchange(size_t index) {
  Fragment& fragment = fragments_[index];
  if (!fragment.exchange.valid()) return;  // waited already, or restored from a checkpoint
  bytes_sent_ += fragment.exchange.get();
  scatter(fragment.received, in_flight_, fragment);
  fragment.received = torch::Tensor();
}

// The outer step of fragment `index` with the replicas' mean Δ (consumed), then the replica's
// fragment becomes mix·(its weights now) + (1 − mix)·θ_p.
void OuterSgd::finish_sync(int64_t step, size_t index, const std::vector<NamedParameter>& weights,
                           const torch::Tensor& mean, double mix, nlohmann::json& figures, bool check_in_background) {
  const Fragment& fragment = fragments_[index];
  add_norm(figures, "mean_pseudo_gradient_norm", mean.norm().item<double>());
  if (streaming()) add_to_list(figures, "fragments_applied", index);
  torch::Tensor global = gather(global_, fragment);
  torch::Tensor update = mean;  // without momentum
  if (momentum_.defined()) {
    torch::Tensor momentum = gather(momentum_, fragment);
    momentum.mul_(options_.momentum).add_(mean);
    update = options_.nesterov ? mean.add_(momentum, options_.momentum) : momentum;
    scatter(momentum, momentum_, fragment);
  }
  global.sub_(update, options_.lr);
  simulate_silent_corruption(global);
  scatter(global, global_, fragment);
  flatten(weights, weights_);
  torch::Tensor local = gather(weights_, fragment);
  if (mix == 0) {
    local.copy_(global);  // exactly θ_p (mixing with 0 would round)
  } else {
    local.mul_(mix).add_(global, 1.0 - mix);
  }
  scatter(local, weights_, fragment);
  unflatten(weights_, weights);
  require_identical_replicas(global, step, check_in_background);
  ++syncs_;
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

void OuterSgd::require_identical_replicas(const torch::Tensor& weights, int64_t step, bool in_background) {
  if (exchange_->across() == nullptr) {  // one process
    stop_agreed_ = stop_agreed_ || replica_votes_.stop;
    return;
  }
  settle_checks();
  // The lowest bit carries the replica's stop request (preemption) across replicas at this
  // sync, in the 8 bytes the check sends anyway; the other 63 bits are the weights' hash.
  const auto hash = static_cast<int64_t>(xxh64(weights.data_ptr(), weights.numel() * sizeof(float), 0));
  const int64_t value = (hash & ~int64_t{1}) | (replica_votes_.stop ? 1 : 0);
  if (!in_background) {
    judge_check(gather_int64(*exchange_->across(), value, "outer_weights_checksum"), step);
    return;
  }
  pending_checks_.push_back({step, on_lane([across = background_->across(), value] {
                               return gather_int64(*across, value, "outer_weights_checksum");
                             })});
}

void OuterSgd::settle_checks() {
  for (; !pending_checks_.empty(); pending_checks_.pop_front()) {
    judge_check(pending_checks_.front().hashes.get(), pending_checks_.front().step);
  }
}

// Every replica's hash (with its stop bit) of the weights after the outer step of `step`, in
// replica order: a stop request is agreed, and a hash that differs from replica 0's stops the run.
void OuterSgd::judge_check(const std::vector<int64_t>& hashes, int64_t step) {
  const std::vector<int>& members = exchange_->across()->members();
  std::string differences;
  for (size_t r = 0; r < hashes.size(); ++r) {
    if (hashes[r] & 1) stop_agreed_ = true;
    if (r > 0 && (hashes[r] | 1) != (hashes[0] | 1)) {
      differences += (differences.empty() ? "" : ", ") + std::string("replica ") + std::to_string(r) + " (rank " +
                     std::to_string(members[r]) + ")";
    }
  }
  if (!differences.empty()) {
    throw Error(name() + ": after the outer step of step " + std::to_string(step) + " the weights of " + differences +
                " differ from replica 0's (rank " + std::to_string(members[0]) +
                "); the replicas would silently train apart");
  }
}

NamedTensors OuterSgd::state() {
  if (!global_.defined()) return replica_steps_.defined() ? NamedTensors{{"outer.replica_steps", replica_steps_}} : NamedTensors{};
  NamedTensors state = {{"outer.weights", global_}};
  if (momentum_.defined()) state.emplace_back("outer.momentum", momentum_);
  if (replica_steps_.defined()) state.emplace_back("outer.replica_steps", replica_steps_);
  if (!in_flight_.defined()) return state;
  for (size_t p = 0; p < fragments_.size(); ++p) {
    if (in_flight(p)) await_exchange(p);
  }
  settle_checks();  // nothing of the lane's outlives a checkpoint
  state.emplace_back("outer.in_flight", in_flight_);
  state.emplace_back("outer.in_flight_since", in_flight_since_);
  return state;
}

nlohmann::json OuterSgd::take_sync_metrics() {
  nlohmann::json taken = std::move(last_sync_);
  last_sync_ = nlohmann::json::object();
  return taken.is_null() ? nlohmann::json::object() : taken;
}

nlohmann::json OuterSgd::report() const {
  nlohmann::json report = {{"sync_every", options_.sync_every},
                           {"outer_dtype", codec::to_string(options_.wire)},
                           {"outer_syncs", syncs_},  // fragment syncs with streaming
                           {"outer_sync_seconds", seconds_blocked_}};
  if (time_boxed()) {
    report["sync_every_seconds"] = options_.sync_every_seconds;
    report["replica_steps"] = steps_by_replica_;  // each replica's inner steps in this process's syncs
  }
  if (pseudo_gradients()) {
    report["outer_lr"] = options_.lr;
    report["outer_momentum"] = options_.momentum;
    report["outer_nesterov"] = options_.nesterov;
    report["fragments"] = options_.fragments;
    report["overlap_steps"] = options_.overlap_steps;
    report["fragment_mix"] = options_.fragment_mix;
  }
  return report;
}

}  // namespace strait
