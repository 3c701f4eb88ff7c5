// The one Strategy implementation: an inner method inside each replica composed with an
// optional outer method across replicas, plus what every composition needs (weight
// synchronisation at start-up, metric means, agreement checks, traffic figures).
#include <cstdlib>
#include <iostream>

#include "strait/comm/communicator.h"
#include "strait/core/checksum.h"
#include "strait/core/memory.h"
#include "strait/core/error.h"
#include "strait/launch/rank_environment.h"
#include "strait/model/model_config.h"
#include "strait/strategy/agreement.h"
#include "strait/strategy/ddp.h"
#include "strait/strategy/outer_sgd.h"
#include "strait/strategy/sparse_exchange.h"
#include "strait/strategy/strategy.h"
#include "strait/strategy/zero3.h"

namespace strait {

namespace {

class SingleInner final : public InnerSync {
 public:
  std::string name() const override { return "single"; }
  void prepare(const LlamaModel&) override {}
  void before_backward(bool) override {}
  double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) override {
    const double norm = clip_grad_norm(model.parameters(), max_norm);
    optimizer.step(lr);
    return norm;
  }
  double mean(double value, ReplicaVotes&) override { return value; }
  double take_blocked_seconds() override { return 0; }
  nlohmann::json report() const override { return nlohmann::json::object(); }
};

uint64_t weights_hash(const LlamaModel& model) {
  uint64_t hash = 0;
  for (const auto& parameter : model.parameters()) {
    auto contiguous = parameter.tensor.detach().contiguous();
    hash = xxh64(contiguous.data_ptr(), contiguous.numel() * contiguous.element_size(), hash);
  }
  return hash;
}

class ComposedStrategy final : public Strategy {
 public:
  // Without a communicator (one process) `replica` is null; an outer method then averages over
  // the one replica (DiLoCo still takes its outer step).
  ComposedStrategy(std::string name, std::unique_ptr<comm::Communicator> communicator, comm::Group* replica,
                   std::unique_ptr<InnerSync> inner, std::unique_ptr<OuterSync> outer, Placement placement)
      : name_(std::move(name)),
        comm_(std::move(communicator)),
        replica_(replica),
        inner_(std::move(inner)),
        outer_(std::move(outer)),
        placement_(placement) {
    if (comm_) last_snapshot_ = comm_->ledger().snapshot();
  }

  std::string name() const override { return name_; }
  int rank() const override { return comm_ ? comm_->topology().rank : 0; }
  int world_size() const override { return comm_ ? comm_->topology().world_size : 1; }
  int replica_index() const override { return replica_ ? replica_->members()[0] / replica_->size() : 0; }
  int replica_ranks() const override { return replica_ ? replica_->size() : 1; }
  bool has_outer_method() const override { return outer_ != nullptr; }
  Placement model_placement() const override { return placement_; }

  void prepare(const LlamaModel& model) override {
    inner_->prepare(model);
    if (outer_) outer_->prepare(model.config().num_layers, inner_->replica_weights(model));
  }

  // The outer method's state is the same on every rank, except with ZeRO-3 inside, where each
  // rank keeps the part of it that belongs to its shard: checkpoints then keep it per rank.
  NamedTensors replicated_state() override {
    return outer_ && placement_ != Placement::Sharded ? outer_->state() : NamedTensors{};
  }
  NamedTensors rank_state() override {
    if (!outer_) return {};
    NamedTensors state = outer_->rank_state();
    if (placement_ == Placement::Sharded) {
      for (auto& entry : outer_->state()) state.push_back(std::move(entry));
    }
    return state;
  }

  double take_blocked_seconds() override { return inner_->take_blocked_seconds(); }

  nlohmann::json take_outer_sync() override {
    return outer_ ? outer_->take_sync_metrics() : nlohmann::json::object();
  }

  void synchronize_weights(LlamaModel& model, bool restored) override {
    if (comm_) agree_on_weights(model, restored);
    // A fresh run's outer method starts from the agreed weights; a restored one has its own θ.
    if (outer_ && !restored) outer_->start_from(inner_->replica_weights(model));
  }

  TrainableParameters trainable_parameters(LlamaModel& model) override { return inner_->trainable_parameters(model); }

  MicroBatchResult forward_backward(LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets,
                                    double loss_divisor, bool last) override {
    return inner_->forward_backward(model, inputs, targets, loss_divisor, last);
  }

