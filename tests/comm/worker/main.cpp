// strait_comm_worker: one rank of a multi-process communicator test.
//
//   RANK=r WORLD_SIZE=n LOCAL_WORLD_SIZE=k MASTER_ADDR=a MASTER_PORT=p STRAIT_COMM_TIMEOUT_MS=t \
//     strait_comm_worker SCENARIO [key=value ...]
//
// Runs SCENARIO as rank r and prints one line "RESULT <json>" then exits 0, or prints
// "ERROR <message>" and exits 1. The tests (tests/comm/) assert on those values: the worker
// reports what it observed and does not judge it.
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "strait/comm/communicator.h"
#include "strait/core/error.h"
#include "worker.h"

namespace strait::comm_worker {

std::string option(const Options& options, const std::string& key, const std::string& fallback) {
  auto found = options.find(key);
  return found == options.end() ? fallback : found->second;
}

std::string rejection(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& error) {
    return error.what();
  }
  return "accepted";
}

int64_t int_option(const Options& options, const std::string& key, int64_t fallback) {
  return std::stoll(option(options, key, std::to_string(fallback)));
}

json values(const torch::Tensor& tensor) {
  torch::Tensor flat = tensor.to(torch::kDouble).reshape({-1});
  return std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
}

json describe(comm::Group& group) {
  return {{"rank", group.rank()}, {"size", group.size()}, {"members", group.members()}};
}

}  // namespace strait::comm_worker

namespace {

using namespace strait::comm_worker;
using strait::Error;
using strait::comm::Communicator;
using strait::comm::Group;

int env_int(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) throw Error(std::string("worker: environment variable ") + name + " is not set");
  return std::stoi(value);
}

std::unique_ptr<Communicator> connect() {
  strait::comm::CommOptions options;
  options.topology =
      strait::comm::Topology::of_rank(env_int("RANK"), env_int("WORLD_SIZE"), env_int("LOCAL_WORLD_SIZE"));
  options.master_addr = std::getenv("MASTER_ADDR") ? std::getenv("MASTER_ADDR") : "127.0.0.1";
  options.master_port = env_int("MASTER_PORT");
  options.timeout = std::chrono::milliseconds(env_int("STRAIT_COMM_TIMEOUT_MS"));
  return Communicator::create(options);
}

// ---- exact collectives: every value is an integer, so every result must match exactly.

json all_reduce_results(Group& group) {
  const int n = group.size();
  json results;
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kInt32, torch::kInt64, torch::kHalf, torch::kBFloat16}) {
    for (int64_t count : {int64_t{1}, int64_t{n + 3}, int64_t{1000}, int64_t{n}, int64_t{n - 1}}) {
      if (count == 0) continue;
      torch::Tensor tensor = torch::full({count}, group.rank() + 1, torch::TensorOptions().dtype(dtype));
      group.all_reduce_sum(tensor).wait();
      results[std::string(c10::toString(dtype))][std::to_string(count)] = values(tensor);
    }
  }
  return results;
}

json broadcast_results(Group& group) {
  json results;
  for (int root = 0; root < group.size(); ++root) {
    torch::Tensor tensor = torch::full({group.size() + 3}, group.rank() + 1, torch::kFloat);
    group.broadcast(tensor, root).wait();
    results[std::to_string(root)] = values(tensor);
  }
  return results;
}

json all_gather_results(Group& group) {
  const int64_t count = group.size() + 3;
  torch::Tensor input = torch::arange(count, torch::kInt64) + 100 * group.rank();
  std::vector<torch::Tensor> outputs;
  for (int i = 0; i < group.size(); ++i) outputs.push_back(torch::full({count}, -1, torch::kInt64));
  group.all_gather(input, outputs).wait();
  json results = json::array();
  for (const auto& output : outputs) results.push_back(values(output));
  return results;
}

// Element j of rank r's input is 1000 r + j; chunk c (3 elements) goes to group rank c.
json all_to_all_results(Group& group) {
  torch::Tensor input = torch::arange(3 * group.size(), torch::kFloat) + 1000 * group.rank();
  torch::Tensor output = torch::zeros_like(input);
  group.all_to_all(input, output).wait();
  return values(output);
}

