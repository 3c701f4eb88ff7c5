#include "strait/plan/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <numeric>
#include <regex>
#include <sstream>

#include "strait/comm/gloo_algorithms.h"
#include "strait/core/error.h"
#include "strait/core/suggest.h"

namespace strait::plan {

namespace gloo = comm::gloo_algorithms;

namespace {

constexpr double kFloatBytes = 4;

int64_t ceil_div(int64_t value, int64_t divisor) { return (value + divisor - 1) / divisor; }

double sent(const std::vector<comm::PeerTraffic>& transfers) {
  double total = 0;
  for (const auto& transfer : transfers) total += static_cast<double>(transfer.sent);
  return total;
}

// Bytes each node sends to other nodes in a collective over every rank of the job, whose group
// rank is the global rank: `transfers(rank)` is that rank's traffic (gloo_algorithms.h).
std::vector<double> sent_by_node(const Cluster& cluster,
                                 const std::function<std::vector<comm::PeerTraffic>(int)>& transfers) {
  std::vector<double> by_node(cluster.nodes, 0.0);
  for (int node = 0; node < cluster.nodes; ++node) {
    for (int local = 0; local < cluster.ranks_per_node; ++local) {
      const int rank = node * cluster.ranks_per_node + local;
      for (const auto& transfer : transfers(rank)) {
        if (transfer.peer / cluster.ranks_per_node != node) by_node[node] += static_cast<double>(transfer.sent);
      }
    }
  }
  return by_node;
}

double busiest_node_sent(const Cluster& cluster, const std::function<std::vector<comm::PeerTraffic>(int)>& transfers) {
  const std::vector<double> by_node = sent_by_node(cluster, transfers);
  return *std::max_element(by_node.begin(), by_node.end());
}

double encoded_bytes(codec::WireDtype dtype, int64_t count) {
  return static_cast<double>(codec::WireCodec(dtype).encoded_size(static_cast<size_t>(count)));
}

std::string dtype_name(codec::WireDtype dtype) {
  switch (dtype) {
    case codec::WireDtype::Fp32: return "fp32";
    case codec::WireDtype::Bf16: return "bf16";
    case codec::WireDtype::Int8: return "int8";
    case codec::WireDtype::Int4: return "int4";
  }
  return "?";
}

void require_positive(double value, const std::string& what) {
  if (!(value > 0) || !std::isfinite(value)) {
    std::ostringstream text;
    text << "plan: " << what << " must be a positive number, got " << value;
    throw Error(text.str());
  }
}

// The model's tensors; without them, the parameters as 64 x 64 tiles plus a 1-D remainder, which
// chunk as the matrices of a transformer do (SparseLoCo's k per 4096 applies per tile).
std::vector<std::vector<int64_t>> tensor_shapes(const Workload& workload) {
  if (!workload.shapes.empty()) return workload.shapes;
  const auto params = static_cast<int64_t>(std::llround(workload.params));
  std::vector<std::vector<int64_t>> shapes;
  if (params / 4096 > 0) shapes.push_back({64 * (params / 4096), 64});
  if (params % 4096 > 0) shapes.push_back({params % 4096});
  return shapes;
}

// DDP's buckets as strait builds them (strategy/ddp.cpp): tensors in reverse order until a bucket
// holds at least bucket_bytes; without shapes, full buckets and a remainder.
std::vector<int64_t> ddp_buckets(const Workload& workload, double bucket_bytes) {
  std::vector<int64_t> buckets;
  if (workload.shapes.empty()) {
    const auto params = static_cast<int64_t>(std::llround(workload.params));
    const auto per_bucket = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(bucket_bytes / kFloatBytes)));
    for (int64_t left = params; left > 0; left -= per_bucket) buckets.push_back(std::min(left, per_bucket));
    return buckets;
  }
  int64_t current = 0;
  for (auto it = workload.shapes.rbegin(); it != workload.shapes.rend(); ++it) {
    int64_t n = 1;
    for (int64_t d : *it) n *= d;
    current += n;
    if (static_cast<double>(current) * kFloatBytes >= bucket_bytes) {
      buckets.push_back(current);
      current = 0;
    }
  }
  if (current > 0) buckets.push_back(current);
  return buckets;
}

// Streaming DiLoCo's fragments (strategy/outer_sgd.cpp): fragment p holds layers p, p + P, ...
std::vector<int64_t> fragment_elements(const Workload& workload, int fragments) {
  std::vector<int64_t> counts(static_cast<size_t>(fragments), 0);
  const auto& layers = workload.layer_elements;
  if (layers.empty()) {
    const auto params = static_cast<int64_t>(std::llround(workload.params));
    for (int f = 0; f < fragments; ++f) counts[f] = params / fragments + (f < params % fragments ? 1 : 0);
    return counts;
  }
  if (fragments > static_cast<int>(layers.size())) {
    throw Error("plan: " + std::to_string(fragments) + " fragments need at least as many layers, but the model has " +
                std::to_string(layers.size()));
  }
  for (size_t layer = 0; layer < layers.size(); ++layer) counts[layer % fragments] += layers[layer];
  return counts;
}

// ZeRO's units as strategy/zero3.h shards them, each into ceil(elements / N) per rank: from
// llama_shapes' order (embedding, 9 tensors a layer, final norm, the head unless tied), the
// embedding, each layer and the head (final norm and untied LM head). Without shapes, the model
// as one layer-like unit: the ZeRO++ paper's accounting, everything gathered twice.
struct ZeroUnit {
  std::vector<int64_t> tensors;  // each parameter's elements, in the unit's order
  bool layer = false;            // gathered again for backward's recompute
  int64_t elements() const { return std::accumulate(tensors.begin(), tensors.end(), int64_t{0}); }
};

