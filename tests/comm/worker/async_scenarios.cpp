// The worker's scenarios for the asynchronous engine: collectives from two threads at once, the
// asynchronous hierarchical all-reduce against the phases issued step by step, Work's
// completion, the lane's grad mode, failures queued behind a failure, variable-size byte
// gathers and made groups.
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "strait/core/error.h"
#include "worker.h"

namespace strait::comm_worker {

namespace {

using comm::Communicator;
using comm::Group;
using comm::Work;
using Clock = std::chrono::steady_clock;

// The distinct values of a tensor, ascending.
json distinct(const torch::Tensor& tensor) { return values(std::get<0>(torch::_unique(tensor))); }

// ---- two threads at once: call i of a thread contributes sign * (1000 i + global rank + 1),
// so every sum is an integer below 2^24 and exact in float32.

struct Issuer {
  std::function<Work(const torch::Tensor&)> issue;  // one all-reduce, sum in place
  std::vector<int> members;                         // the global ranks it sums over
};

// Resolved on the main thread, so that every rank makes its groups in the same order.
Issuer issuer_named(Communicator& comm, const std::string& name) {
  std::vector<int> everyone = comm.world().members();
  if (name == "hierarchical")
    return {[&comm](const torch::Tensor& t) { return comm.hierarchical_all_reduce_sum(t); }, everyone};
  Group* group = nullptr;
  if (name == "world") group = &comm.world();
  if (name == "intra_node") group = &comm.intra_node();
  if (name == "cross_node") group = &comm.cross_node();
  if (name == "made") group = &comm.make_group(everyone, "made by the worker");
  if (group == nullptr) throw Error("worker: unknown issuer '" + name + "'");
  return {[group](const torch::Tensor& t) { return group->all_reduce_sum(t); }, group->members()};
}

// Issues `calls` all-reduces, at most 4 in flight, and returns the distinct values of each result.
json run_issuer(const Issuer& issuer, int rank, double sign, int64_t calls, int64_t elements) {
  const size_t window = 4;
  std::vector<torch::Tensor> tensors;
  std::vector<Work> works;
  for (int64_t i = 0; i < calls; ++i) {
    tensors.push_back(torch::full({elements}, sign * static_cast<double>(1000 * i + rank + 1), torch::kFloat));
    works.push_back(issuer.issue(tensors.back()));
    if (works.size() > window) works[works.size() - 1 - window].wait();
  }
  json results = json::array();
  for (size_t i = 0; i < works.size(); ++i) {
    works[i].wait();
    results.push_back(distinct(tensors[i]));
  }
  return {{"members", issuer.members}, {"results", results}};
}

// Options: a, b (issuers: world, made, intra_node, cross_node, hierarchical), calls, elements.
json two_threads(Communicator& comm, const Options& options) {
  const Issuer a = issuer_named(comm, option(options, "a", "made"));
  const Issuer b = issuer_named(comm, option(options, "b", "made"));
  const int64_t calls = int_option(options, "calls", 200), elements = int_option(options, "elements", 1000);
  const int rank = comm.topology().rank;
  json reports[2];
  std::string failures[2];
  auto thread_body = [&](int which, const Issuer& issuer, double sign) {
    try {
      reports[which] = run_issuer(issuer, rank, sign, calls, elements);
    } catch (const std::exception& failure) {
      failures[which] = failure.what();
    }
  };
  std::thread first(thread_body, 0, std::cref(a), 1.0);
  std::thread second(thread_body, 1, std::cref(b), -1.0);
  first.join();
  second.join();
  for (const std::string& failure : failures) {
    if (!failure.empty()) throw Error(failure);
  }
  return {{"a", reports[0]}, {"b", reports[1]}};
}

// ---- the asynchronous hierarchical all-reduce against the synchronous algorithm it replaced,
// issued phase by phase through the public groups with a wait after each.

void hierarchical_step_by_step(Communicator& comm, const torch::Tensor& tensor) {
  const int k = comm.topology().local_world_size;
  if (comm.topology().num_nodes == 1 || k == 1) {
    comm.world().all_reduce_sum(tensor).wait();
    return;
  }
  const torch::Tensor summed = tensor.scalar_type() == torch::kBFloat16 ? tensor.to(torch::kFloat) : tensor;
  const int64_t count = summed.numel();
  const int64_t slice_count = (count + k - 1) / k;
  torch::Tensor padded = torch::zeros({slice_count * k}, summed.options());
  padded.narrow(0, 0, count).copy_(summed.reshape({-1}));
  torch::Tensor slice = torch::empty({slice_count}, summed.options());
  comm.intra_node().reduce_scatter_sum(padded, slice).wait();
  comm.cross_node().all_reduce_sum(slice).wait();
  std::vector<torch::Tensor> slices;
  for (int i = 0; i < k; ++i) slices.push_back(torch::empty_like(slice));
  comm.intra_node().all_gather(slice, slices).wait();
  tensor.view({-1}).copy_(torch::cat(slices).narrow(0, 0, count));
}

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.numel() == b.numel() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

// Random normal inputs seeded with 3000 + rank, for float32 and bfloat16 and sizes that do not
// divide by 2 or 4. All asynchronous calls are in flight at once before the first wait.
json hierarchical_bitwise(Communicator& comm, const Options&) {
  torch::manual_seed(3000 + comm.topology().rank);
  struct Case {
    std::string name;
    torch::Tensor input, async_result, reference;
  };
  std::vector<Case> cases;
  std::vector<Work> works;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (int64_t count : {1, 7, 1001, 65537}) {
      torch::Tensor input = torch::randn({count}).to(dtype);
      cases.push_back(
          {std::string(c10::toString(dtype)) + " x " + std::to_string(count), input, input.clone(), input.clone()});
      works.push_back(comm.hierarchical_all_reduce_sum(cases.back().async_result));
    }
  }
  for (Work& work : works) work.wait();
  json results;
  for (Case& c : cases) {
    hierarchical_step_by_step(comm, c.reference);
    results[c.name] = {{"bitwise_equal", bitwise_equal(c.async_result, c.reference)},
                       {"changed", !bitwise_equal(c.async_result, c.input)}};
  }
  return results;
}

// ---- Work::is_completed: rank 1 issues its all-reduce only after delay_ms.
json completion(Communicator& comm, const Options& options) {
  const auto delay = std::chrono::milliseconds(int_option(options, "delay_ms", 500));
  if (comm.topology().rank == 1) std::this_thread::sleep_for(delay);
  torch::Tensor tensor = torch::full({1000}, comm.topology().rank + 1, torch::kFloat);
  const auto issued = Clock::now();
  Work work = comm.world().all_reduce_sum(tensor);
  const bool at_issue = work.is_completed();
  std::this_thread::sleep_for(delay / 5);
  const bool a_little_later = work.is_completed();
  while (!work.is_completed() && Clock::now() - issued < 10 * delay) std::this_thread::sleep_for(delay / 100);
  const bool without_wait = work.is_completed();
  const double waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - issued).count();
  work.wait();
  return {{"default_work_completed", Work{}.is_completed()},
          {"at_issue", at_issue},
          {"a_little_later", a_little_later},
          {"without_wait", without_wait},
          {"waited_ms", waited_ms},
          {"after_wait", work.is_completed()},
          {"sum", distinct(tensor)}};
}

