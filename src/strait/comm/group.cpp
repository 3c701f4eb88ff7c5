#include "strait/comm/group.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "strait/comm/gloo_algorithms.h"
#include "strait/comm/lane.h"
#include "strait/comm/tensor_checks.h"
#include "strait/core/error.h"

namespace strait::comm {

namespace {

// Data-moving collectives ship raw bytes: Gloo then never sees a dtype it lacks (bfloat16).
torch::Tensor as_bytes(const torch::Tensor& tensor) { return tensor.reshape({-1}).view(torch::kByte); }

uint64_t byte_count(const torch::Tensor& tensor) { return static_cast<uint64_t>(tensor.nbytes()); }

// What starting a collective on the backend returns: one Work, or the transfers still in flight
// when strait composes the collective from sends and receives (a ring waits for its earlier
// steps itself and returns its last step's).
using Started = std::vector<c10::intrusive_ptr<c10d::Work>>;

// Tag of the point-to-point transfers of strait's all-to-all, all-gather and all-reduce. One
// collective runs at a time on a group (its lane), and each pair's messages arrive in order, so
// one tag serves them all.
constexpr int kPointToPointTag = 0;

c10::intrusive_ptr<c10d::Work> receive(c10d::ProcessGroupGloo& backend, const torch::Tensor& buffer, int from) {
  std::vector<torch::Tensor> tensors{buffer};
  return backend.recv(tensors, from, kPointToPointTag);
}

c10::intrusive_ptr<c10d::Work> send(c10d::ProcessGroupGloo& backend, const torch::Tensor& buffer, int to) {
  std::vector<torch::Tensor> tensors{buffer};
  return backend.send(tensors, to, kPointToPointTag);
}

// One step of a ring: the receive is posted before the send (Impl::alltoall says why the order
// matters). An empty side is skipped; both ends of a transfer know its size, so they skip it
// alike.
Started ring_step(c10d::ProcessGroupGloo& backend, const torch::Tensor& incoming, int from,
                  const torch::Tensor& outgoing, int to) {
  Started works;
  if (incoming.numel() > 0) works.push_back(receive(backend, incoming, from));
  if (outgoing.numel() > 0) works.push_back(send(backend, outgoing, to));
  return works;
}

void wait_for(const Started& works) {
  for (const auto& work : works) work->wait();
}

// `flat` cut into the chunks of Gloo's ring all-reduce, chunk c owned by group rank c, exactly as
// gloo_algorithms models them for the ledger (trailing chunks may be short or empty).
std::vector<torch::Tensor> ring_allreduce_chunks(const torch::Tensor& flat, int size) {
  std::vector<torch::Tensor> chunks;
  int64_t offset = 0;
  for (int chunk = 0; chunk < size; ++chunk) {
    const uint64_t bytes =
        gloo_algorithms::ring_allreduce_chunk_bytes(chunk, size, byte_count(flat), flat.element_size());
    const int64_t length = static_cast<int64_t>(bytes) / flat.element_size();
    chunks.push_back(flat.narrow(0, offset, length));
    offset += length;
  }
  return chunks;
}

// Gloo's ring all-reduce (gloo/allreduce.cc) chunk for chunk, with each step's receive posted
// before its send. Data runs down the ring as in Gloo: to rank - 1, from rank + 1.
// - Reduce-scatter, steps s = 1 .. n - 1: send this rank's partial sum of chunk rank + s, receive
//   the partial sum of chunk rank + s + 1 and add it to this rank's own. After the last step
//   (which receives chunk `rank`) this rank alone holds the whole sum of chunk `rank`.
// - All-gather, steps s = 0 .. n - 2: send chunk rank + s (this rank's finished sum first, then
//   the one received the step before), receive finished chunk rank + s + 1 in place.
// So every chunk is summed once, by its owner, adding the ranks in Gloo's order, and copied to
// the others: every rank ends with the same bits.
// Gloo moves a chunk as segments of at most 1 MiB, two in flight, and posts a segment's receive
// only once the segment two before it has arrived. In a ring of two, where a rank sends to the
// peer it receives from, that receive's "ready" notice then waits behind a segment of outgoing
// data, and the peer's link idles for about a round trip each segment. A step here moves its
// whole chunk, so that pause comes once a step. The cost: a step's sum no longer overlaps the
// transfers (one pass over a chunk, small against any link slow enough for this to matter), and
// a chunk of scratch memory instead of two segments.
Started ring_allreduce(c10d::ProcessGroupGloo& backend, const torch::Tensor& tensor, int rank, int size) {
  if (size == 1) return {};
  const std::vector<torch::Tensor> chunks = ring_allreduce_chunks(tensor.reshape({-1}), size);
  auto chunk = [&](int index) { return chunks[index % size]; };
  const int left = (rank - 1 + size) % size, right = (rank + 1) % size;
  torch::Tensor scratch = torch::empty_like(chunks[0]);  // chunk 0 is the longest
  for (int step = 1; step < size; ++step) {
    torch::Tensor incoming = scratch.narrow(0, 0, chunk(rank + step + 1).numel());
    wait_for(ring_step(backend, incoming, right, chunk(rank + step), left));
    chunk(rank + step + 1).add_(incoming);
  }
  Started step_works;
  for (int step = 0; step < size - 1; ++step) {
    wait_for(step_works);  // this step forwards what the last one received
    step_works = ring_step(backend, chunk(rank + step + 1), right, chunk(rank + step), left);
  }
  return step_works;
}

// Each rank's part of a padded all-gather, cut back to the count that rank announced.
std::vector<std::vector<uint8_t>> trimmed(const std::vector<torch::Tensor>& parts, const std::vector<int64_t>& counts) {
  std::vector<std::vector<uint8_t>> result;
  for (size_t i = 0; i < parts.size(); ++i) {
    const uint8_t* data = parts[i].data_ptr<uint8_t>();
    result.emplace_back(data, data + counts[i]);
  }
  return result;
}

}  // namespace

struct Work::Pending {
  std::mutex mutex;
  std::condition_variable finished_changed;
  bool finished = false;
  std::optional<std::string> error;