std::vector<ZeroUnit> zero_units(const Workload& workload) {
  const auto& shapes = workload.shapes;
  const size_t tensors_per_layer = 9;
  if (shapes.size() < 2 || (shapes.size() - 2) % tensors_per_layer > 1) {
    return {{{static_cast<int64_t>(std::llround(workload.params))}, true}};
  }
  auto elements = [&](size_t index) {
    int64_t n = 1;
    for (int64_t d : shapes[index]) n *= d;
    return n;
  };
  const size_t layers = (shapes.size() - 2) / tensors_per_layer;
  std::vector<ZeroUnit> units = {{{elements(0)}, false}};
  for (size_t layer = 0; layer < layers; ++layer) {
    ZeroUnit unit{{}, true};
    for (size_t t = 0; t < tensors_per_layer; ++t) unit.tensors.push_back(elements(1 + layer * tensors_per_layer + t));
    units.push_back(unit);
  }
  ZeroUnit head;
  for (size_t t = 1 + layers * tensors_per_layer; t < shapes.size(); ++t) head.tensors.push_back(elements(t));
  units.push_back(head);
  return units;
}

// ZeRO-3 inside a replica of `ranks` ranks (strategy/zero3.cpp): rank r keeps [r S, (r + 1) S) of
// each unit's parameters laid end to end (S = ceil(elements / ranks), the padding at the end),
// and its outer method works on the pieces of it, one 1-D piece per parameter its shard
// overlaps. Per rank, the pieces' lengths.
std::vector<std::vector<int64_t>> zero_shard_pieces(const Workload& workload, int ranks) {
  std::vector<std::vector<int64_t>> pieces(static_cast<size_t>(ranks));
  for (const ZeroUnit& unit : zero_units(workload)) {
    const int64_t shard = ceil_div(unit.elements(), ranks);
    for (int r = 0; r < ranks; ++r) {
      int64_t offset = 0;
      for (const int64_t n : unit.tensors) {
        const int64_t first = std::max(r * shard, offset), last = std::min((r + 1) * shard, offset + n);
        if (first < last) pieces[static_cast<size_t>(r)].push_back(last - first);
        offset += n;
      }
    }
  }
  return pieces;
}

// ZeRO-3 / ZeRO++ per step (ALGORITHMS.md section 1), unit by unit as strategy/zero3.h moves
// them over all ranks in node order: each gather is a ring all-gather of the unit's encoded
// shards (the embedding and the head once a step, each layer twice; with hpZ on several nodes a
// layer's second gather stays inside the node), the gradients a ring reduce-scatter (the bytes of
// a ring all-gather) or qgZ's hierarchical all-to-all.
double zero_bytes_per_node(const Cluster& cluster, const Workload& workload, const MethodSpec& method) {
  const int n = cluster.ranks();
  const codec::WireDtype weights = method.qwz ? codec::WireDtype::Int8 : method.wire_dtype;
  auto ring = [&](codec::WireDtype dtype, int64_t shard) {
    return busiest_node_sent(
        cluster, [&](int rank) { return gloo::ring_allgather(rank, n, static_cast<uint64_t>(encoded_bytes(dtype, shard))); });
  };
  double bytes = 0;
  for (const ZeroUnit& unit : zero_units(workload)) {
    const int64_t shard = ceil_div(unit.elements(), n);
    const double gathers = unit.layer && !(method.hpz && cluster.nodes > 1) ? 2 : 1;
    bytes += gathers * ring(weights, shard);
    if (method.qgz && cluster.nodes > 1) {
      // Inside the node first (free here), then each rank sends its int4 partial of the shard
      // to its counterpart on every other node.
      const double partial = encoded_bytes(codec::WireDtype::Int4, shard);
      bytes += cluster.ranks_per_node * sent(gloo::direct_alltoall(0, cluster.nodes, static_cast<uint64_t>(partial)));
    } else {
      bytes += ring(method.wire_dtype, shard);
    }
  }
  return bytes;
}

double link_seconds(const Cluster& cluster, double bytes) {
  return bytes * 8 / (cluster.link_bits_per_s * cluster.link_efficiency);
}

std::string bytes_text(double bytes) {
  std::ostringstream text;
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    ++unit;
  }
  text << std::fixed << std::setprecision(bytes < 10 && unit > 0 ? 2 : (unit > 0 ? 1 : 0)) << bytes << " " << units[unit];
  return text.str();
}

// 7B, 512M, 869.5k: parameter counts in the table's title.
std::string count_text(double count) {
  std::ostringstream text;
  const char* suffix = count >= 1e9 ? "B" : count >= 1e6 ? "M" : count >= 1e3 ? "k" : "";
  const double scale = count >= 1e9 ? 1e9 : count >= 1e6 ? 1e6 : count >= 1e3 ? 1e3 : 1;
  text << std::setprecision(4) << count / scale << suffix;
  return text.str();
}

std::string seconds_text(double seconds) {
  std::ostringstream text;
  if (seconds >= 1) text << std::fixed << std::setprecision(2) << seconds << " s";
  else text << std::fixed << std::setprecision(seconds >= 0.01 ? 1 : 3) << seconds * 1000 << " ms";
  return text.str();
}

bool changes_optimisation(Kind kind) { return kind != Kind::Ddp && kind != Kind::Zero3; }