// ---- grad mode is thread-local: the lane must not run a collective's local steps (bfloat16's
// copy back, reduce_scatter's sum, the hierarchical copies) with autograd on, whatever the
// caller's mode. Leaves that require grad, updated under the caller's NoGradGuard as DDP does.
json requires_grad(Communicator& comm, const Options&) {
  torch::NoGradGuard no_grad;
  const auto leaf = [&](int64_t count) {
    return torch::full({count}, comm.topology().rank + 1, torch::kBFloat16).set_requires_grad(true);
  };
  torch::Tensor reduced = leaf(5), tiered = leaf(5), scattered = leaf(1);
  comm.world().all_reduce_sum(reduced).wait();
  comm.hierarchical_all_reduce_sum(tiered).wait();
  comm.world().reduce_scatter_sum(torch::ones({comm.world().size()}, torch::kBFloat16), scattered).wait();
  return {
      {"all_reduce", distinct(reduced)}, {"hierarchical", distinct(tiered)}, {"reduce_scatter", distinct(scattered)}};
}

// ---- a failure, then collectives queued behind it: rank `dies` exits after delay_ms without
// issuing; the others queue `calls` all-reduces, wait on the first and last only, and leave the
// rest to the communicator's destruction.
json queued_behind_a_failure(Communicator& comm, const Options& options) {
  if (comm.topology().rank == int_option(options, "dies", 1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(int_option(options, "delay_ms", 300)));
    std::_Exit(3);
  }
  std::vector<torch::Tensor> tensors;
  std::vector<Work> works;
  for (int64_t i = 0; i < int_option(options, "calls", 50); ++i) {
    tensors.push_back(torch::ones({10000}));
    works.push_back(comm.world().all_reduce_sum(tensors.back()));
  }
  const std::string first = rejection([&] { works.front().wait(); });
  const std::string last = rejection([&] { works.back().wait(); });
  return {{"first", first}, {"last", last}, {"first_again", rejection([&] { works.front().wait(); })}};
}

// ---- all_gather_bytes with a byte count per rank: case c gives rank r counts[c][r % 4]
// bytes, byte t of which is (37 r + 11 t + c) mod 256; the test regenerates them.
const std::vector<std::vector<int64_t>> kByteCountCases = {
    {0, 1, 1000, 7}, {0, 0, 0, 0}, {5, 5, 5, 5}, {1000, 0, 0, 1}, {1, 1000, 0, 3}};