  void finish(std::optional<std::string> failure) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      error = std::move(failure);
      finished = true;
    }
    finished_changed.notify_all();
  }
};

void Work::wait() {
  if (!pending_) return;
  Pending& pending = *pending_;
  std::unique_lock<std::mutex> lock(pending.mutex);
  pending.finished_changed.wait(lock, [&] { return pending.finished; });
  if (pending.error) throw Error(*pending.error);
}

bool Work::is_completed() const {
  if (!pending_) return true;
  std::lock_guard<std::mutex> lock(pending_->mutex);
  return pending_->finished;
}

struct Group::Impl {
  // One collective as the lane runs it (a member type: the lane's closures hold one, and a type
  // from the anonymous namespace may not be part of Impl's).
  struct Call {
    std::string context;  // which collective, group and rank; prefixes any failure
    std::string peers;    // who this rank exchanges data with; ends any failure
    std::function<Started(c10d::ProcessGroupGloo&)> start;
    std::function<void()> finish;  // local work once the transfer is done (e.g. a sum); may be empty
  };

  Impl(std::string name, std::vector<int> members, int rank, Ledger& ledger,
       c10::intrusive_ptr<c10d::ProcessGroupGloo> backend)
      : name(std::move(name)), members(std::move(members)), rank(rank), ledger(ledger), backend(std::move(backend)) {}

  const std::string name;
  const std::vector<int> members;
  const int rank;
  Ledger& ledger;
  const c10::intrusive_ptr<c10d::ProcessGroupGloo> backend;
  std::mutex failure_mutex;
  std::optional<std::string> first_failure;  // on the wire; the members are out of step from then on
  Lane lane;  // declared last, so it is destroyed first: the tasks it drains use the members above

  int size() const { return static_cast<int>(members.size()); }

  std::string describe(const std::string& operation) const {
    return operation + " on group " + name + " (global rank " + std::to_string(members[rank]) + " = group rank " +
           std::to_string(rank) + " of " + std::to_string(size()) + ")";
  }

  // Books a validated collective's traffic and returns the step that runs it. `plan` names
  // peers by group rank.
  Step prepare(std::string context, const std::string& label, std::vector<PeerTraffic> plan,
               std::function<Started(c10d::ProcessGroupGloo&)> start,
               std::function<void()> finish) {
    std::vector<int> peers;
    for (PeerTraffic& transfer : plan) {
      transfer.peer = members[transfer.peer];
      peers.push_back(transfer.peer);
    }
    // Gloo connects every pair of members, so a lost connection may be to any of them.
    std::string peer_text =
        " (" + (peers.empty() ? "" : "this rank's peers in this collective: global ranks " + join_ranks(peers) + "; ") +
        "group members: global ranks " + join_ranks(members) + ")";
    ledger.record(label, plan);
    Call call{std::move(context), std::move(peer_text), std::move(start), std::move(finish)};
    return [this, call = std::move(call)] { run(call); };
  }