// Local SGD, DiLoCo and SparseLoCo: every replica waits for the exchange at the outer step.
// `codec_s_per_sync`: CPU time the exchange spends encoding and decoding, which blocks as well.
void block_at_outer_step(Prediction& p, const Cluster& cluster, double compute, double bytes_per_sync,
                         double codec_s_per_sync = 0) {
  p.bytes_per_outer_sync = bytes_per_sync;
  p.codec_s_per_outer_sync = codec_s_per_sync;
  p.cross_node_bytes_per_node_per_step = bytes_per_sync / p.method.sync_every;
  p.compute_s = compute;
  p.comm_s = link_seconds(cluster, p.cross_node_bytes_per_node_per_step);
  p.step_time_s = compute + p.comm_s + codec_s_per_sync / p.method.sync_every;
  p.time_model = std::string(p.method.zero3_inside ? "compute with recomputed forward" : "compute") +
                 (codec_s_per_sync > 0 ? " + (blocking exchange + codec) / H" : " + blocking exchange / H");
}

}  // namespace

double parse_link_rate(const std::string& text) {
  static const std::regex form(R"(^([0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?)(bit|kbit|mbit|gbit|tbit)$)", std::regex::icase);
  std::smatch match;
  if (std::regex_match(text, match, form)) {
    std::string unit = match[4];
    std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
    const double scale = unit == "bit" ? 1 : unit == "kbit" ? 1e3 : unit == "mbit" ? 1e6 : unit == "gbit" ? 1e9 : 1e12;
    // strtod, not stod: an out-of-range number is infinite here rather than an exception.
    const double rate = std::strtod(match[1].str().c_str(), nullptr) * scale;
    if (rate > 0 && std::isfinite(rate)) return rate;
  }
  throw Error("'" + text +
              "' is not a link rate like 12.5gbit or 100mbit (a positive number, then bit, kbit, mbit, gbit or tbit: bits per "
              "second in powers of 1000, as tc writes them)");
}

std::vector<std::string> method_names() {
  return {"ddp",       "zero3",    "zero3+hpz", "zero3+qwz",        "zero3+qgz", "zero3+hpz+qwz",
          "zero++",    "local-sgd", "diloco",   "streaming-diloco", "sparseloco"};
}

MethodSpec method_named(const std::string& name, const MethodOptions& options) {
  const auto names = method_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    const std::string closest = closest_match(name, names);
    std::string list;
    for (const auto& known : names) list += (list.empty() ? "" : ", ") + known;
    throw Error("unknown method '" + name + "'" + (closest.empty() ? "" : " (did you mean '" + closest + "'?)") +
                "; the methods are " + list);
  }
  MethodSpec method;
  method.bucket_bytes = options.bucket_bytes;
  method.wire_dtype = options.wire_dtype;
  method.sync_every = options.sync_every;
  method.outer_dtype = options.outer_dtype;
  method.sparse = options.sparse;
  const std::string h = " H=" + std::to_string(options.sync_every);
  if (name == "ddp") {
    method.name = "ddp";
  } else if (name.rfind("zero", 0) == 0) {
    method.kind = Kind::Zero3;
    const bool all = name == "zero++";
    method.hpz = all || name.find("hpz") != std::string::npos;
    method.qwz = all || name.find("qwz") != std::string::npos;
    method.qgz = all || name.find("qgz") != std::string::npos;
    method.name = all ? "zero++ (hpz+qwz+qgz)" : name;
    method.name += " " + dtype_name(options.wire_dtype);
  } else if (name == "local-sgd") {
    method.kind = Kind::LocalSgd;
    method.name = name + h + " " + dtype_name(options.outer_dtype);
  } else if (name == "diloco") {
    method.kind = Kind::Diloco;
    method.name = name + h + " " + dtype_name(options.outer_dtype);
  } else if (name == "streaming-diloco") {
    method.kind = Kind::StreamingDiloco;
    method.fragments = options.fragments;
    method.overlap_steps = options.overlap_steps;
    method.name = name + h + " P=" + std::to_string(options.fragments) + " tau=" + std::to_string(options.overlap_steps) +
                  " " + dtype_name(options.outer_dtype);
  } else {
    method.kind = Kind::SparseLoco;
    method.name = name + h + " k=" + std::to_string(options.sparse.topk);
  }
  method.zero3_inside = options.zero3_inside && changes_optimisation(method.kind);
  if (method.zero3_inside) method.name += " (zero3 inside)";
  return method;
}

double ddp_bytes_per_node(const Cluster& cluster, const std::vector<int64_t>& bucket_elements) {
  if (cluster.nodes < 2) return 0;
  const int k = cluster.ranks_per_node;
  double busiest = 0;
  // Every rank of a node takes 1/k of each bucket across nodes (communicator.cpp); with k = 1
  // that is the plain ring over the nodes. Gloo's chunks can differ by node, hence the max.
  for (int node = 0; node < cluster.nodes; ++node) {
    double node_sent = 0;
    for (int64_t elements : bucket_elements) {
      const auto slice_bytes = static_cast<uint64_t>(ceil_div(elements, k)) * 4;
      node_sent += k * sent(gloo::ring_allreduce(node, cluster.nodes, slice_bytes, 4));
    }
    busiest = std::max(busiest, node_sent);
  }
  return busiest;
}

