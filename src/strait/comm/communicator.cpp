#include "strait/comm/communicator.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "strait/comm/handshake.h"
#include "strait/comm/tensor_checks.h"
#include "strait/core/error.h"

namespace strait::comm {

namespace {

const std::string kHierarchical = "hierarchical_allreduce";

std::string store_address(const CommOptions& options) {
  return options.master_addr + ":" + std::to_string(options.master_port);
}

void validate(const CommOptions& options) {
  options.topology.validate();
  require(options.master_port >= 1 && options.master_port <= 65535, "communicator options",
          "master_port is " + std::to_string(options.master_port) + " (expected 1..65535)");
  require(options.timeout.count() > 0, "communicator options",
          "timeout is " + std::to_string(options.timeout.count()) + " ms (expected > 0)");
  require(options.wait_timeout.count() > 0, "communicator options",
          "wait_timeout is " + std::to_string(options.wait_timeout.count()) + " ms (expected > 0)");
}

c10::intrusive_ptr<c10d::Store> connect_store(const CommOptions& options) {
  const bool serves = options.topology.rank == 0 && !options.launcher_serves_store;
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(options.master_port);
  store_options.isServer = serves;
  // Arrival is checked by the handshake, which can name the ranks that are missing.
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
  } catch (const std::exception& failure) {
    const std::string address = store_address(options);
    if (serves) {
      throw Error("rendezvous: rank 0 cannot serve the store on " + address +
                  " (is the port taken by another job?): " + failure.what());
    }
    throw Error("rendezvous: rank " + std::to_string(options.topology.rank) + " cannot reach the store on " + address +
                " within " + std::to_string(options.timeout.count()) + " ms (is rank 0 running?): " + failure.what());
  }
}

std::shared_ptr<gloo::transport::Device> make_device(const CommOptions& options) {
  const bool by_interface = !options.interface.empty();
  try {
    return by_interface ? c10d::ProcessGroupGloo::createDeviceForInterface(options.interface)
                        : c10d::ProcessGroupGloo::createDeviceForHostname(options.master_addr);
  } catch (const std::exception& failure) {
    throw Error("rendezvous: rank " + std::to_string(options.topology.rank) + " cannot create a Gloo device for " +
                (by_interface ? "interface '" + options.interface + "'" : "address " + options.master_addr) + ": " +
                failure.what());
  }
}

HandshakeOptions handshake_options(const CommOptions& options, const std::string& topic, const std::string& key_space) {
  return {topic,          key_space, store_address(options), options.topology.rank, options.topology.world_size,
          options.timeout};
}

Fields size_fields(const Topology& topology) {
  return {{"world_size", std::to_string(topology.world_size)},
          {"local_world_size", std::to_string(topology.local_world_size)}};
}

// `ranks`, sorted, once checked: each a rank of the job, none twice, this rank among them.
std::vector<int> checked_members(const std::string& context, std::vector<int> ranks, const Topology& topology) {
  std::sort(ranks.begin(), ranks.end());
  for (size_t i = 0; i < ranks.size(); ++i) {
    const std::string rank = "global rank " + std::to_string(ranks[i]);
    require(ranks[i] >= 0 && ranks[i] < topology.world_size, context,
            rank + " is out of range (expected 0 to " + std::to_string(topology.world_size - 1) + ")");
    require(i == 0 || ranks[i] != ranks[i - 1], context, rank + " appears more than once");
  }
  require(std::binary_search(ranks.begin(), ranks.end(), topology.rank), context,
          "this rank (global rank " + std::to_string(topology.rank) + ") is not among the members (" +
              (ranks.empty() ? "none" : "global ranks " + join_ranks(ranks)) + "): only members call make_group");
  return ranks;
}

}  // namespace

struct Communicator::State {
  explicit State(const CommOptions& options)
      : options(options), ledger(options.topology), store(connect_store(options)) {}

  CommOptions options;
  Ledger ledger;
  c10::intrusive_ptr<c10d::Store> store;  // declared before the groups, so it outlives them
  std::shared_ptr<gloo::transport::Device> device;
  std::unique_ptr<Group> world;
  std::unique_ptr<Group> waits;  // every rank, for wait_for_every_rank only
  std::unique_ptr<Group> intra_node;
  std::unique_ptr<Group> cross_node;
  // Private to hierarchical_all_reduce_sum, one group per phase so that successive calls
  // pipeline (see there). Each phase's task waits for the previous phase's Work, so they are
  // declared in phase order and destroyed, their lanes drained, last phase first.
  std::unique_ptr<Group> tiered_scatter;
  std::unique_ptr<Group> tiered_cross;
  std::unique_ptr<Group> tiered_gather;
  std::vector<std::unique_ptr<Group>> made;
  std::map<std::vector<int>, int> groups_made_of;  // rank set -> how many groups of it were made
  int consistency_checks = 0;

  std::unique_ptr<Group> connect(const std::string& name, const std::string& prefix, std::vector<int> members,
                                 std::chrono::milliseconds timeout) {
    auto group_store = c10::make_intrusive<c10d::PrefixStore>("strait/group/" + prefix, store);
    return Group::connect(name, std::move(members), options.topology.rank, group_store, device, timeout, ledger);
  }
  std::unique_ptr<Group> connect(const std::string& name, const std::string& prefix, std::vector<int> members) {
    return connect(name, prefix, std::move(members), options.timeout);
  }
};

