#include "strait/comm/group.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <optional>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "strait/comm/gloo_algorithms.h"
#include "strait/comm/tensor_checks.h"
#include "strait/core/error.h"

namespace strait::comm {

namespace {

// Data-moving collectives ship raw bytes: Gloo then never sees a dtype it lacks (bfloat16).
torch::Tensor as_bytes(const torch::Tensor& tensor) { return tensor.reshape({-1}).view(torch::kByte); }

uint64_t byte_count(const torch::Tensor& tensor) { return static_cast<uint64_t>(tensor.nbytes()); }

}  // namespace

struct Work::Pending {
  c10::intrusive_ptr<c10d::Work> work;
  std::string context;  // which collective, group and rank; prefixes any failure
  std::string peers;    // who this rank exchanges data with; ends any failure
  std::function<void()> on_success;
  std::mutex mutex;
  bool done = false;
  std::optional<std::string> error;
};

void Work::wait() {
  if (!pending_) return;
  Pending& pending = *pending_;
  std::lock_guard<std::mutex> lock(pending.mutex);
  if (pending.error) throw Error(*pending.error);
  if (pending.done) return;
  try {
    pending.work->wait();
    if (pending.on_success) pending.on_success();
  } catch (const std::exception& failure) {
    pending.error = pending.context + " failed: " + failure.what() + pending.peers;
    throw Error(*pending.error);
  }
  pending.done = true;
}

struct Group::Impl {
  std::string name;
  std::vector<int> members;
  int rank;
  Ledger& ledger;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> backend;

  int size() const { return static_cast<int>(members.size()); }

  std::string describe(const std::string& operation) const {
    return operation + " on group " + name + " (global rank " + std::to_string(members[rank]) + " = group rank " +
           std::to_string(rank) + " of " + std::to_string(size()) + ")";
  }

  // Starts a validated collective and books its traffic. `plan` names peers by group rank.
  Work issue(const std::string& context, const std::string& label, std::vector<PeerTraffic> plan,
             const std::function<c10::intrusive_ptr<c10d::Work>()>& start, std::function<void()> on_success) {
    std::vector<int> peers;
    for (PeerTraffic& transfer : plan) {
      transfer.peer = members[transfer.peer];
      peers.push_back(transfer.peer);
    }
    // Gloo connects every pair of members, so a lost connection may be to any of them.
    const std::string peer_text =
        " (" + (peers.empty() ? "" : "this rank's peers in this collective: global ranks " + join_ranks(peers) + "; ") +
        "group members: global ranks " + join_ranks(members) + ")";
    auto pending = std::make_shared<Work::Pending>();
    pending->context = context;
    pending->peers = peer_text;
    pending->on_success = std::move(on_success);
    try {
      pending->work = start();
    } catch (const std::exception& failure) {
      throw Error(context + " could not start: " + failure.what() + peer_text);
    }
    ledger.record(label, plan);
    return Work(std::move(pending));
  }

  Work allgather(const std::string& context, const std::string& label, const torch::Tensor& input,
                 std::vector<torch::Tensor> outputs, std::function<void()> on_success) {
    auto plan = gloo_algorithms::ring_allgather(rank, size(), byte_count(input));
    auto start = [&] {
      std::vector<std::vector<torch::Tensor>> output_lists{std::move(outputs)};
      std::vector<torch::Tensor> inputs{as_bytes(input)};
      return backend->allgather(output_lists, inputs);
    };
    return issue(context, label, std::move(plan), start, std::move(on_success));
  }

  Work alltoall(const std::string& context, const std::string& label, const torch::Tensor& input,
                const torch::Tensor& output, std::function<void()> on_success) {
    auto plan = gloo_algorithms::direct_alltoall(rank, size(), byte_count(input) / size());
    auto start = [&] {
      torch::Tensor input_bytes = as_bytes(input);
      torch::Tensor output_bytes = as_bytes(output);
      std::vector<int64_t> equal_splits;
      return backend->alltoall_base(output_bytes, input_bytes, equal_splits, equal_splits);
    };
    return issue(context, label, std::move(plan), start, std::move(on_success));
  }
};

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;

const std::string& Group::name() const { return impl_->name; }
int Group::rank() const { return impl_->rank; }
int Group::size() const { return impl_->size(); }
const std::vector<int>& Group::members() const { return impl_->members; }

std::unique_ptr<Group> Group::connect(std::string name, std::vector<int> members, int global_rank,
                                      const c10::intrusive_ptr<c10d::Store>& store,
                                      const std::shared_ptr<gloo::transport::Device>& device,
                                      std::chrono::milliseconds timeout, Ledger& ledger) {
  const std::string context = "rendezvous of group " + name + " (global ranks " + join_ranks(members) + ")";
  auto position = std::find(members.begin(), members.end(), global_rank);
  require(position != members.end(), context, "global rank " + std::to_string(global_rank) + " is not a member");
  const int rank = static_cast<int>(position - members.begin());
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(device);
  c10::intrusive_ptr<c10d::ProcessGroupGloo> backend;
  try {
    backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, static_cast<int>(members.size()), options);
  } catch (const std::exception& failure) {
    throw Error(context + " failed within " + std::to_string(timeout.count()) + " ms at global rank " +
                std::to_string(global_rank) + ": " + failure.what());
  }
  return std::unique_ptr<Group>(
      new Group(std::unique_ptr<Impl>(new Impl{std::move(name), std::move(members), rank, ledger, backend})));
}