namespace {

// The all-gather of the 8-byte hash of the new weights, which every rank sends after an exchange.
double weight_check_bytes_per_rank(int replicas) { return sent(gloo::ring_allgather(0, replicas, 8)); }

// One rank's part of the dense exchange of its `count` values with its counterparts in the other
// `replicas` (replica_exchange.cpp, mean_of_shard): each other owner's encoded slice (all-to-all),
// then its own encoded mean to each (all-gather), then the 8-byte weight check (all-gather).
double dense_exchange_bytes_per_rank(int replicas, int64_t count, codec::WireDtype dtype) {
  const auto slice_bytes = static_cast<uint64_t>(encoded_bytes(dtype, ceil_div(count, replicas)));
  return sent(gloo::direct_alltoall(0, replicas, slice_bytes)) + sent(gloo::ring_allgather(0, replicas, slice_bytes)) +
         weight_check_bytes_per_rank(replicas);
}

// One payload's all-gather among `replicas` (sparse_exchange.cpp): the 8-byte sizes, then every
// payload padded to the largest (Group::all_gather_bytes).
double sparse_payload_bytes_per_rank(int replicas, double payload_bytes) {
  return sent(gloo::ring_allgather(0, replicas, 8)) +
         sent(gloo::ring_allgather(0, replicas, static_cast<uint64_t>(std::ceil(payload_bytes))));
}

}  // namespace

double dense_exchange_bytes_per_node(const Cluster& cluster, int64_t count, codec::WireDtype dtype) {
  if (cluster.nodes < 2) return 0;
  // The rank at position p of its replica takes the p-th of k shards of the values.
  return cluster.ranks_per_node * dense_exchange_bytes_per_rank(cluster.nodes, ceil_div(count, cluster.ranks_per_node), dtype);
}

double sparse_exchange_bytes_per_node(const Cluster& cluster, double payload_bytes) {
  if (cluster.nodes < 2) return 0;
  // Position 0 of each replica all-gathers the payloads; every rank sends the weight check.
  return sparse_payload_bytes_per_rank(cluster.nodes, payload_bytes) +
         cluster.ranks_per_node * weight_check_bytes_per_rank(cluster.nodes);
}

double zero3_inside_exchange_bytes_per_node(const Cluster& cluster, const Workload& workload, const MethodSpec& method) {
  if (cluster.nodes < 2) return 0;
  // Every rank exchanges its own pieces with the same pieces of the other replicas.
  double bytes = 0;
  for (const auto& pieces : zero_shard_pieces(workload, cluster.ranks_per_node)) {
    if (method.kind == Kind::SparseLoco) {
      std::vector<std::vector<int64_t>> shapes;
      for (const int64_t n : pieces) shapes.push_back({n});
      bytes += sparse_payload_bytes_per_rank(cluster.nodes, codec::expected_packed_size(shapes, method.sparse)) +
               weight_check_bytes_per_rank(cluster.nodes);
    } else {
      const int64_t count = std::accumulate(pieces.begin(), pieces.end(), int64_t{0});
      bytes += dense_exchange_bytes_per_rank(cluster.nodes, count, method.outer_dtype);
    }
  }
  return bytes;
}

