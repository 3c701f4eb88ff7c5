#include "strait/comm/communicator.h"

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

}  // namespace

struct Communicator::State {
  explicit State(const CommOptions& options)
      : options(options), ledger(options.topology), store(connect_store(options)) {}

  CommOptions options;
  Ledger ledger;
  c10::intrusive_ptr<c10d::Store> store;  // declared before the groups, so it outlives them
  std::unique_ptr<Group> world;
  std::unique_ptr<Group> intra_node;
  std::unique_ptr<Group> cross_node;
  int consistency_checks = 0;

  std::unique_ptr<Group> connect(const std::string& name, const std::string& prefix, std::vector<int> members,
                                 const std::shared_ptr<gloo::transport::Device>& device) {
    auto group_store = c10::make_intrusive<c10d::PrefixStore>("strait/group/" + prefix, store);
    return Group::connect(name, std::move(members), options.topology.rank, group_store, device, options.timeout,
                          ledger);
  }
};

std::unique_ptr<Communicator> Communicator::create(const CommOptions& options) {
  validate(options);
  const Topology& topology = options.topology;
  auto state = std::make_unique<State>(options);
  agree_through_store(state->store, handshake_options(options, "rendezvous", "rendezvous"), size_fields(topology));
  const auto device = make_device(options);
  const std::string node = std::to_string(topology.node_rank);
  const std::string local = std::to_string(topology.local_rank);
  std::vector<int> everyone(topology.world_size);
  std::iota(everyone.begin(), everyone.end(), 0);
  state->world = state->connect("world", "world", everyone, device);
  state->intra_node = state->connect("intra_node[node " + node + "]", "intra_node/" + node,
                                     topology.ranks_of_node(topology.node_rank), device);
  state->cross_node = state->connect("cross_node[local rank " + local + "]", "cross_node/" + local,
                                     topology.ranks_with_local_rank(topology.local_rank), device);
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

void Communicator::hierarchical_all_reduce_sum(const torch::Tensor& tensor) {
  require_summable("hierarchical_all_reduce_sum", "tensor", tensor);
  const int k = topology().local_world_size;
  if (topology().num_nodes == 1 || k == 1) {
    world().all_reduce_sum(tensor, kHierarchical).wait();
    return;
  }
  // bfloat16 is summed in float32 throughout, so it is rounded once, at the end.
  const torch::Tensor values = tensor.scalar_type() == torch::kBFloat16 ? tensor.to(torch::kFloat) : tensor;
  const int64_t count = values.numel();
  const int64_t slice_count = (count + k - 1) / k;
  torch::Tensor padded = torch::zeros({slice_count * k}, values.options());
  padded.narrow(0, 0, count).copy_(values.reshape({-1}));
  torch::Tensor slice = torch::empty({slice_count}, values.options());
  intra_node().reduce_scatter_sum(padded, slice, kHierarchical + "/reduce_scatter").wait();
  cross_node().all_reduce_sum(slice, kHierarchical + "/allreduce").wait();
  std::vector<torch::Tensor> slices;
  for (int i = 0; i < k; ++i) slices.push_back(torch::empty_like(slice));
  intra_node().all_gather(slice, slices, kHierarchical + "/allgather").wait();
  tensor.view({-1}).copy_(torch::cat(slices).narrow(0, 0, count));
}

}  // namespace strait::comm