json gather_bytes(Communicator& comm, const Options&) {
  const int rank = comm.topology().rank;
  json results = json::array();
  for (size_t c = 0; c < kByteCountCases.size(); ++c) {
    std::vector<uint8_t> input(kByteCountCases[c][rank % 4]);
    for (size_t t = 0; t < input.size(); ++t) input[t] = static_cast<uint8_t>((37 * rank + 11 * t + c) % 256);
    std::vector<std::vector<uint8_t>> outputs(1, std::vector<uint8_t>(3, 99));  // replaced, not appended to
    const auto before = comm.ledger().snapshot();
    comm.world().all_gather_bytes(input, outputs, "payload").wait();
    results.push_back({{"outputs", outputs}, {"ledger", (comm.ledger().snapshot() - before).to_json()}});
  }
  return results;
}

// Rank 1 sends 100 bytes where max_bytes is 50; then a negative max_bytes; then a good gather.
json gather_bytes_limit(Communicator& comm, const Options&) {
  const int rank = comm.topology().rank;
  std::vector<std::vector<uint8_t>> outputs;
  const std::vector<uint8_t> oversized(rank == 1 ? 100 : 10, 1);
  const std::string too_many = rejection([&] { comm.world().all_gather_bytes(oversized, outputs, "big", 50).wait(); });
  const std::string negative = rejection([&] { comm.world().all_gather_bytes(oversized, outputs, "big", -1).wait(); });
  comm.world().all_gather_bytes(std::vector<uint8_t>(rank + 1, static_cast<uint8_t>(rank)), outputs).wait();
  return {{"too_many", too_many}, {"negative", negative}, {"after", outputs}};
}

// ---- make_group: two groups over every rank, issued in opposite orders on even and odd ranks
// (were they one group, the sums would pair the wrong calls), a pair group, bad arguments.
json make_group(Communicator& comm, const Options&) {
  const int rank = comm.topology().rank, n = comm.topology().world_size;
  std::vector<int> everyone = comm.world().members();
  std::vector<int> reversed(everyone.rbegin(), everyone.rend());
  Group& first = comm.make_group(everyone, "first");
  Group& second = comm.make_group(reversed, "second");
  Group& pair = comm.make_group({rank % 2 + 2, rank % 2}, "pair");
  torch::Tensor ones = torch::full({100}, rank + 1, torch::kFloat), hundreds = 100 * ones, pair_sum = ones.clone();
  std::vector<Work> works;
  if (rank % 2 == 0) {
    works.push_back(first.all_reduce_sum(ones));
    works.push_back(second.all_reduce_sum(hundreds));
  } else {
    works.push_back(second.all_reduce_sum(hundreds));
    works.push_back(first.all_reduce_sum(ones));
  }
  works.push_back(pair.all_reduce_sum(pair_sum));
  for (Work& work : works) work.wait();
  auto rejected_group = [&](const std::vector<int>& ranks, const std::string& name) {
    return rejection([&] { comm.make_group(ranks, name); });
  };
  const json rejected = {{"repeated", rejected_group({rank, 0, rank}, "repeated")},
                         {"out_of_range", rejected_group({rank, n}, "out of range")},
                         {"negative", rejected_group({-1, rank}, "negative")},
                         {"not_a_member", rejected_group({(rank + 1) % n}, "not a member")},
                         {"empty", rejected_group({}, "empty")}};
  // After the rejections every rank still makes the same groups in the same order.
  Group& after = comm.make_group(everyone, "after");
  torch::Tensor after_sum = torch::full({3}, rank + 1, torch::kFloat);
  after.all_reduce_sum(after_sum).wait();
  return {{"first", describe(first)},
          {"second", describe(second)},
          {"pair", describe(pair)},
          {"names", {first.name(), second.name(), pair.name(), after.name()}},
          {"distinct", &first != &second},
          {"sums", {distinct(ones), distinct(hundreds), distinct(pair_sum), distinct(after_sum)}},
          {"rejected", rejected}};
}

}  // namespace

const std::map<std::string, Scenario>& async_scenarios() {
  static const std::map<std::string, Scenario> table = {{"two_threads", two_threads},
                                                        {"hierarchical_bitwise", hierarchical_bitwise},
                                                        {"completion", completion},
                                                        {"requires_grad", requires_grad},
                                                        {"queued_behind_a_failure", queued_behind_a_failure},
                                                        {"gather_bytes", gather_bytes},
                                                        {"gather_bytes_limit", gather_bytes_limit},
                                                        {"make_group", make_group}};
  return table;
}

}  // namespace strait::comm_worker