  double batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) override {
    return inner_->batch_loss(model, inputs, targets);
  }

  double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) override {
    return inner_->step(model, optimizer, lr, max_norm);
  }

  void after_step(int64_t step, LlamaModel& model, bool final_step) override {
    if (!outer_) return;
    outer_->offer_votes(replica_votes_);
    outer_->after_step(step, inner_->replica_weights(model), final_step);
    inner_->replica_weights_written();
  }

  int64_t synced_progress() const override { return outer_ ? outer_->synced_progress() : -1; }

  double mean_over_replica(double value) override {
    replica_votes_ = {stop_requested_, outer_ && outer_->time_up()};
    return inner_->mean(value, replica_votes_);
  }

  void request_stop() override { stop_requested_ = true; }

  // One process stops at once; DDP (one replica of every rank) once its replica agreed; outer
  // methods once the request crossed replicas with an outer sync.
  bool stop_agreed() const override {
    if (!comm_) return stop_requested_;
    return outer_ ? outer_->stop_agreed() : replica_votes_.stop;
  }

  double mean_over_all(double value) override {
    if (!comm_) return value;
    auto scalar = torch::tensor({value}, torch::kFloat64);
    comm_->world().all_reduce_sum(scalar, "allreduce_metrics").wait();
    return scalar.item<double>() / static_cast<double>(world_size());
  }

  void require_same_everywhere(const std::string& what, int64_t value) override {
    if (!comm_) return;
    const std::vector<int64_t> values = gather_int64(comm_->world(), value, "allgather_agreement");
    std::string differences;
    for (size_t r = 1; r < values.size(); ++r) {
      if (values[r] != values[0]) {
        differences += std::string(differences.empty() ? "" : "; ") + "rank " + std::to_string(r) + " has " + what +
                       "=" + std::to_string(values[r]) + " where rank 0 has " + what + "=" + std::to_string(values[0]);
      }
    }
    if (!differences.empty()) throw Error("ranks disagree: " + differences);
  }

  void wait_for_every_rank(const std::string& what) override {
    if (comm_) comm_->wait_for_every_rank(what);
  }

  nlohmann::json take_step_traffic() override {
    if (!comm_) return nlohmann::json::object();
    auto now = comm_->ledger().snapshot();
    auto step = now - last_snapshot_;
    last_snapshot_ = now;
    auto json = step.to_json();
    json.erase("operations");
    return json;
  }

  nlohmann::json report() override {
    nlohmann::json report = inner_->report();
    if (outer_) report.update(outer_->report());
    if (!comm_) return report;
    report["replica_ranks"] = replica_->size();
    report["replicas"] = world_size() / replica_->size();
    report["nodes"] = comm_->topology().num_nodes;  // what "cross-node" means in the figures below
    report["traffic"] = comm_->ledger().to_json();  // before the gathers below add to it
    report["traffic_by_rank"] = traffic_by_rank();
    return report;
  }

 private:
  // Makes every rank hold the weights it should before training: rank 0's fresh weights, or each
  // rank's restored ones, checked to agree where they must.
  void agree_on_weights(LlamaModel& model, bool restored) {
    if (restored && placement_ == Placement::PerRank) {
      // Each rank loaded its own replica's weights; the ranks of one replica must agree.
      require_same_weights(*replica_, model, "after loading the checkpoint");
      return;
    }
    if (placement_ == Placement::Sharded) {
      // Restored: each rank loaded its own shard. Fresh: every rank initialised the same weights
      // from the seed; checked, not broadcast, since each rank keeps only its shard of them.
      if (!restored) require_same_weights(comm_->world(), model, "after initialisation");
    } else {
      torch::NoGradGuard no_grad;
      std::vector<comm::Work> pending;
      for (const auto& parameter : model.parameters()) {
        pending.push_back(comm_->world().broadcast(parameter.tensor, 0, "broadcast_weights"));
      }
      for (auto& work : pending) work.wait();
      require_same_weights(comm_->world(), model, "after the broadcast");
    }
    inner_->weights_synchronized(model, restored);
  }

  void require_same_weights(comm::Group& group, const LlamaModel& model, const std::string& when) {
    const std::vector<int64_t> hashes =
        gather_int64(group, static_cast<int64_t>(weights_hash(model)), "weights_checksum");
    for (size_t r = 0; r < hashes.size(); ++r) {
      if (hashes[r] != hashes[0]) {
        throw Error("weights of rank " + std::to_string(group.members()[r]) + " differ from rank " +
                    std::to_string(group.members()[0]) + "'s " + when + " (checksum " + std::to_string(hashes[r]) +
                    " vs " + std::to_string(hashes[0]) + ")");
      }
    }
  }

  // Every rank's ledger totals, so a node's traffic can be summed over its ranks, the bytes
  // each rank sent to other replicas (the outer exchanges, without their in-replica gathers),
  // and each rank's peak resident memory so far.
  nlohmann::json traffic_by_rank() {
    const comm::LedgerSnapshot snapshot = comm_->ledger().snapshot();
    uint64_t cross_replica = 0;
    for (const auto& [operation, traffic] : snapshot.operations) {
      const bool outer = operation.rfind("outer_", 0) == 0;
      const bool in_replica = operation.size() >= 11 && operation.compare(operation.size() - 11, 11, "/in_replica") == 0;
      if (outer && !in_replica) cross_replica += traffic.links.intra_node.sent + traffic.links.cross_node.sent;
    }
    const comm::LinkTraffic& totals = snapshot.totals;
    const std::vector<uint64_t> figures = {totals.intra_node.sent, totals.intra_node.received, totals.cross_node.sent,
                                           totals.cross_node.received, cross_replica, peak_resident_bytes()};
    const auto count = static_cast<int64_t>(figures.size());
    torch::Tensor mine = torch::empty({count}, torch::kInt64);
    for (int64_t i = 0; i < count; ++i) mine[i] = static_cast<int64_t>(figures[i]);
    std::vector<torch::Tensor> all;
    for (int i = 0; i < world_size(); ++i) all.push_back(torch::empty({count}, torch::kInt64));
    comm_->world().all_gather(mine, all, "allgather_traffic").wait();
    nlohmann::json by_rank = nlohmann::json::array();
    for (const auto& entry : all) {
      const int64_t* v = entry.data_ptr<int64_t>();
      by_rank.push_back({{"intra_node", {{"sent", v[0]}, {"received", v[1]}}},
                         {"cross_node", {{"sent", v[2]}, {"received", v[3]}}},
                         {"cross_replica", {{"sent", v[4]}}},
                         {"peak_resident_bytes", v[5]}});
    }
    return by_rank;
  }

  std::string name_;
  std::unique_ptr<comm::Communicator> comm_;
  comm::Group* replica_;
  std::unique_ptr<InnerSync> inner_;
  std::unique_ptr<OuterSync> outer_;
  Placement placement_;
  comm::LedgerSnapshot last_snapshot_;
  bool stop_requested_ = false;  // this rank was asked to stop
  ReplicaVotes replica_votes_;   // what the replica's ranks agreed on at the last mean_over_replica
};