// Element j of rank r's input is (r + 1)(j + 1), in bfloat16 too (exact below 256); both the
// all-to-all reduce-scatter and the ring one.
json reduce_scatter_results(Group& group) {
  json results;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    torch::Tensor input = (torch::arange(3 * group.size(), torch::kFloat) + 1) * (group.rank() + 1);
    torch::Tensor output = torch::zeros({3}, dtype);
    group.reduce_scatter_sum(input.to(dtype), output).wait();
    results[std::string(c10::toString(dtype))] = values(output);
    torch::Tensor ring_output = torch::zeros({3}, dtype);
    group.ring_reduce_scatter_sum(input.to(dtype), ring_output).wait();
    results["ring " + std::string(c10::toString(dtype))] = values(ring_output);
  }
  return results;
}

json all_gather_bytes_results(Group& group) {
  std::vector<uint8_t> input;
  for (int i = 0; i < 5; ++i) input.push_back(static_cast<uint8_t>(10 * group.rank() + i));
  std::vector<std::vector<uint8_t>> outputs;
  group.all_gather_bytes(input, outputs).wait();
  return outputs;
}

json exact_collectives(Group& group) {
  return {{"group", describe(group)},
          {"allreduce", all_reduce_results(group)},
          {"broadcast", broadcast_results(group)},
          {"allgather", all_gather_results(group)},
          {"alltoall", all_to_all_results(group)},
          {"reduce_scatter", reduce_scatter_results(group)},
          {"allgather_bytes", all_gather_bytes_results(group)}};
}

json collectives(Communicator& comm, const Options&) {
  return {{"world", exact_collectives(comm.world())},
          {"intra_node", exact_collectives(comm.intra_node())},
          {"cross_node", exact_collectives(comm.cross_node())}};
}

// ---- hierarchical against flat: inputs are torch::randn (or integer-valued randint) seeded
// with 1000 + rank, so the test can regenerate them.

json hierarchical(Communicator& comm, const Options& options) {
  torch::manual_seed(1000 + comm.topology().rank);
  const int64_t count = int_option(options, "elements", 1001);
  torch::Tensor input = option(options, "values", "random") == "integer"
                            ? torch::randint(-1000, 1000, {count}, torch::kFloat)
                            : torch::randn({count}, torch::kFloat);
  torch::Tensor flat = input.clone();
  comm.world().all_reduce_sum(flat).wait();
  torch::Tensor tiered = input.clone();
  comm.hierarchical_all_reduce_sum(tiered).wait();
  return {{"flat", values(flat)}, {"hierarchical", values(tiered)}};
}

// ---- all_reduce_sum in every dtype it sums, at sizes around the group size. The test
// (test_collectives.cpp, AllReduceDtypes) regenerates each rank's input to judge the results.

// Element j of group rank r's integer input: (7 j + 3 r) mod 11, less 5 where the dtype is signed.
torch::Tensor integer_allreduce_input(int rank, int64_t count, torch::ScalarType dtype) {
  torch::Tensor values = (torch::arange(count, torch::kInt64) * 7 + 3 * rank).remainder(11);
  return (dtype == torch::kByte ? values : values - 5).to(dtype);
}

json allreduce_dtypes(Communicator& comm, const Options&) {
  Group& world = comm.world();
  const int n = world.size(), r = world.rank();
  json integer, random;
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kChar, torch::kByte,
                     torch::kInt32, torch::kInt64}) {
    for (int64_t count : {int64_t{1}, int64_t{n - 1}, int64_t{n}, int64_t{n + 1}, int64_t{2 * n + 1}, int64_t{1001}}) {
      if (count == 0) continue;
      torch::Tensor tensor = integer_allreduce_input(r, count, dtype);
      world.all_reduce_sum(tensor).wait();
      integer[std::string(c10::toString(dtype))][std::to_string(count)] = values(tensor);
    }
  }
  // torch::randn seeded with 2000 + group rank, then rounded to the dtype.
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    for (int64_t count : {int64_t{2 * n + 1}, int64_t{1001}}) {
      torch::manual_seed(2000 + r);
      torch::Tensor tensor = torch::randn({count}, torch::kFloat).to(dtype);
      world.all_reduce_sum(tensor).wait();
      random[std::string(c10::toString(dtype))][std::to_string(count)] = values(tensor);
    }
  }
  // Over 9 MiB of float32: more than 2 n of Gloo's 1 MiB segments, the case where its segment
  // count follows the size. Reported as sum_j x_j (j mod 1009 + 1), exact in double.
  const int64_t large = 9 * 1024 * 1024 / 4 + 1;
  torch::Tensor tensor = integer_allreduce_input(r, large, torch::kFloat);
  world.all_reduce_sum(tensor).wait();
  torch::Tensor weights = torch::arange(large, torch::kInt64).remainder(1009).add(1).to(torch::kDouble);
  const double digest = (tensor.to(torch::kDouble) * weights).sum().item<double>();
  return {{"group", describe(world)},
          {"integer", integer},
          {"random", random},
          {"large", {{"count", large}, {"digest", digest}}}};
}