Prediction predict(const Cluster& cluster, const Workload& workload, const MethodSpec& method) {
  if (cluster.nodes < 1) throw Error("plan: --nodes must be >= 1, got " + std::to_string(cluster.nodes));
  if (cluster.ranks_per_node < 1) {
    throw Error("plan: --ranks-per-node must be >= 1, got " + std::to_string(cluster.ranks_per_node));
  }
  require_positive(cluster.link_bits_per_s, "the link rate");
  if (!(cluster.link_efficiency > 0 && cluster.link_efficiency <= 1)) {
    throw Error("plan: --link-efficiency must be in (0, 1], got " + std::to_string(cluster.link_efficiency));
  }
  require_positive(workload.params, "--params");
  if (workload.params > 1e15) throw Error("plan: --params must be at most 1e15");
  if (!(workload.sparse_codec_s_per_param >= 0 && workload.sparse_codec_s_per_param < 1)) {
    throw Error("plan: SparseLoCo's codec time per parameter must be in [0, 1) s");
  }
  if (method.sync_every < 1) throw Error("plan: --sync-every must be >= 1, got " + std::to_string(method.sync_every));
  if (method.fragments < 1) throw Error("plan: --fragments must be >= 1, got " + std::to_string(method.fragments));
  if (method.overlap_steps < 0 || method.overlap_steps >= method.sync_every) {
    throw Error("plan: --overlap-steps must be in [0, --sync-every), got " + std::to_string(method.overlap_steps));
  }
  if (method.zero3_inside && cluster.ranks_per_node < 2) {
    throw Error("plan: ZeRO-3 inside replicas needs replicas of at least 2 ranks: give --ranks-per-node 2 or more");
  }
  if (method.zero3_inside && method.kind == Kind::StreamingDiloco) {
    throw Error("plan: streaming DiLoCo with ZeRO-3 inside its replicas is not in plan's model (its fragments are "
                "layers of each rank's shard)");
  }
  double compute = 0;
  if (workload.step_compute_s) {
    require_positive(*workload.step_compute_s, "the step compute time");
    compute = *workload.step_compute_s;
  } else {
    require_positive(workload.tokens_per_rank_step, "--tokens-per-step");
    require_positive(workload.flops_per_rank, "--flops");
    compute = 6 * workload.params * workload.tokens_per_rank_step / workload.flops_per_rank;
  }

  // ZeRO-3's backward recomputes each layer's forward: as a strategy, or inside the replicas.
  const double recomputing = compute * 8 / 6;
  const double replica_compute = method.zero3_inside ? recomputing : compute;
  Prediction p;
  p.method = method;
  const auto params = static_cast<int64_t>(std::llround(workload.params));
  const double h = method.sync_every;
  switch (method.kind) {
    case Kind::Ddp: {
      const auto buckets = ddp_buckets(workload, method.bucket_bytes);
      p.cross_node_bytes_per_node_per_step = ddp_bytes_per_node(cluster, buckets);
      p.compute_s = compute;
      p.comm_s = link_seconds(cluster, p.cross_node_bytes_per_node_per_step);
      // Buckets leave as backward fills them, one after another on the link: the last can start
      // only when backward ends, the first only after 1/b of it.
      const double forward = compute / 3, backward = compute - forward, b = static_cast<double>(buckets.size());
      p.step_time_s = forward + std::max(backward + p.comm_s / b, backward / b + p.comm_s);
      p.time_model = "forward + max(backward + link/buckets, backward/buckets + link)";
      break;
    }
    case Kind::Zero3:
      p.compute_s = recomputing;
      p.cross_node_bytes_per_node_per_step = zero_bytes_per_node(cluster, workload, method);
      p.comm_s = link_seconds(cluster, p.cross_node_bytes_per_node_per_step);
      p.step_time_s = std::max(p.compute_s, p.comm_s);
      p.time_model = "max(compute with recomputed forward, link)";
      break;
    case Kind::LocalSgd:
    case Kind::Diloco:
      block_at_outer_step(p, cluster, replica_compute,
                          method.zero3_inside ? zero3_inside_exchange_bytes_per_node(cluster, workload, method)
                                              : dense_exchange_bytes_per_node(cluster, params, method.outer_dtype));
      break;
    case Kind::StreamingDiloco: {
      // Fragment f syncs once per window and runs behind τ inner steps; its remainder blocks.
      double unhidden = 0;
      for (const int64_t count : fragment_elements(workload, method.fragments)) {
        const double bytes = dense_exchange_bytes_per_node(cluster, count, method.outer_dtype);
        p.fragment_sync_bytes.push_back(bytes);
        p.bytes_per_outer_sync += bytes;
        unhidden += std::max(0.0, link_seconds(cluster, bytes) - method.overlap_steps * compute);
      }
      p.cross_node_bytes_per_node_per_step = p.bytes_per_outer_sync / h;
      p.compute_s = compute;
      p.comm_s = link_seconds(cluster, p.cross_node_bytes_per_node_per_step);
      p.step_time_s = std::max(compute + unhidden / h, p.comm_s);
      p.time_model = "max(compute + what tau steps do not hide / H, link)";
      break;
    }
    case Kind::SparseLoco: {
      // With ZeRO-3 inside, a node's ranks each code their shard's share at once.
      const double codec_s = workload.sparse_codec_s_per_param * workload.params /
                             (method.zero3_inside ? cluster.ranks_per_node : 1);
      const double bytes =
          method.zero3_inside
              ? zero3_inside_exchange_bytes_per_node(cluster, workload, method)
              : sparse_exchange_bytes_per_node(cluster, codec::expected_packed_size(tensor_shapes(workload), method.sparse));
      block_at_outer_step(p, cluster, replica_compute, bytes, codec_s);
      break;
    }
  }
  p.exposed_comm_s = p.step_time_s - p.compute_s;
  return p;
}

std::vector<std::vector<int64_t>> llama_shapes(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                                               bool tied_embeddings) {
  std::vector<std::vector<int64_t>> shapes = {{vocab, hidden}};
  for (int64_t i = 0; i < layers; ++i) {
    shapes.insert(shapes.end(), {{hidden},
                                 {hidden, hidden},
                                 {hidden, hidden},
                                 {hidden, hidden},
                                 {hidden, hidden},
                                 {hidden},
                                 {intermediate, hidden},
                                 {intermediate, hidden},
                                 {hidden, intermediate}});
  }
  shapes.push_back({hidden});
  if (!tied_embeddings) shapes.push_back({vocab, hidden});
  return shapes;
}

std::vector<int64_t> llama_layer_elements(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                                          bool tied_embeddings) {
  const auto shapes = llama_shapes(vocab, hidden, intermediate, layers, tied_embeddings);
  auto elements = [&](size_t index) {
    int64_t n = 1;
    for (int64_t d : shapes[index]) n *= d;
    return n;
  };
  // llama_shapes' order: embedding, 9 tensors a layer, final norm, then the head unless tied.
  const size_t per_layer = (shapes.size() - 2 - (tied_embeddings ? 0 : 1)) / static_cast<size_t>(layers);
  std::vector<int64_t> result;
  for (int64_t layer = 0; layer < layers; ++layer) {
    int64_t total = 0;
    for (size_t t = 0; t < per_layer; ++t) total += elements(1 + layer * per_layer + t);
    result.push_back(total);
  }
  result.front() += elements(0);
  for (size_t t = 1 + layers * per_layer; t < shapes.size(); ++t) result.back() += elements(t);
  return result;
}

Recommendation recommend(const std::vector<Prediction>& predictions) {
  if (predictions.empty()) throw Error("plan: no methods to compare");
  Recommendation best;
  for (size_t i = 1; i < predictions.size(); ++i) {
    if (predictions[i].step_time_s < predictions[best.index].step_time_s) best.index = i;
  }
  const Prediction& p = predictions[best.index];
  std::ostringstream reason;
  reason << p.method.name << ": " << seconds_text(p.step_time_s) << " a step, " << bytes_text(p.cross_node_bytes_per_node_per_step)
         << " across each node's link per step";
  for (const Prediction& other : predictions) {
    if (other.method.kind == Kind::Ddp && other.step_time_s > p.step_time_s) {
      reason << ", " << std::setprecision(3) << other.step_time_s / p.step_time_s << "x DDP's speed";
    }
  }
  reason << (p.exposed_comm_s <= 0.05 * p.step_time_s ? "; the link is (nearly) hidden behind compute"
                                                       : "; the exchange still costs " + seconds_text(p.exposed_comm_s) + " a step");
  // An outer method wins on speed by changing the optimisation: name the best that does not.
  if (changes_optimisation(p.method.kind)) {
    const Prediction* exact = nullptr;
    for (const Prediction& other : predictions) {
      if (!changes_optimisation(other.method.kind) && (!exact || other.step_time_s < exact->step_time_s)) exact = &other;
    }
    if (exact) {
      reason << ". Fastest with DDP's optimisation: " << exact->method.name << ", " << seconds_text(exact->step_time_s)
             << " a step";
    }
  }
  best.reason = reason.str();
  return best;
}