  void run(const Call& call) {
    {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (first_failure) {
        throw Error(call.context + " was not run: an earlier collective on this group failed: " + *first_failure);
      }
    }
    // Gloo reports a lost peer or a timeout when a transfer is posted as well as when it is waited
    // for, and the ring collectives post transfers after waiting for earlier ones: either way
    // the collective failed on the wire.
    try {
      wait_for(call.start(*backend));
    } catch (const std::exception& failure) {
      throw out_of_step(call.context + " failed: " + failure.what() + call.peers);
    }
    if (call.finish) call.finish();
  }

  // Remembers the first failure on the wire, after which the ranks may disagree on which
  // collective comes next.
  Error out_of_step(const std::string& message) {
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (!first_failure) first_failure = message;
    return Error(message);
  }

  Work submit(std::function<void()> task) {
    auto pending = std::make_shared<Work::Pending>();
    lane.post([pending, task = std::move(task)] {
      // Collectives are not differentiable, and the caller's grad mode, being thread-local,
      // does not follow the task here: without this guard in-place updates of tensors that
      // require grad would fail on the lane even where the caller disabled autograd.
      torch::NoGradGuard no_grad;
      try {
        task();
        pending->finish(std::nullopt);
      } catch (const std::exception& failure) {
        pending->finish(failure.what());
      }
    });
    return Work(std::move(pending));
  }

  // Gloo's ring all-gather, step for step (n - 1 steps, each forwarding to rank + 1 the input
  // received from rank - 1 in the step before), but with each step's receive posted before its
  // send: see alltoall below for why the order decides whether a pair's two directions share
  // the link.
  Step allgather(std::string context, const std::string& label, const torch::Tensor& input,
                 std::vector<torch::Tensor> outputs, std::function<void()> finish) {
    auto plan = gloo_algorithms::ring_allgather(rank, size(), byte_count(input));
    for (torch::Tensor& output : outputs) output = as_bytes(output);
    auto start = [input = as_bytes(input), outputs = std::move(outputs), rank = rank,
                  members = size()](c10d::ProcessGroupGloo& backend) -> Started {
      outputs[rank].copy_(input);
      const int left = (rank - 1 + members) % members, right = (rank + 1) % members;
      Started step_works;
      for (int step = 1; step < members; ++step) {
        wait_for(step_works);  // this step forwards what the last one received
        step_works = ring_step(backend, outputs[(rank - step + members) % members], left,
                               outputs[(rank - step + 1 + members) % members], right);
      }
      return step_works;
    };
    return prepare(std::move(context), label, std::move(plan), start, std::move(finish));
  }

  // See Group::ring_reduce_scatter_sum. At step s rank r sends its partial sum of chunk r - s to
  // rank r + 1 and receives the partial of chunk r - s - 1 from rank r - 1, to which it adds its
  // own; the last step's is chunk r, whole. Receives are posted before sends, as everywhere.
  Step ring_reduce_scatter(std::string context, const std::string& label, const torch::Tensor& input,
                           const torch::Tensor& output) {
    auto plan = gloo_algorithms::ring_allgather(rank, size(), byte_count(output));  // the same transfers
    auto start = [input = input.reshape({-1}), output, rank = rank,
                  members = size()](c10d::ProcessGroupGloo& backend) -> Started {
      const int64_t length = output.numel();
      auto chunk = [&](int index) { return input.narrow(0, ((index % members + members) % members) * length, length); };
      const torch::ScalarType sum_type = accumulation_dtype(input.scalar_type());
      const int left = (rank - 1 + members) % members, right = (rank + 1) % members;
      torch::Tensor outgoing = chunk(rank - 1);
      torch::Tensor partial = chunk(rank).to(sum_type);  // what a group of one ends with
      for (int step = 1; step < members; ++step) {
        torch::Tensor incoming = torch::empty_like(outgoing);
        wait_for(ring_step(backend, incoming, left, outgoing, right));
        partial = incoming.to(sum_type).add(chunk(rank - 1 - step).to(sum_type));
        outgoing = partial.to(input.scalar_type());
      }
      output.view({-1}).copy_(partial);
      return {};
    };
    return prepare(std::move(context), label, std::move(plan), start, nullptr);
  }