// How the job's ranks are grouped, resolved from the configuration and the launcher's
// environment; every check happens here, before any process connects.
struct Layout {
  bool has_outer = false;
  int replica_ranks = 1;      // ranks per replica
  std::string inner;          // "single", "ddp" or "zero3"
};

Layout resolve_layout(const TrainConfig& config, const launch::RankEnvironment& environment) {
  Layout layout;
  const int world = environment.world_size;
  layout.has_outer = has_outer_method(config);
  if (!layout.has_outer) {
    layout.replica_ranks = world;
  } else if (config.replica_ranks == "node") {
    layout.replica_ranks = environment.local_world_size;
  } else if (config.replica_ranks != "auto") {
    layout.replica_ranks = std::stoi(config.replica_ranks);  // validate() checked the form
  }
  if (world % layout.replica_ranks != 0) {
    throw Error("invalid configuration: replica_ranks " + std::to_string(layout.replica_ranks) +
                " does not divide the " + std::to_string(world) + " ranks of this job into whole replicas");
  }
  layout.inner = config.strategy == "zero3" ? "zero3"
                 : config.inner == "auto"    ? (layout.replica_ranks > 1 ? "ddp" : "single")
                                             : config.inner;
  if (layout.inner == "zero3") {
    if (layout.replica_ranks < 2) {
      throw Error(layout.has_outer
                      ? "invalid configuration: inner zero3 shards each replica's model over its ranks and needs replicas "
                        "of at least 2 ranks (use --replica-ranks N / node)"
                      : "invalid configuration: strategy zero3 shards the model over the job's ranks and needs at least 2 "
                        "(launch several processes, or use the single-process strategy)");
    }
    const int per_node = environment.local_world_size;
    if (config.zero_hpz_partition_size > 1 && config.zero_hpz_partition_size != per_node) {
      throw Error("invalid configuration: zero_hpz_partition_size " + std::to_string(config.zero_hpz_partition_size) +
                  " must be 1 (off) or the ranks per node, " + std::to_string(per_node) +
                  " in this job (hpZ keeps one secondary copy of the weights per node)");
    }
    // hpZ and qgZ group a replica's ranks by node: a replica must be whole nodes.
    if ((config.zero_hpz_partition_size > 1 || config.zero_quantized_gradients) && layout.replica_ranks % per_node != 0) {
      throw Error("invalid configuration: zero_hpz_partition_size and zero_quantized_gradients group a replica's ranks "
                  "by node, but replicas of " + std::to_string(layout.replica_ranks) + " ranks split nodes of " +
                  std::to_string(per_node) + " (use --replica-ranks node or a multiple of the ranks per node)");
    }
    return layout;
  }
  if (layout.inner == "single" && layout.replica_ranks > 1) {
    throw Error("invalid configuration: inner single needs one-rank replicas, but replicas have " +
                std::to_string(layout.replica_ranks) + " ranks (use --inner ddp, or --replica-ranks 1)");
  }
  if (layout.inner == "ddp" && layout.replica_ranks == 1 && world > 1) {
    throw Error("invalid configuration: inner ddp needs replicas of at least 2 ranks, but replica_ranks is 1 "
                "(use --inner single, or --replica-ranks N / node)");
  }
  return layout;
}