namespace {

const char* kQualityCaveat =
    "local SGD, DiLoCo, streaming DiLoCo and SparseLoCo change the optimisation (replicas drift apart for H steps): at "
    "equal tokens their loss can be worse than DDP's or ZeRO's (BENCHMARKS.md, a 0.87M-parameter model at H = 10-50: "
    "+1% to +15% by method, H and run length; DiLoCo with the paper's momentum 0.9 at least +6%, with --outer-lr 0.5 "
    "--outer-momentum 0.5 +0.8% to +2.6% at H = 10-15 and +5.8% at H = 50), so check the loss at your scale before "
    "choosing them on speed alone";

std::vector<std::string> assumptions(const Cluster& cluster, const Workload& workload, bool zero3_inside) {
  std::vector<std::string> lines = {
      "bytes: what the busiest node sends across its link (it receives as many), from Gloo's ring/all-to-all models "
      "(comm/gloo_algorithms.h) and the wire codecs' sizes",
      "outer methods: one replica per node (" + std::to_string(cluster.nodes) + " replicas), " +
          (zero3_inside ? "ZeRO-3 inside the node (each rank exchanges its shard)" : "DDP inside the node") +
          " on links taken as free",
      "DDP: float32 gradient buckets, hierarchical all-reduce (reduce-scatter in the node, ring across nodes, "
      "all-gather in the node); loss and weight-check scalars of 8 bytes are counted for outer methods only",
      "ZeRO-3/ZeRO++: the collectives of ALGORITHMS.md section 1 with Gloo's ring; "
      "qwZ int8 and qgZ int4 in blocks of 256 with a float32 scale",
      "SparseLoCo: the payload's expected size for random top-k positions (codec::expected_packed_size)",
  };
  if (workload.sparse_codec_s_per_param > 0) {
    std::ostringstream codec;
    codec << "SparseLoCo's codec (top-k, quantization, packing, decoding) blocks each sync for "
          << workload.sparse_codec_s_per_param * 1e9
          << " ns per parameter, as measured or given (decoding grows with the replicas, which this leaves out)";
    lines.push_back(codec.str());
  } else {
    lines.push_back("SparseLoCo's codec time is left out (give --measured with a SparseLoCo run, or --codec-ns-per-param)");
  }
  std::ostringstream link;
  link << "link time = bytes x 8 / (rate x " << cluster.link_efficiency
       << "): TCP payload's share of the nominal rate; no per-message latency";
  lines.push_back(link.str());
  lines.push_back(workload.step_compute_s ? "compute: the given or measured step compute time (x 8/6 for ZeRO)"
                                          : "compute: 6 x params x tokens per rank per step / FLOP/s per rank (8 x for "
                                            "ZeRO: backward recomputes the forward)");
  return lines;
}

}  // namespace

nlohmann::json sync_conditions_json(const std::vector<SyncConditionCell>& cells) {
  nlohmann::json json = nlohmann::json::array();
  for (const SyncConditionCell& cell : cells) {
    json.push_back({{"method", cell.name},
                    {"link_bits_per_s", cell.link_bits_per_s},
                    {"replicas", cell.replicas},
                    {"bytes_per_sync", cell.condition.bytes_per_sync},
                    {"sync_s", cell.condition.sync_s},
                    {"step_compute_s", cell.condition.compute_s},
                    {"smallest_sync_every", cell.condition.smallest_sync_every}});
  }
  return json;
}

nlohmann::json plan_json(const Cluster& cluster, const Workload& workload, const std::vector<Prediction>& predictions) {
  nlohmann::json methods = nlohmann::json::array();
  for (const Prediction& p : predictions) {
    nlohmann::json entry = {{"method", p.method.name},
                            {"cross_node_bytes_per_node_per_step", p.cross_node_bytes_per_node_per_step},
                            {"step_time_s", p.step_time_s},
                            {"compute_s", p.compute_s},
                            {"comm_s", p.comm_s},
                            {"exposed_comm_s", p.exposed_comm_s},
                            {"time_model", p.time_model},
                            {"changes_optimisation", changes_optimisation(p.method.kind)}};
    if (changes_optimisation(p.method.kind)) {
      entry["sync_every"] = p.method.sync_every;
      entry["bytes_per_outer_sync"] = p.bytes_per_outer_sync;
    }
    if (p.method.kind == Kind::SparseLoco) entry["codec_s_per_outer_sync"] = p.codec_s_per_outer_sync;
    methods.push_back(entry);
  }
  const Recommendation best = recommend(predictions);
  nlohmann::json workload_json = {{"params", workload.params}, {"sparse_codec_s_per_param", workload.sparse_codec_s_per_param}};
  if (workload.step_compute_s) workload_json["step_compute_s"] = *workload.step_compute_s;
  else workload_json.update({{"tokens_per_rank_step", workload.tokens_per_rank_step}, {"flops_per_rank", workload.flops_per_rank}});
  return {{"cluster",
           {{"nodes", cluster.nodes},
            {"ranks_per_node", cluster.ranks_per_node},
            {"link_bits_per_s", cluster.link_bits_per_s},
            {"link_efficiency", cluster.link_efficiency}}},
          {"workload", workload_json},
          {"assumptions", assumptions(cluster, workload,
                                      std::any_of(predictions.begin(), predictions.end(),
                                                  [](const Prediction& p) { return p.method.zero3_inside; }))},
          {"methods", methods},
          {"recommendation", {{"method", predictions[best.index].method.name}, {"reason", best.reason}, {"caveat", kQualityCaveat}}}};
}