std::unique_ptr<Communicator> Communicator::create(const CommOptions& options) {
  validate(options);
  const Topology& topology = options.topology;
  auto state = std::make_unique<State>(options);
  agree_through_store(state->store, handshake_options(options, "rendezvous", "rendezvous"), size_fields(topology));
  state->device = make_device(options);
  const std::string intra = "intra_node[node " + std::to_string(topology.node_rank) + "]";
  const std::string cross = "cross_node[local rank " + std::to_string(topology.local_rank) + "]";
  const std::vector<int> node_ranks = topology.ranks_of_node(topology.node_rank);
  const std::vector<int> peer_ranks = topology.ranks_with_local_rank(topology.local_rank);
  std::vector<int> everyone(topology.world_size);
  std::iota(everyone.begin(), everyone.end(), 0);
  // The long-timeout group first, right after every rank arrived: a rank lost while connecting
  // it would keep the others waiting for wait_timeout.
  state->waits = state->connect("wait_for_every_rank", "waits", everyone, options.wait_timeout);
  state->world = state->connect("world", "world", everyone);
  state->intra_node = state->connect(intra, "intra_node/" + std::to_string(topology.node_rank), node_ranks);
  state->cross_node = state->connect(cross, "cross_node/" + std::to_string(topology.local_rank), peer_ranks);
  state->tiered_scatter = state->connect(kHierarchical + ".scatter." + intra, kHierarchical + "/scatter/" + intra,
                                         node_ranks);
  state->tiered_cross = state->connect(kHierarchical + "." + cross, kHierarchical + "/" + cross, peer_ranks);
  state->tiered_gather = state->connect(kHierarchical + ".gather." + intra, kHierarchical + "/gather/" + intra,
                                        node_ranks);
  // Rank 0 serves the store that the groups connect through: nobody may go on (and perhaps
  // finish and exit) until every rank has connected all its groups.
  state->world->barrier().wait();
  return std::unique_ptr<Communicator>(new Communicator(std::move(state)));
}

Communicator::Communicator(std::unique_ptr<State> state) : state_(std::move(state)) {}
Communicator::~Communicator() = default;

Group& Communicator::world() { return *state_->world; }
Group& Communicator::intra_node() { return *state_->intra_node; }
Group& Communicator::cross_node() { return *state_->cross_node; }
Ledger& Communicator::ledger() { return state_->ledger; }
const Topology& Communicator::topology() const { return state_->options.topology; }

void Communicator::check_consistency(const std::string& config_hash) {
  // A fresh key space per call keeps a second check from reading the first one's keys.
  const std::string key_space = "check_consistency/" + std::to_string(state_->consistency_checks++);
  Fields fields = size_fields(topology());
  fields.emplace_back("config_hash", config_hash);
  agree_through_store(state_->store, handshake_options(state_->options, "check_consistency", key_space), fields);
}

void Communicator::wait_for_every_rank(const std::string& what) {
  try {
    state_->waits->barrier().wait();
  } catch (const Error& failure) {
    throw Error(what + ": not every rank arrived within " + std::to_string(state_->options.wait_timeout.count()) +
                " ms, or one was lost: " + failure.what());
  }
}

Group& Communicator::make_group(std::vector<int> global_ranks, std::string name) {
  std::vector<int> members = checked_members("make_group '" + name + "'", std::move(global_ranks), topology());
  const int earlier = state_->groups_made_of[members]++;
  const std::string prefix = "made/" + join_ranks(members) + "/" + std::to_string(earlier);
  state_->made.push_back(state_->connect(name, prefix, std::move(members)));
  return *state_->made.back();
}

Work Communicator::hierarchical_all_reduce_sum(const torch::Tensor& tensor) {
  require_summable("hierarchical_all_reduce_sum", "tensor", tensor);
  Group& scatter = *state_->tiered_scatter;
  Group& cross = *state_->tiered_cross;
  Group& gather = *state_->tiered_gather;
  const int k = topology().local_world_size;
  // With one node, or one rank a node, one of the two spans every rank, in world()'s order.
  if (topology().num_nodes == 1 || k == 1) return (k == 1 ? cross : scatter).all_reduce_sum(tensor, kHierarchical);
  // bfloat16 is summed in float32 throughout, so it is rounded once, at the end.
  const auto options =
      tensor.options().dtype(tensor.scalar_type() == torch::kBFloat16 ? torch::kFloat : tensor.scalar_type());
  const int64_t count = tensor.numel();
  const int64_t slice_count = (count + k - 1) / k;
  torch::Tensor padded = torch::zeros({slice_count * k}, options);
  torch::Tensor slice = torch::empty({slice_count}, options);
  std::vector<torch::Tensor> slices;
  for (int i = 0; i < k; ++i) slices.push_back(torch::empty_like(slice));
  Group::Step reduce_scatter = scatter.prepare_reduce_scatter_sum(padded, slice, kHierarchical + "/reduce_scatter");
  Group::Step all_reduce = cross.prepare_all_reduce_sum(slice, kHierarchical + "/allreduce");
  Group::Step all_gather = gather.prepare_all_gather(slice, slices, kHierarchical + "/allgather");
  // A pipeline: each phase runs on its own group's lane and first waits for this call's previous
  // phase. All three are queued now, from the caller's thread, so every lane runs its phase of
  // successive calls in program order on every rank, while the lanes overlap different calls:
  // call i's cross-node all-reduce runs while call i + 1 reduce-scatters inside the node and
  // call i - 1 all-gathers, keeping the slow link busy.
  Work scattered = scatter.submit([=] {
    padded.narrow(0, 0, count).copy_(tensor.reshape({-1}));
    reduce_scatter();
  });
  Work reduced = cross.submit([=]() mutable {
    scattered.wait();
    all_reduce();
  });
  return gather.submit([=]() mutable {
    reduced.wait();
    all_gather();
    tensor.view({-1}).copy_(torch::cat(slices).narrow(0, 0, count));
  });
}

}  // namespace strait::comm