  // Gloo's all-to-all, chunk for chunk, but with every receive posted before any send. Gloo
  // sends a message only once the peer's "receive ready" notice has arrived, and that notice
  // travels on the same connection as data: its own all-to-all posts each send before the
  // receive, so the notice often queues behind a whole chunk going the other way, and the two
  // directions of a pair take turns instead of sharing the link (about 2x the link time on the
  // shaped testbed; 1.05-1.12x with the receives first; BENCHMARKS.md).
  Step alltoall(std::string context, const std::string& label, const torch::Tensor& input, const torch::Tensor& output,
                std::function<void()> finish) {
    auto plan = gloo_algorithms::direct_alltoall(rank, size(), byte_count(input) / size());
    auto start = [input = as_bytes(input), output = as_bytes(output), rank = rank,
                  members = size()](c10d::ProcessGroupGloo& backend) -> Started {
      const int64_t chunk = input.numel() / members;
      auto chunk_of = [chunk](const torch::Tensor& bytes, int peer) { return bytes.narrow(0, peer * chunk, chunk); };
      Started works;
      for (int step = 1; step < members; ++step) {  // the peers in the order Gloo's all-to-all takes them
        const int from = (rank - step + members) % members;
        works.push_back(receive(backend, chunk_of(output, from), from));
      }
      for (int step = 1; step < members; ++step) {
        const int to = (rank + step) % members;
        works.push_back(send(backend, chunk_of(input, to), to));
      }
      chunk_of(output, rank).copy_(chunk_of(input, rank));
      return works;
    };
    return prepare(std::move(context), label, std::move(plan), start, std::move(finish));
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
  options->threads = 1;  // the lane runs one collective at a time
  c10::intrusive_ptr<c10d::ProcessGroupGloo> backend;
  try {
    backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, static_cast<int>(members.size()), options);
  } catch (const std::exception& failure) {
    throw Error(context + " failed within " + std::to_string(timeout.count()) + " ms at global rank " +
                std::to_string(global_rank) + ": " + failure.what());
  }
  return std::unique_ptr<Group>(
      new Group(std::make_unique<Impl>(std::move(name), std::move(members), rank, ledger, std::move(backend))));
}

Work Group::submit(std::function<void()> task) { return impl_->submit(std::move(task)); }

Group::Step Group::prepare_all_reduce_sum(const torch::Tensor& tensor, const std::string& label) {
  std::string context = impl_->describe("all_reduce_sum");
  require_summable(context, "tensor", tensor);
  // The float32 copy of a bfloat16 tensor is taken when the collective starts, not now: in a
  // chain of steps an earlier step may still be writing the tensor.
  const bool via_float = tensor.scalar_type() == torch::kBFloat16;
  torch::Tensor wire = via_float ? torch::empty_like(tensor, torch::kFloat) : tensor;
  auto plan = gloo_algorithms::ring_allreduce(rank(), size(), byte_count(wire), wire.element_size());
  auto start = [tensor, wire, via_float, rank = rank(), members = size()](c10d::ProcessGroupGloo& backend) -> Started {
    if (via_float) wire.copy_(tensor);
    return ring_allreduce(backend, wire, rank, members);
  };
  std::function<void()> finish;
  if (via_float) finish = [tensor, wire] { tensor.copy_(wire); };
  return impl_->prepare(std::move(context), label, std::move(plan), start, std::move(finish));
}

Work Group::all_reduce_sum(const torch::Tensor& tensor, const std::string& label) {
  return submit(prepare_all_reduce_sum(tensor, label));
}

Work Group::broadcast(const torch::Tensor& tensor, int root, const std::string& label) {
  std::string context = impl_->describe("broadcast");
  require_wire_tensor(context, "tensor", tensor);
  require(root >= 0 && root < size(), context,
          "root is " + std::to_string(root) + " (expected a group rank in [0, " + std::to_string(size()) + "))");
  auto plan = gloo_algorithms::binomial_broadcast(rank(), size(), root, byte_count(tensor));
  auto start = [bytes = as_bytes(tensor), root](c10d::ProcessGroupGloo& backend) -> Started {
    std::vector<torch::Tensor> tensors{bytes};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return {backend.broadcast(tensors, options)};
  };
  return submit(impl_->prepare(std::move(context), label, std::move(plan), start, nullptr));
}