std::string interface_for(const TrainConfig& config) {
  if (!config.gloo_interface.empty()) return config.gloo_interface;
  const char* from_environment = std::getenv("GLOO_SOCKET_IFNAME");  // PyTorch's variable
  return from_environment ? from_environment : "";
}

// After the ranks found that their settings' hashes differ (every rank learns it alike): each
// rank's settings, all-gathered, and the keys in which each differs from rank 0's, e.g.
// "; rank 1 differs from rank 0 in: seed 7 on rank 1 vs 1337 on rank 0". A peer's bytes are
// untrusted: unreadable settings are said to be; if the gather itself fails, nothing is added.
std::string settings_differences(comm::Communicator& communicator, const std::string& dump) {
  std::vector<std::vector<uint8_t>> all;
  try {
    communicator.world().all_gather_bytes({dump.begin(), dump.end()}, all, "allgather_settings", 1 << 20).wait();
  } catch (const Error&) {
    return "";
  }
  auto parse = [](const std::vector<uint8_t>& bytes) {
    return nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  };
  const nlohmann::json reference = parse(all[0]);
  std::string text;
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json theirs = parse(all[r]);
    const std::string rank = "rank " + std::to_string(r);
    const std::string differences =
        theirs.is_discarded() || reference.is_discarded()
            ? "settings that cannot be read"
            : describe_differences(theirs, "on " + rank, reference, "on rank 0");
    if (!differences.empty()) text += "; " + rank + " differs from rank 0 in: " + differences;
  }
  return text;
}

std::unique_ptr<comm::Communicator> connect(const TrainConfig& config, const launch::RankEnvironment& environment) {
  comm::CommOptions options;
  options.topology = {environment.rank,       environment.world_size, environment.local_rank,
                      environment.local_world_size, environment.node_rank, environment.num_nodes};
  options.master_addr = environment.master_addr;
  options.master_port = environment.master_port;
  options.launcher_serves_store = environment.launcher_serves_store;
  options.interface = interface_for(config);
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(config.comm_timeout_s * 1000.0));
  options.wait_timeout = std::chrono::milliseconds(static_cast<int64_t>(config.checkpoint_timeout_s * 1000.0));
  auto communicator = comm::Communicator::create(options);
  // Ranks started with different options would silently train different things; per-machine
  // settings (paths, interface, threads) may differ.
  const std::string dump = shared_settings(config).dump();
  try {
    communicator->check_consistency(xxh64_hex(dump.data(), dump.size()));
  } catch (const Error& disagreement) {
    throw Error(std::string(disagreement.what()) + settings_differences(*communicator, dump));
  }
  return communicator;
}