// ---- traffic: ledger figures per operation, and what the kernel counted on Gloo's sockets.

// Payload plus transport headers on every TCP socket of this process except the store's.
strait::comm::Traffic wire_bytes(int store_port) {
  strait::comm::Traffic total;
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) throw Error("worker: cannot list /proc/self/fd");
  while (dirent* entry = readdir(fds)) {
    const int fd = std::atoi(entry->d_name);
    sockaddr_in local{}, remote{};
    socklen_t local_size = sizeof local, remote_size = sizeof remote;
    tcp_info info{};
    socklen_t info_size = sizeof info;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &remote_size) != 0 ||
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_size) != 0) {
      continue;
    }
    if (ntohs(local.sin_port) == store_port || ntohs(remote.sin_port) == store_port) continue;
    // Loopback does drop and retransmit segments now and then; count each byte once.
    total += {info.tcpi_bytes_sent - info.tcpi_bytes_retrans, info.tcpi_bytes_received};
  }
  closedir(fds);
  return total;
}

json traffic(Communicator& comm, const Options& options) {
  const int64_t count = int_option(options, "elements", 1001);
  const int n = comm.world().size();
  const int store_port = env_int("MASTER_PORT");
  const std::map<std::string, std::function<void()>> operations = {
      {"allreduce", [&] { comm.world().all_reduce_sum(torch::ones({count})).wait(); }},
      {"allreduce_bf16",
       [&] { comm.world().all_reduce_sum(torch::ones({count}, torch::kBFloat16), "allreduce_bf16").wait(); }},
      {"broadcast", [&] { comm.world().broadcast(torch::ones({count}), n - 1).wait(); }},
      {"allgather",
       [&] {
         std::vector<torch::Tensor> outputs;
         for (int i = 0; i < n; ++i) outputs.push_back(torch::empty({count}));
         comm.world().all_gather(torch::ones({count}), outputs).wait();
       }},
      {"alltoall", [&] { comm.world().all_to_all(torch::ones({n * count}), torch::empty({n * count})).wait(); }},
      {"reduce_scatter",
       [&] { comm.world().reduce_scatter_sum(torch::ones({n * count}), torch::empty({count})).wait(); }},
      {"hierarchical", [&] { comm.hierarchical_all_reduce_sum(torch::ones({count})).wait(); }},
      {"allgather_bytes",
       [&] {
         std::vector<uint8_t> input(count * (comm.topology().rank + 1), 7);  // a different count per rank
         std::vector<std::vector<uint8_t>> outputs;
         comm.world().all_gather_bytes(input, outputs).wait();
       }},
  };
  json results;
  for (const auto& [name, run] : operations) {
    comm.world().barrier().wait();
    const auto ledger_before = comm.ledger().snapshot();
    const auto wire_before = wire_bytes(store_port);
    run();
    // Everybody has received everything once the barrier completes.
    comm.world().barrier().wait();
    const auto wire = wire_bytes(store_port) - wire_before;
    results[name] = {{"ledger", (comm.ledger().snapshot() - ledger_before).to_json()},
                     {"wire", {{"sent", wire.sent}, {"received", wire.received}}}};
  }
  return results;
}

// ---- faults, as a table of (rank, step) -> event: "fault=RANK:STEP:exit|kill|hang".

struct Fault {
  int rank = -1;
  int64_t step = -1;
  std::string kind;
};