std::string plan_table(const Cluster& cluster, const Workload& workload, const std::vector<Prediction>& predictions) {
  std::ostringstream out;
  const bool gbit = cluster.link_bits_per_s >= 1e9;
  out << "strait plan: " << cluster.nodes << (cluster.nodes == 1 ? " node x " : " nodes x ") << cluster.ranks_per_node
      << (cluster.ranks_per_node == 1 ? " rank, " : " ranks, ")
      << cluster.link_bits_per_s / (gbit ? 1e9 : 1e6) << (gbit ? " Gbit/s" : " Mbit/s") << " per node link, "
      << count_text(workload.params) << " parameters\n";
  out << std::left << std::setw(40) << "method" << std::right << std::setw(14) << "bytes/step" << std::setw(14)
      << "per sync" << std::setw(12) << "compute" << std::setw(12) << "link" << std::setw(12) << "exposed"
      << std::setw(12) << "step" << "\n";
  for (const Prediction& p : predictions) {
    out << std::left << std::setw(40) << p.method.name << std::right << std::setw(14)
        << bytes_text(p.cross_node_bytes_per_node_per_step) << std::setw(14)
        << (p.bytes_per_outer_sync > 0 ? bytes_text(p.bytes_per_outer_sync) : "-") << std::setw(12)
        << seconds_text(p.compute_s) << std::setw(12) << seconds_text(p.comm_s) << std::setw(12)
        << seconds_text(p.exposed_comm_s) << std::setw(12) << seconds_text(p.step_time_s) << "\n";
  }
  const Recommendation best = recommend(predictions);
  out << "recommendation: " << best.reason << "\n";
  if (changes_optimisation(predictions[best.index].method.kind)) out << "caveat: " << kQualityCaveat << "\n";
  return out.str();
}

namespace {

// The upper median (the element at n / 2 once sorted); `values` is reordered. Not empty.
double median_high(std::vector<double>& values) {
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2), values.end());
  return values[values.size() / 2];
}

}  // namespace

// Runs `read`, which takes fields out of a run's JSON files: those are input, not trusted, so a
// field of an unexpected type ends as a strait::Error naming the file, not an internal error.
template <typename Read>
void reading_json(const std::string& where, Read read) {
  try {
    read();
  } catch (const nlohmann::json::exception& error) {
    throw Error("plan: " + where + ": a field has an unexpected type (" + error.what() + ")");
  }
}

double weight_broadcast_bytes_per_node(const Cluster& cluster, double params) {
  const auto bytes = static_cast<uint64_t>(params) * sizeof(float);
  const std::vector<double> by_node = sent_by_node(
      cluster, [&](int rank) { return gloo::binomial_broadcast(rank, cluster.ranks(), 0, bytes); });
  return std::accumulate(by_node.begin(), by_node.end(), 0.0) / cluster.nodes;
}

SyncCondition sync_condition(const Cluster& cluster, const Workload& workload, MethodSpec method, double budget) {
  if (method.kind != Kind::LocalSgd && method.kind != Kind::Diloco && method.kind != Kind::SparseLoco) {
    throw Error("plan: the smallest H is for methods that block at the outer step (local-sgd, diloco, sparseloco), not " +
                method.name);
  }
  if (!(budget > 0 && budget < 1)) throw Error("plan: the exchange's share of compute must be in (0, 1)");
  method.sync_every = 1;  // the exchange's bytes and time do not depend on H
  const Prediction p = predict(cluster, workload, method);
  SyncCondition condition;
  condition.bytes_per_sync = p.bytes_per_outer_sync;
  condition.sync_s = link_seconds(cluster, p.bytes_per_outer_sync) + p.codec_s_per_outer_sync;
  condition.compute_s = p.compute_s;
  const double threshold = condition.sync_s / (budget * condition.compute_s);
  if (threshold >= 1e9) throw Error("plan: the exchange takes more than 1e9 steps of compute; no useful H");
  condition.smallest_sync_every = static_cast<int>(std::floor(threshold)) + 1;
  return condition;
}

std::vector<SyncConditionCell> sync_conditions(const Cluster& cluster, const Workload& workload,
                                               const std::vector<MethodSpec>& methods,
                                               const std::vector<double>& link_rates, const std::vector<int>& replicas,
                                               double budget) {
  if (link_rates.empty() || replicas.empty()) {
    throw Error("plan: the smallest H needs at least one link rate and one replica count");
  }
  std::vector<SyncConditionCell> cells;
  for (const MethodSpec& method : methods) {
    const std::string name = std::regex_replace(method.name, std::regex(" H=[0-9]+"), "");
    for (const double rate : link_rates) {
      for (const int r : replicas) {
        Cluster shaped = cluster;
        shaped.nodes = r;
        shaped.link_bits_per_s = rate;
        cells.push_back({method, name, rate, r, sync_condition(shaped, workload, method, budget)});
      }
    }
  }
  return cells;
}