std::vector<int> ranks_from(int first, int count, int stride) {
  std::vector<int> ranks;
  for (int i = 0; i < count; ++i) ranks.push_back(first + i * stride);
  return ranks;
}

// The outer method the configuration names, exchanging over `replica` and `across` (null: one
// process); `background` holds the groups of the exchanges that overlap inner steps (null
// groups for one process).
struct ExchangeGroups {
  comm::Group* replica = nullptr;
  comm::Group* across = nullptr;
};

codec::SparseOptions sparse_options_of(const TrainConfig& config) {
  codec::SparseOptions options;
  options.topk = config.topk;
  options.quant_bins = static_cast<int>(config.quant_bins);
  options.error_decay = config.error_decay;
  options.index_coding = codec::index_coding(config.index_coding);
  return options;
}

std::unique_ptr<OuterSync> make_outer(const TrainConfig& config, ExchangeGroups groups, ExchangeGroups background) {
  OuterSgdOptions options;
  options.rule = config.strategy == "diloco"       ? OuterSgdOptions::Rule::Diloco
                 : config.strategy == "sparseloco" ? OuterSgdOptions::Rule::SparseLoCo
                                                   : OuterSgdOptions::Rule::AverageWeights;
  options.sync_every = config.sync_every;
  options.lr = outer_lr_of(config);
  options.momentum = outer_momentum_of(config);
  options.nesterov = config.outer_nesterov;
  options.wire = codec::parse_wire_dtype(config.outer_dtype);
  options.fragments = config.fragments;
  options.overlap_steps = config.overlap_steps;
  options.fragment_mix = config.fragment_mix;
  options.sync_every_seconds = config.sync_every_seconds;
  options.run_steps = config.steps;
  std::unique_ptr<ReplicaExchange> overlapping;
  if (options.overlap_steps > 0) {
    overlapping = std::make_unique<ReplicaExchange>(background.replica, background.across, options.wire);
  }
  std::unique_ptr<OuterExchange> exchange;
  if (options.rule == OuterSgdOptions::Rule::SparseLoCo) {
    exchange = std::make_unique<SparseExchange>(groups.replica, groups.across, sparse_options_of(config),
                                                config.aggregate == "sum" ? codec::Aggregation::Sum
                                                                          : codec::Aggregation::Mean);
  } else {
    exchange = std::make_unique<ReplicaExchange>(groups.replica, groups.across, options.wire);
  }
  return std::make_unique<OuterSgd>(std::move(exchange), options, std::move(overlapping));
}

}  // namespace

