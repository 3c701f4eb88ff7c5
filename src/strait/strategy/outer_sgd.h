// The outer methods of ALGORITHMS.md section 2, after every `sync_every` (H) inner steps (and at
// the run's last step):
//   local-sgd: the replicas' weights are averaged, θ ← mean_r θ_r; nothing else is kept.
//   diloco:    the pseudo-gradient Δ_r = θ − θ_r (θ: the weights every replica started the
//              window from) is averaged over the replicas, and SGD with (Nesterov) momentum
//              steps θ with it: m ← μ m + Δ; θ ← θ − lr (Δ + μ m) with Nesterov, θ − lr m without.
//              θ and m are the same on every rank: checkpoints keep them once.
//   sparseloco: DiLoCo's loop with SparseLoCo's exchange (sparse_exchange.h): the aggregate of
//              the replicas' error-fed, top-k, 2-bit payloads replaces the mean Δ, and the
//              outer step is plain SGD (momentum 0 by default: the decaying error buffer stands
//              in for it), θ ← θ − lr aggregate, lr applied once.
// Either way every replica continues from the new θ, and the ranks exchange a hash of it: a
// mismatch (quantized or not, the exchange promises identical bits) stops the run naming the
// replicas. Between syncs no byte crosses a replica boundary; the inner optimizers' moments stay
// each replica's own (per-rank state).
//
// Streaming DiLoCo (arXiv 2501.18512) splits the parameters into `fragments` P, strided layer
// groups: fragment p holds layers p, p + P, p + 2P, ... (the token embedding goes with layer 0's
// fragment, the final norm and output head with the last layer's). Fragment p syncs at the steps
// t with t mod H = p·H/P (integer division), so only a 1/P of the model crosses the replica
// boundary at a time: its Δ is taken at t, and its exchange runs in the background (on groups of
// its own, so it never interleaves with the inner method's collectives) while the replica trains
// `overlap_steps` τ further steps. At t + τ the outer step updates θ_p and the replica's fragment
// becomes α·(its weights now) + (1 − α)·θ_p, α = `fragment_mix` (with τ = 0 too). With P = 1,
// τ = 0, α = 0 (the defaults) this is DiLoCo, bit for bit. At the last step, fragments in
// flight are completed early, every other fragment syncs at once, and all of them take θ_p
// unmixed, so the run ends on θ, the same on every replica. With τ > 0 the hash of θ_p after
// its outer step is exchanged in the background too, behind the exchanges in flight (on a slow
// link its 8 bytes would otherwise wait behind theirs in the link's queue), and judged at the
// next fragment sync: a mismatch or a stop request takes effect one fragment sync later; the
// last step's checks are judged at once.
// Time-boxed inner phases (`sync_every_seconds` S > 0, local-sgd and diloco without streaming):
// a replica's inner phase ends at the first step that ends S seconds after the phase's first
// step ended, when some rank of the replica says its time is up
// (ReplicaVotes), so a faster replica runs more steps than a slower one instead of waiting for
// it. The replicas then exchange how many steps each ran (s_r, 8 bytes each) and weight their
// contributions by the tokens they trained: each sends R·s_r/Σs times its Δ_r (or weights), so
// the mean over replicas is the token-weighted mean Σ_r (s_r/Σs) Δ_r. With equal counts the
// factor is exactly 1. The run's progress is Σ s / R over all syncs (Strategy::synced_progress;
// the checkpoints keep the sum as "outer.replica_steps"). So that a run ends near `run_steps`
// rather than up to a whole phase past it, a phase that would pass it is shortened to the time
// the last phase took per step of progress times the steps left.
//
// A fragment in flight at a checkpoint is recorded, not cut short: the checkpoint's writer waits
// for its exchange and keeps the mean Δ ("outer.in_flight", flat, at the fragment's positions)
// and the step it started at ("outer.in_flight_since", -1 if none); a resumed run applies it at
// the same step as an uninterrupted one.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "strait/comm/lane.h"
#include "strait/model/tensor_io.h"
#include "strait/strategy/outer.h"
#include "strait/strategy/replica_exchange.h"

namespace strait {

struct OuterSgdOptions {
  enum class Rule { AverageWeights, Diloco, SparseLoCo };
  Rule rule = Rule::Diloco;
  int64_t sync_every = 50;
  double lr = 0.7;          // diloco and sparseloco
  double momentum = 0.9;    // diloco and sparseloco (0: no momentum state)
  bool nesterov = true;     // diloco and sparseloco
  codec::WireDtype wire = codec::WireDtype::Fp32;  // dense exchanges
  int64_t fragments = 1;      // diloco and sparseloco: P
  int64_t overlap_steps = 0;  // diloco only: τ, in [0, sync_every)
  double fragment_mix = 0.0;  // diloco and sparseloco: α, in [0, 1)
  double sync_every_seconds = 0;  // local-sgd and diloco without streaming: S (0: every sync_every steps)
  int64_t run_steps = 0;          // time-boxed: the run's length, which the last phase is cut to (0: none)
};

// Which fragment (of `fragments`) the parameter `name` (Hugging Face naming) belongs to, in a
// model of `layers` decoder layers.
int64_t fragment_of(const std::string& name, int64_t layers, int64_t fragments);

class OuterSgd final : public OuterSync {
 public:
  // `background` runs the exchanges that overlap inner steps; it must use groups that nothing
  // else uses, and is required exactly when overlap_steps > 0. Throws strait::Error on a
  // sync_every < 1, lr <= 0, momentum outside [0, 1), fragments < 1, overlap_steps outside
  // [0, sync_every), fragment_mix outside [0, 1), fragments with local-sgd, overlap with
  // anything but diloco, or sync_every_seconds < 0 or with sparseloco or streaming.
  OuterSgd(std::unique_ptr<OuterExchange> exchange, OuterSgdOptions options,
           std::unique_ptr<ReplicaExchange> background = nullptr);