Group::Step Group::prepare_all_gather(const torch::Tensor& input, const std::vector<torch::Tensor>& outputs,
                                      const std::string& label) {
  std::string context = impl_->describe("all_gather");
  require_wire_tensor(context, "input", input);
  require(outputs.size() == static_cast<size_t>(size()), context,
          "outputs holds " + std::to_string(outputs.size()) +
              " tensors (expected one per member: " + std::to_string(size()) + ")");
  for (size_t i = 0; i < outputs.size(); ++i) {
    require_like(context, "outputs[" + std::to_string(i) + "]", outputs[i], input, input.numel());
  }
  return impl_->allgather(std::move(context), label, input, outputs, nullptr);
}

Work Group::all_gather(const torch::Tensor& input, std::vector<torch::Tensor>& outputs, const std::string& label) {
  return submit(prepare_all_gather(input, outputs, label));
}

Work Group::all_to_all(const torch::Tensor& input, const torch::Tensor& output, const std::string& label) {
  std::string context = impl_->describe("all_to_all");
  require_wire_tensor(context, "input", input);
  require(input.numel() % size() == 0, context,
          "input has " + std::to_string(input.numel()) + " elements, not divisible by the group size " +
              std::to_string(size()));
  require_like(context, "output", output, input, input.numel());
  return submit(impl_->alltoall(std::move(context), label, input, output, nullptr));
}

void Group::require_reduce_scatter_arguments(const std::string& context, const torch::Tensor& input,
                                             const torch::Tensor& output) const {
  require_summable(context, "input", input);
  require(input.numel() % size() == 0, context,
          "input has " + std::to_string(input.numel()) + " elements, not group size " + std::to_string(size()) +
              " x output's elements");
  require_like(context, "output", output, input, input.numel() / size());
}

Group::Step Group::prepare_reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output,
                                              const std::string& label) {
  std::string context = impl_->describe("reduce_scatter_sum");
  require_reduce_scatter_arguments(context, input, output);
  torch::Tensor gathered = torch::empty_like(input);
  auto finish = [gathered, output, members = size()] {
    torch::Tensor sum = gathered.view({members, -1}).sum(0, false, accumulation_dtype(gathered.scalar_type()));
    output.view({-1}).copy_(sum);
  };
  return impl_->alltoall(std::move(context), label, input, gathered, finish);
}

Work Group::reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output, const std::string& label) {
  return submit(prepare_reduce_scatter_sum(input, output, label));
}

Work Group::ring_reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output, const std::string& label) {
  std::string context = impl_->describe("ring_reduce_scatter_sum");
  require_reduce_scatter_arguments(context, input, output);
  return submit(impl_->ring_reduce_scatter(std::move(context), label, input, output));
}

Work Group::all_gather_bytes(const std::vector<uint8_t>& input, std::vector<std::vector<uint8_t>>& outputs,
                             const std::string& label, int64_t max_bytes) {
  const std::string context = impl_->describe("all_gather_bytes");
  require(max_bytes >= 0, context, "max_bytes is " + std::to_string(max_bytes) + " (expected >= 0)");
  torch::Tensor count = torch::full({1}, static_cast<int64_t>(input.size()), torch::kInt64);
  std::vector<torch::Tensor> counts;
  for (int i = 0; i < size(); ++i) counts.push_back(torch::empty({1}, torch::kInt64));
  Step exchange_counts = impl_->allgather(context, label + "/sizes", count, counts, nullptr);
  Impl* impl = impl_.get();
  return submit([impl, context, label, max_bytes, exchange_counts, counts, input, &outputs] {
    exchange_counts();
    std::vector<int64_t> announced;
    for (const torch::Tensor& peer_count : counts) announced.push_back(peer_count.item<int64_t>());
    require_peer_byte_counts(context, announced, impl->members, max_bytes);
    const int64_t largest = *std::max_element(announced.begin(), announced.end());
    torch::Tensor padded = torch::zeros({largest}, torch::kByte);
    std::copy(input.begin(), input.end(), padded.data_ptr<uint8_t>());
    std::vector<torch::Tensor> parts;
    for (int i = 0; i < impl->size(); ++i) parts.push_back(torch::empty({largest}, torch::kByte));
    // Booked even when every input is empty (a call that moves nothing), then skipped.
    Step gather = impl->allgather(context, label, padded, parts, nullptr);
    if (largest > 0) gather();
    outputs = trimmed(parts, announced);
  });
}

Work Group::barrier() {
  auto start = [](c10d::ProcessGroupGloo& backend) -> Started { return {backend.barrier()}; };
  return submit(impl_->prepare(impl_->describe("barrier"), "barrier", {}, start, nullptr));
}

}  // namespace strait::comm