Fault parse_fault(const std::string& text) {
  Fault fault;
  const auto first = text.find(':'), second = text.rfind(':');
  if (text.empty()) return fault;
  if (first == std::string::npos || first == second) throw Error("worker: fault '" + text + "' is not RANK:STEP:KIND");
  fault.rank = std::stoi(text.substr(0, first));
  fault.step = std::stoll(text.substr(first + 1, second - first - 1));
  fault.kind = text.substr(second + 1);
  return fault;
}

void inject(const Fault& fault) {
  std::cout << "FAULT " << fault.kind << std::endl;
  if (fault.kind == "exit") std::_Exit(3);
  if (fault.kind == "kill") raise(SIGKILL);
  if (fault.kind == "hang") {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  throw Error("worker: unknown fault kind '" + fault.kind + "' (expected exit, kill or hang)");
}

json steps(Communicator& comm, const Options& options) {
  const Fault fault = parse_fault(option(options, "fault", ""));
  const int64_t count = int_option(options, "steps", 20);
  torch::Tensor tensor = torch::ones({int_option(options, "elements", 100000)});
  for (int64_t step = 0; step < count; ++step) {
    if (fault.rank == comm.topology().rank && fault.step == step) inject(fault);
    comm.world().all_reduce_sum(tensor).wait();
  }
  return {{"steps", count}};
}

// ---- rendezvous and the start-up handshake.

json rendezvous(Communicator& comm, const Options&) {
  return {{"world", describe(comm.world())},
          {"intra_node", describe(comm.intra_node())},
          {"cross_node", describe(comm.cross_node())}};
}

// Checks twice: each check must use its own keys.
json consistency(Communicator& comm, const Options& options) {
  comm.check_consistency(option(options, "config_hash", "same"));
  comm.check_consistency(option(options, "config_hash", "same"));
  return {{"consistent", true}};
}

// Rejected arguments must leave the group in step: every rank fails the same bad call, then
// a good collective must still give the right sum.
json bad_arguments(Communicator& comm, const Options&) {
  Group& world = comm.world();
  json rejected = json::array();
  auto attempt = [&](const std::function<strait::comm::Work()>& call) {
    try {
      call().wait();
      rejected.push_back("accepted");
    } catch (const Error& error) {
      rejected.push_back(error.what());
    }
  };
  const int64_t indivisible = world.size() + 1;
  attempt([&] { return world.all_to_all(torch::ones({indivisible}), torch::empty({indivisible})); });
  attempt([&] { return world.all_reduce_sum(torch::ones({4, 4}).t()); });
  attempt([&] { return world.broadcast(torch::ones({4}), world.size()); });
  attempt([&] { return world.all_reduce_sum(torch::ones({4}, torch::kInt16)); });
  torch::Tensor tensor = torch::full({5}, world.rank() + 1, torch::kFloat);
  world.all_reduce_sum(tensor).wait();
  return {{"rejected", rejected}, {"sum_after", values(tensor)}};
}

const std::map<std::string, Scenario>& scenarios() {
  static const std::map<std::string, Scenario> table = [] {
    std::map<std::string, Scenario> all = {{"collectives", collectives},
                                           {"hierarchical", hierarchical},
                                           {"allreduce_dtypes", allreduce_dtypes},
                                           {"traffic", traffic},
                                           {"steps", steps},
                                           {"rendezvous", rendezvous},
                                           {"consistency", consistency},
                                           {"bad_arguments", bad_arguments}};
    all.insert(async_scenarios().begin(), async_scenarios().end());
    all.insert(qgz_scenarios().begin(), qgz_scenarios().end());
    return all;
  }();
  return table;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 2; i < argc; ++i) {
    const std::string argument = argv[i];
    const auto equals = argument.find('=');
    if (equals == std::string::npos) throw Error("worker: argument '" + argument + "' is not key=value");
    options[argument.substr(0, equals)] = argument.substr(equals + 1);
  }
  return options;
}

int run(int argc, char** argv) {
  if (argc < 2 || scenarios().count(argv[1]) == 0)
    throw Error("worker: usage: strait_comm_worker SCENARIO [key=value ...]");
  const Options options = parse_options(argc, argv);
  torch::set_num_threads(1);
  auto comm = connect();
  json result = scenarios().at(argv[1])(*comm, options);
  std::cout << "RESULT " << result.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& failure) {
    std::cout << "ERROR " << failure.what() << std::endl;
    return 1;
  }
}