Work Group::all_reduce_sum(const torch::Tensor& tensor, const std::string& label) {
  const std::string context = impl_->describe("all_reduce_sum");
  require_summable(context, "tensor", tensor);
  const bool via_float = tensor.scalar_type() == torch::kBFloat16;
  torch::Tensor wire = via_float ? tensor.to(torch::kFloat) : tensor;
  std::function<void()> on_success;
  if (via_float) on_success = [tensor, wire] { tensor.copy_(wire); };
  auto plan = gloo_algorithms::ring_allreduce(rank(), size(), byte_count(wire), wire.element_size());
  auto start = [&] {
    std::vector<torch::Tensor> tensors{wire};
    return impl_->backend->allreduce(tensors);
  };
  return impl_->issue(context, label, std::move(plan), start, std::move(on_success));
}

Work Group::broadcast(const torch::Tensor& tensor, int root, const std::string& label) {
  const std::string context = impl_->describe("broadcast");
  require_wire_tensor(context, "tensor", tensor);
  require(root >= 0 && root < size(), context,
          "root is " + std::to_string(root) + " (expected a group rank in [0, " + std::to_string(size()) + "))");
  auto plan = gloo_algorithms::binomial_broadcast(rank(), size(), root, byte_count(tensor));
  auto start = [&] {
    std::vector<torch::Tensor> tensors{as_bytes(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return impl_->backend->broadcast(tensors, options);
  };
  return impl_->issue(context, label, std::move(plan), start, nullptr);
}

Work Group::all_gather(const torch::Tensor& input, std::vector<torch::Tensor>& outputs, const std::string& label) {
  const std::string context = impl_->describe("all_gather");
  require_wire_tensor(context, "input", input);
  require(outputs.size() == static_cast<size_t>(size()), context,
          "outputs holds " + std::to_string(outputs.size()) +
              " tensors (expected one per member: " + std::to_string(size()) + ")");
  std::vector<torch::Tensor> output_bytes;
  for (size_t i = 0; i < outputs.size(); ++i) {
    require_like(context, "outputs[" + std::to_string(i) + "]", outputs[i], input, input.numel());
    output_bytes.push_back(as_bytes(outputs[i]));
  }
  return impl_->allgather(context, label, input, std::move(output_bytes), nullptr);
}

Work Group::all_to_all(const torch::Tensor& input, const torch::Tensor& output, const std::string& label) {
  const std::string context = impl_->describe("all_to_all");
  require_wire_tensor(context, "input", input);
  require(input.numel() % size() == 0, context,
          "input has " + std::to_string(input.numel()) + " elements, not divisible by the group size " +
              std::to_string(size()));
  require_like(context, "output", output, input, input.numel());
  return impl_->alltoall(context, label, input, output, nullptr);
}

Work Group::reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output, const std::string& label) {
  const std::string context = impl_->describe("reduce_scatter_sum");
  require_summable(context, "input", input);
  require(input.numel() % size() == 0, context,
          "input has " + std::to_string(input.numel()) + " elements, not group size " + std::to_string(size()) +
              " x output's elements");
  require_like(context, "output", output, input, input.numel() / size());
  torch::Tensor gathered = torch::empty_like(input);
  const int members = size();
  auto on_success = [gathered, output, members] {
    torch::Tensor sum = gathered.view({members, -1}).sum(0, false, accumulation_dtype(gathered.scalar_type()));
    output.view({-1}).copy_(sum);
  };
  return impl_->alltoall(context, label, input, gathered, on_success);
}

Work Group::all_gather_bytes(const std::vector<uint8_t>& input, std::vector<std::vector<uint8_t>>& outputs,
                             const std::string& label) {
  const std::string context = impl_->describe("all_gather_bytes");
  require(!input.empty(), context, "input has no bytes");
  const auto count = static_cast<int64_t>(input.size());
  // A copy: the caller's vector need not outlive the collective, only `outputs` must.
  torch::Tensor input_tensor = torch::from_blob(const_cast<uint8_t*>(input.data()), {count}, torch::kByte).clone();
  std::vector<torch::Tensor> parts;
  for (int i = 0; i < size(); ++i) parts.push_back(torch::empty({count}, torch::kByte));
  auto on_success = [parts, &outputs] {
    outputs.clear();
    for (const torch::Tensor& part : parts) {
      const uint8_t* data = part.data_ptr<uint8_t>();
      outputs.emplace_back(data, data + part.numel());
    }
  };
  return impl_->allgather(context, label, input_tensor, parts, on_success);
}

Work Group::barrier() {
  return impl_->issue(
      impl_->describe("barrier"), "barrier", {}, [&] { return impl_->backend->barrier(); }, nullptr);
}

}  // namespace strait::comm