  std::string name() const override;
  // Throws strait::Error if the model has fewer layers than fragments.
  void prepare(int64_t layers, const std::vector<NamedParameter>& weights) override;
  void start_from(const std::vector<NamedParameter>& weights) override;
  void after_step(int64_t step, const std::vector<NamedParameter>& weights, bool final_step) override;
  void offer_votes(ReplicaVotes votes) override { replica_votes_ = votes; }
  bool stop_agreed() const override { return stop_agreed_; }
  bool time_up() override;
  int64_t synced_progress() const override;
  NamedTensors state() override;
  NamedTensors rank_state() override { return exchange_->rank_state(); }
  nlohmann::json take_sync_metrics() override;
  nlohmann::json report() const override;

 private:
  struct Fragment {
    std::vector<std::pair<int64_t, int64_t>> ranges;  // (offset, count) in the flat parameter order
    int64_t size = 0;
    int64_t offset = 0;                 // syncs at the steps t with t mod H = offset
    torch::Tensor received;             // the background exchange's mean Δ, fragment-contiguous
    std::future<int64_t> exchange;      // bytes sent; valid until the exchange is waited for
  };

  static void flatten(const std::vector<NamedParameter>& weights, const torch::Tensor& into);
  static void unflatten(const torch::Tensor& from, const std::vector<NamedParameter>& weights);
  torch::Tensor gather(const torch::Tensor& flat, const Fragment& fragment) const;
  void scatter(const torch::Tensor& values, const torch::Tensor& flat, const Fragment& fragment) const;
  void average_weights(int64_t step, const std::vector<NamedParameter>& weights, nlohmann::json& figures);
  void start_sync(int64_t step, size_t index, const std::vector<NamedParameter>& weights, double mix,
                  nlohmann::json& figures);
  void finish_sync(int64_t step, size_t index, const std::vector<NamedParameter>& weights, const torch::Tensor& mean,
                   double mix, nlohmann::json& figures, bool check_in_background);
  void await_exchange(size_t index);
  bool in_flight(size_t index) const {
    return in_flight_since_.defined() && in_flight_since_[static_cast<int64_t>(index)].item<int64_t>() >= 0;
  }
  void simulate_silent_corruption(const torch::Tensor& weights) const;
  // Exchanges the hash of `weights` (θ after the outer step of `step`) and stops the run if the
  // replicas' differ. `in_background`: on the lane, behind the exchanges in flight, so that the
  // check does not wait behind their bytes in a slow link's queue; it is judged at the next
  // check (or checkpoint), the same step on every rank.
  void require_identical_replicas(const torch::Tensor& weights, int64_t step, bool in_background = false);
  void settle_checks();
  void judge_check(const std::vector<int64_t>& hashes, int64_t step);
  // Runs `task` on the lane, after everything posted before it; its result or exception arrives
  // through the future.
  template <typename Task>
  auto on_lane(Task task) -> std::future<decltype(task())> {
    auto done = std::make_shared<std::promise<decltype(task())>>();
    lane_.post([task = std::move(task), done] {
      try {
        done->set_value(task());
      } catch (...) {
        done->set_exception(std::current_exception());
      }
    });
    return done->get_future();
  }
  bool streaming() const { return options_.fragments > 1 || options_.overlap_steps > 0; }
  bool time_boxed() const { return options_.sync_every_seconds > 0; }
  int replicas() const { return exchange_->across() ? exchange_->across()->size() : 1; }
  void weigh_by_tokens(nlohmann::json& figures);
  void start_window();
  bool pseudo_gradients() const { return options_.rule != OuterSgdOptions::Rule::AverageWeights; }

  std::unique_ptr<OuterExchange> exchange_;
  std::unique_ptr<ReplicaExchange> background_;
  OuterSgdOptions options_;
  std::vector<Fragment> fragments_;
  torch::Tensor weights_;          // (parameters) fp32 scratch: this replica's weights, flat
  torch::Tensor global_;           // (parameters) fp32, pseudo-gradient rules: θ, the weights of the last outer steps
  torch::Tensor momentum_;         // (parameters) fp32, pseudo-gradient rules with momentum > 0: m
  torch::Tensor in_flight_;        // (parameters) fp32, overlap: mean Δ of fragments in flight
  torch::Tensor in_flight_since_;  // (fragments) int64, overlap: the step each started at, or -1
  int64_t syncs_ = 0;
  // Time-boxed phases: when this one started (none before the first step ended), the steps
  // this replica ran in it, the factor its contribution gets at the sync, the inner steps of
  // every replica together as of the last sync ((1) int64, checkpointed) and per replica
  // since this process started.
  std::optional<std::chrono::steady_clock::time_point> window_start_;
  int64_t window_steps_ = 0;
  double weight_ = 1.0;
  double phase_seconds_ = 0;  // this phase's time box: S, or less for the last
  torch::Tensor replica_steps_;
  std::vector<int64_t> steps_by_replica_;
  ReplicaVotes replica_votes_;      // see offer_votes
  bool stop_agreed_ = false;        // a replica's stop request arrived with an outer sync
  double seconds_blocked_ = 0.0;  // in outer syncs, over the run
  int64_t bytes_sent_ = 0;        // to other replicas by this rank, since the last metrics
  nlohmann::json last_sync_;      // the latest sync's figures, until taken
  struct PendingCheck {
    int64_t step;
    std::future<std::vector<int64_t>> hashes;
  };
  std::deque<PendingCheck> pending_checks_;  // weight checks on the lane, not yet judged
  comm::Lane lane_;               // last: stops (running what was posted) before the rest goes
};

}  // namespace strait