std::unique_ptr<Strategy> make_strategy(const TrainConfig& config, const launch::RankEnvironment& environment) {
  const Layout layout = resolve_layout(config, environment);
  const int64_t layers = model_config_for(config, 256).num_layers;  // the vocabulary does not matter here
  if (config.fragments > layers) {
    throw Error("invalid configuration: fragments " + std::to_string(config.fragments) +
                " > the model's " + std::to_string(layers) + " layers (each fragment is a group of whole layers)");
  }
  const int world = environment.world_size;
  const int replicas = world / layout.replica_ranks;
  for (const auto& [replica, factor] : parse_throttle(config.throttle)) {
    if (replica >= replicas) {
      throw Error("invalid configuration: throttle names replica " + std::to_string(replica) + ", but the job has " +
                  std::to_string(replicas) + " replica" + (replicas == 1 ? "" : "s") + " (0.." +
                  std::to_string(replicas - 1) + ")");
    }
  }
  std::string name = layout.inner;
  if (layout.has_outer) name = config.strategy + "(" + layout.inner + " x " + std::to_string(layout.replica_ranks) + ")";
  const Placement placement = layout.inner == "zero3" ? Placement::Sharded
                              : layout.has_outer      ? Placement::PerRank
                                                      : Placement::Replicated;
  if (world == 1) {
    std::unique_ptr<OuterSync> outer;
    if (layout.has_outer) outer = make_outer(config, {}, {});
    return std::make_unique<ComposedStrategy>(name, nullptr, nullptr, std::make_unique<SingleInner>(),
                                              std::move(outer), placement);
  }
  auto communicator = connect(config, environment);
  const int rank = environment.rank;
  // Every rank makes its replica's group, then its outer group, so groups connect in one order.
  comm::Group* replica = &communicator->world();
  if (layout.replica_ranks < world) {
    const int index = rank / layout.replica_ranks;
    replica = &communicator->make_group(ranks_from(index * layout.replica_ranks, layout.replica_ranks, 1),
                                        "replica[" + std::to_string(index) + "]");
  }
  std::unique_ptr<InnerSync> inner;
  if (layout.inner == "ddp") {
    DdpOptions ddp;
    ddp.bucket_bytes = static_cast<int64_t>(config.bucket_mb * (1 << 20));
    inner = std::make_unique<DdpInner>(*communicator, *replica, ddp);
  } else if (layout.inner == "zero3") {
    ZeroOptions zero;
    zero.wire = codec::parse_wire_dtype(config.zero_wire_dtype);
    zero.quantized_weights = config.zero_quantized_weights;
    zero.hpz_partition_size = static_cast<int>(config.zero_hpz_partition_size);
    zero.skip_hpz_refresh = std::getenv("STRAIT_TEST_SKIP_HPZ_REFRESH") != nullptr;  // tests only (docs/ARCHITECTURE.md)
    std::unique_ptr<comm::QuantizedReduceScatter> quantized_gradients;
    const comm::Topology& topology = communicator->topology();
    const int replica_nodes = layout.replica_ranks / topology.local_world_size;  // whole nodes with qgZ
    if (config.zero_quantized_gradients && replica_nodes == 1) {
      if (rank == 0) {
        std::cerr << "strait: note: --zero-quantized-gradients has no effect on one node (each replica here is one): "
                     "qgZ's int4 all-to-all saves cross-node bytes, so gradients are reduce-scattered as usual\n";
      }
    } else if (config.zero_quantized_gradients) {
      // Groups of its own: qgZ runs on a thread of its own, and a group's collectives must all
      // come from one thread. Node group first, then the cross-node one (this rank's position on
      // each node of its replica), on every rank.
      const int first_node = (rank / layout.replica_ranks) * replica_nodes;
      comm::Group& node = communicator->make_group(
          ranks_from(topology.node_rank * topology.local_world_size, topology.local_world_size, 1),
          "qgz_node[" + std::to_string(topology.node_rank) + "]");
      comm::Group& across = communicator->make_group(
          ranks_from(first_node * topology.local_world_size + topology.local_rank, replica_nodes,
                     topology.local_world_size),
          "qgz_across[" + std::to_string(first_node) + "][" + std::to_string(topology.local_rank) + "]");
      quantized_gradients = std::make_unique<comm::QuantizedReduceScatter>(node, across);
    }
    inner = std::make_unique<ZeroInner>(*replica, &communicator->intra_node(), zero, std::move(quantized_gradients));
  } else {
    inner = std::make_unique<SingleInner>();
  }
  std::unique_ptr<OuterSync> outer;
  if (layout.has_outer) {
    const int position = rank % layout.replica_ranks;
    const std::vector<int> peers = ranks_from(position, replicas, layout.replica_ranks);
    comm::Group& across = communicator->make_group(peers, "across_replicas[" + std::to_string(position) + "]");
    // Exchanges that overlap inner steps run on a thread of their own: they get groups that
    // nothing else uses, so their collectives never interleave with the inner method's.
    // With ZeRO-3 inside, each rank exchanges its own shard: nothing to split or assemble
    // inside the replica (ReplicaExchange, SparseExchange: no replica group).
    const bool sharded = layout.inner == "zero3";
    ExchangeGroups background;
    if (config.overlap_steps > 0) {
      background.across = &communicator->make_group(peers, "streaming_across[" + std::to_string(position) + "]");
      if (!sharded) {
        background.replica = replica->size() == 1 ? replica
                                                  : &communicator->make_group(replica->members(), "streaming_replica[" +
                                                                                  std::to_string(rank / layout.replica_ranks) + "]");
      }
    }
    outer = make_outer(config, {sharded ? nullptr : replica, &across}, background);
  }
  return std::make_unique<ComposedStrategy>(name, std::move(communicator), replica, std::move(inner),
                                            std::move(outer), placement);
}

}  // namespace strait