std::string sync_condition_table(const Cluster& cluster, const Workload& workload, const std::vector<MethodSpec>& methods,
                                 const std::vector<double>& link_rates, const std::vector<int>& replicas, double budget) {
  std::ostringstream out;
  out << "smallest H at which one outer exchange costs < " << budget * 100 << "% of H steps' compute ("
      << count_text(workload.params) << " parameters, one replica per node of " << cluster.ranks_per_node
      << (cluster.ranks_per_node == 1 ? " rank" : " ranks") << ")\n";
  out << std::left << std::setw(24) << "method" << std::setw(12) << "link";
  for (const int r : replicas) out << std::right << std::setw(12) << ("R=" + std::to_string(r));
  out << "\n";
  const std::vector<SyncConditionCell> cells = sync_conditions(cluster, workload, methods, link_rates, replicas, budget);
  // One row per method and rate: replicas.size() cells in a row.
  for (size_t row = 0; row < cells.size(); row += replicas.size()) {
    const double rate = cells[row].link_bits_per_s;
    std::ostringstream link;
    link << (rate >= 1e9 ? rate / 1e9 : rate / 1e6) << (rate >= 1e9 ? " Gbit/s" : " Mbit/s");
    out << std::left << std::setw(24) << cells[row].name << std::setw(12) << link.str() << std::right;
    for (size_t column = 0; column < replicas.size(); ++column) {
      out << std::setw(12) << cells[row + column].condition.smallest_sync_every;
    }
    out << "\n";
  }
  return out.str();
}

MeasuredRun read_measured_run(const std::string& run_dir) {
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  std::ifstream metrics(metrics_path);
  if (!metrics) throw Error("plan: --measured " + run_dir + ": no metrics.jsonl there (is it a strait run directory?)");
  std::vector<double> quiet_steps, compute_parts, codec_ms_per_value;
  std::string line;
  for (int number = 1; std::getline(metrics, line); ++number) {
    if (line.empty()) continue;
    const auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object() || !entry.contains("step_ms")) continue;
    reading_json(metrics_path + " line " + std::to_string(number), [&] {
      const double cross = entry.contains("traffic") ? entry.at("traffic").at("cross_node").value("sent", 0.0) : 0.0;
      if (cross == 0 && !entry.contains("outer_sync")) quiet_steps.push_back(entry.at("step_ms").get<double>());
      if (entry.contains("forward_ms") && entry.contains("backward_ms")) {
        compute_parts.push_back(entry.at("forward_ms").get<double>() + entry.at("backward_ms").get<double>());
      }
      // Per value coded: a sync may code one fragment, or (ZeRO-3 inside) one rank's shard.
      if (entry.contains("outer_sync") && entry.at("outer_sync").contains("codec_ms") &&
          entry.at("outer_sync").value("dense_bytes", 0.0) > 0) {
        const auto& sync = entry.at("outer_sync");
        codec_ms_per_value.push_back(sync.at("codec_ms").get<double>() / (sync.at("dense_bytes").get<double>() / 4));
      }
    });
  }
  std::vector<double>& chosen = quiet_steps.empty() ? compute_parts : quiet_steps;
  if (chosen.empty()) throw Error("plan: --measured " + run_dir + ": metrics.jsonl has no step with step_ms");
  MeasuredRun run;
  run.step_compute_s = median_high(chosen) / 1000;
  std::ifstream summary_file(run_dir + "/summary.json");
  if (summary_file) {
    const auto summary = nlohmann::json::parse(summary_file, nullptr, false);
    if (!summary.is_discarded() && summary.is_object()) {
      reading_json(run_dir + "/summary.json", [&] {
        if (summary.contains("parameters")) run.params = summary.at("parameters").get<double>();
        if (summary.contains("tokens_per_step") && summary.value("world_size", 0) > 0) {
          run.tokens_per_rank_step = summary.at("tokens_per_step").get<double>() / summary.at("world_size").get<double>();
        }
      });
    }
  }
  // A ZeRO-3 run's steps recompute the forward, which predict() adds (8/6) to the compute it is
  // given: the run's own compute, without it.
  std::ifstream train_config_file(run_dir + "/train_config.json");
  if (train_config_file) {
    const auto train_config = nlohmann::json::parse(train_config_file, nullptr, false);
    if (!train_config.is_discarded() && train_config.is_object()) {
      reading_json(run_dir + "/train_config.json", [&] {
        if (train_config.value("strategy", "") == "zero3" || train_config.value("inner", "") == "zero3") {
          run.step_compute_s *= 6.0 / 8.0;
        }
      });
    }
  }
  if (!codec_ms_per_value.empty()) run.sparse_codec_s_per_param = median_high(codec_ms_per_value) / 1000;
  // The model's shapes make SparseLoCo's payload and DDP's buckets exact.
  std::ifstream config_file(run_dir + "/config.json");
  if (config_file) {
    const auto config = nlohmann::json::parse(config_file, nullptr, false);
    const char* keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"};
    if (!config.is_discarded() && std::all_of(std::begin(keys), std::end(keys), [&](const char* key) {
          return config.contains(key) && config[key].is_number_integer() && config[key].get<int64_t>() > 0;
        })) {
      reading_json(run_dir + "/config.json", [&] {
        const bool tied = config.value("tie_word_embeddings", false);
        run.shapes = llama_shapes(config["vocab_size"], config["hidden_size"], config["intermediate_size"],
                                  config["num_hidden_layers"], tied);
        run.layer_elements = llama_layer_elements(config["vocab_size"], config["hidden_size"],
                                                  config["intermediate_size"], config["num_hidden_layers"], tied);
      });
    }
  }
  return run;
}

}  // namespace strait::plan
