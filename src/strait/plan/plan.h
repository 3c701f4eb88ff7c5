// strait plan: what each training method would put on the slow links between nodes, and how long
// a step would take, before anything is run. No LibTorch: the byte counts come from the same
// models the traffic ledger uses (comm/gloo_algorithms.h for Gloo's collectives, the wire codecs'
// encoded sizes for DiLoCo's outer exchange and SparseLoCo's payload).
//
// Intended usage:
//   plan::Cluster cluster{8, 8, plan::parse_link_rate("12.5gbit")};
//   plan::Workload work;  work.params = 7e9;  work.tokens_per_rank_step = 4096;  work.flops_per_rank = 300e12;
//   for (const plan::MethodSpec& method : plan::default_methods(plan::MethodOptions{}))
//     plan::Prediction p = plan::predict(cluster, work, method);
//   nlohmann::json report = plan::plan_json(cluster, work, predictions);
//
// The model, stated once (README "strait plan" repeats it for users):
// - One replica per node for the outer methods (DDP inside the node on its fast links, which are
//   taken as free, or ZeRO-3: each rank then keeps and exchanges its shard), R = nodes replicas;
//   DDP and ZeRO span every rank.
// - Bytes are those the busiest node sends across its link per step (the links are symmetric:
//   it receives as many); outer methods' bytes per sync are spread over the H steps of a window.
// - Compute per step: 6 x params x tokens per rank / FLOP/s (8 x for ZeRO, whose backward
//   recomputes each layer's forward), or a measured step compute time.
// - Time: DDP = forward + the later of (backward, the link) with the buckets pipelined behind
//   backward (forward 1/3 of compute); ZeRO, whose prefetched gathers and reduce-scatters overlap
//   all compute: max(compute, link); local SGD, DiLoCo, SparseLoCo block at the outer step:
//   compute + exchange / H (SparseLoCo's exchange adds its codec's CPU time when known, which
//   scales with the parameters); streaming DiLoCo hides each fragment's exchange behind τ inner steps:
//   max(compute + the unhidden part / H, link).
// - Link time = bytes x 8 / (rate x efficiency): efficiency is the share of the nominal rate that
//   TCP payload gets (headers, the shaper's queue), 0.94 by default.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strait/codec/sparse_codec.h"
#include "strait/codec/wire_codec.h"

namespace strait::plan {

// "12.5gbit", "100mbit", "20mbit", "1gbit", "800kbit", "1e9bit": bits per second, as tc writes
// rates (powers of 1000). Throws strait::Error naming the text and the accepted form.
double parse_link_rate(const std::string& text);

struct Cluster {
  int nodes = 1;
  int ranks_per_node = 1;
  double link_bits_per_s = 0;     // each node's link, each direction
  double link_efficiency = 0.94;  // TCP payload / nominal rate (1448 of 1538 bytes a full frame)
  int ranks() const { return nodes * ranks_per_node; }
};

struct Workload {
  double params = 0;                // parameters of the model
  double tokens_per_rank_step = 0;  // tokens each rank trains on per step (batch x context x accumulation)
  double flops_per_rank = 0;        // sustained FLOP/s of one rank
  // A measured (or given) compute time of one step, which replaces the FLOP estimate; for ZeRO
  // it is scaled by 8/6 for the recomputed forward.
  std::optional<double> step_compute_s;
  // The model's tensors (for SparseLoCo's chunking and DDP's buckets); empty = params as 64 x 64
  // tiles.
  std::vector<std::vector<int64_t>> shapes;
  // Elements per decoder layer, the embedding counted with the first and the final norm and head
  // with the last: streaming DiLoCo's fragment p holds layers p, p + P, ...; empty = P equal parts.
  std::vector<int64_t> layer_elements;
  // SparseLoCo's codec CPU time per parameter per outer sync (error feedback, top-k, 2-bit
  // quantization, packing, decoding the replicas' payloads), measured (MeasuredRun) or given;
  // 0 leaves it out of the model. With ZeRO-3 inside, each of a node's ranks codes its share.
  double sparse_codec_s_per_param = 0;
};

enum class Kind { Ddp, Zero3, LocalSgd, Diloco, StreamingDiloco, SparseLoco };

struct MethodSpec {
  std::string name;  // e.g. "zero++ (hpz+qwz+qgz)", "diloco H=15 int8"
  Kind kind = Kind::Ddp;
  // DDP: gradients travel in float32 buckets of this size (strait's --bucket-mb, 25 MiB default).
  double bucket_bytes = 25.0 * 1024 * 1024;
  // ZeRO: the dtype weights and gradients travel in (bf16, the ZeRO++ paper's) and the options.
  codec::WireDtype wire_dtype = codec::WireDtype::Bf16;
  bool hpz = false, qwz = false, qgz = false;
  // Outer methods.
  int sync_every = 15;                                 // H
  codec::WireDtype outer_dtype = codec::WireDtype::Fp32;  // local SGD, DiLoCo
  int fragments = 1;                                   // streaming DiLoCo (and SparseLoCo)
  int overlap_steps = 0;                               // τ, streaming DiLoCo
  codec::SparseOptions sparse;                         // SparseLoCo: topk, index coding
  // Local SGD, DiLoCo, SparseLoCo: ZeRO-3 inside each replica instead of DDP (--inner zero3):
  // every rank exchanges its shard's pieces, and its compute recomputes the forward.
  bool zero3_inside = false;
};

// The options of `strait plan` that shape the methods.
struct MethodOptions {
  int sync_every = 15;
  codec::WireDtype outer_dtype = codec::WireDtype::Fp32;
  int fragments = 4;
  int overlap_steps = 5;
  codec::WireDtype wire_dtype = codec::WireDtype::Bf16;
  double bucket_bytes = 25.0 * 1024 * 1024;
  codec::SparseOptions sparse;
  bool zero3_inside = false;  // the outer methods' replicas run ZeRO-3 (streaming DiLoCo: not modelled)
};

// The names `--method` accepts, in the table's order: ddp, zero3, zero3+hpz, zero3+qwz, zero3+qgz,
// zero3+hpz+qwz, zero++ (hpz+qwz+qgz), local-sgd, diloco, streaming-diloco, sparseloco.
std::vector<std::string> method_names();
// The method called `name` (one of method_names()) with `options`. Throws strait::Error for an
// unknown name, with the nearest one ("did you mean 'diloco'?") and the list.
MethodSpec method_named(const std::string& name, const MethodOptions& options);

struct Prediction {
  MethodSpec method;
  double cross_node_bytes_per_node_per_step = 0;  // the busiest node's, sent
  double bytes_per_outer_sync = 0;                // outer methods: the busiest node's per sync (all fragments)
  double codec_s_per_outer_sync = 0;              // SparseLoCo: its codec's CPU time per sync, which blocks too
  std::vector<double> fragment_sync_bytes;        // streaming DiLoCo: each fragment's exchange
  double compute_s = 0;                           // per step
  double comm_s = 0;                              // per step: the link time of the step's bytes
  double exposed_comm_s = 0;                      // per step: what compute does not hide
  double step_time_s = 0;
  std::string time_model;                         // the formula used, in words
};

// Throws strait::Error when a cluster or workload value is out of range (naming it).
Prediction predict(const Cluster& cluster, const Workload& workload, const MethodSpec& method);

// Cross-node bytes the busiest node sends per step for DDP's hierarchical all-reduce of float32
// buckets of `bucket_elements` each (Gloo's ring across nodes on 1/k of each bucket; a plain ring
// when a node has one rank; none on one node).
double ddp_bytes_per_node(const Cluster& cluster, const std::vector<int64_t>& bucket_elements);
// DiLoCo's (and local SGD's) dense exchange of `count` float32 values in `dtype` across R = nodes
// replicas of k ranks (replica_exchange.h) plus the 8-byte weight check: bytes one node sends.
double dense_exchange_bytes_per_node(const Cluster& cluster, int64_t count, codec::WireDtype dtype);
// SparseLoCo's all-gather of one payload of `payload_bytes` per replica (and the weight check).
double sparse_exchange_bytes_per_node(const Cluster& cluster, double payload_bytes);
// Local SGD's, DiLoCo's or SparseLoCo's exchange with ZeRO-3 inside a node's replica: each of its
// ranks exchanges the pieces of its shard (strategy/zero3.h) with its counterparts.
double zero3_inside_exchange_bytes_per_node(const Cluster& cluster, const Workload& workload, const MethodSpec& method);

// The tensors of strait's Llama decoder in its parameter order (model/llama.cpp, mirrored here
// without LibTorch): embedding, per layer the two norms, q/k/v/o, gate/up/down, final norm, head.
std::vector<std::vector<int64_t>> llama_shapes(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                                               bool tied_embeddings);
// Its elements per layer, as Workload::layer_elements counts them.
std::vector<int64_t> llama_layer_elements(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                                          bool tied_embeddings);

// The start-up broadcast of rank 0's float32 weights to every rank (Gloo's binomial tree):
// cross-node bytes per node, averaged over the nodes as the ledger's per-node totals are. The
// ledger's and the kernel's totals of a run hold it; the per-step figures above do not.
double weight_broadcast_bytes_per_node(const Cluster& cluster, double params);

// Multi-cluster conditions (ALGORITHMS.md section 2): the smallest H at which a method that blocks
// at the outer step (local SGD, DiLoCo, SparseLoCo) spends less than `budget` (0.1: 10%) of H inner
// steps' compute on one exchange: the smallest integer H > exchange time / (budget x step
// compute). Its exchange (the link's time, and SparseLoCo's codec time when known) does not
// depend on H (the whole model, or SparseLoCo's payload). Throws strait::Error for a method that
// does not block at the outer step, or as predict() does.
struct SyncCondition {
  double bytes_per_sync = 0;  // the busiest node's
  double sync_s = 0;          // its link time (+ SparseLoCo's codec time)
  double compute_s = 0;       // one inner step
  int smallest_sync_every = 1;
};
SyncCondition sync_condition(const Cluster& cluster, const Workload& workload, MethodSpec method, double budget = 0.1);
// One cell of the table below: a method, a link rate and a replica count (one replica per node).
struct SyncConditionCell {
  MethodSpec method;
  std::string name;  // the method's name without its H, which the table varies ("diloco", "diloco int8")
  double link_bits_per_s = 0;
  int replicas = 0;
  SyncCondition condition;
};
// Every cell: method by method, then link rate by link rate, then replica count.
std::vector<SyncConditionCell> sync_conditions(const Cluster& cluster, const Workload& workload,
                                               const std::vector<MethodSpec>& methods,
                                               const std::vector<double>& link_rates, const std::vector<int>& replicas,
                                               double budget);
// The cells as JSON (strait plan --json --min-sync-every): [{"method", "link_bits_per_s",
// "replicas", "bytes_per_sync", "sync_s", "step_compute_s", "smallest_sync_every"}, ...].
nlohmann::json sync_conditions_json(const std::vector<SyncConditionCell>& cells);
// The table of smallest H per link rate (rows) and replica count (columns: one replica per node)
// for each method, as text.
std::string sync_condition_table(const Cluster& cluster, const Workload& workload, const std::vector<MethodSpec>& methods,
                                 const std::vector<double>& link_rates, const std::vector<int>& replicas, double budget);

// The fastest prediction's index, and a one-line reason.
struct Recommendation {
  size_t index = 0;
  std::string reason;
};
Recommendation recommend(const std::vector<Prediction>& predictions);

// {"cluster": {...}, "workload": {...}, "assumptions": [...], "methods": [{"method", "cross_node_bytes_per_node_per_step",
//  "step_time_s", "compute_s", "comm_s", "exposed_comm_s", "bytes_per_outer_sync", "time_model", ...}],
//  "recommendation": {...}}
nlohmann::json plan_json(const Cluster& cluster, const Workload& workload, const std::vector<Prediction>& predictions);
// The same as an aligned text table with the recommendation and its caveat under it.
std::string plan_table(const Cluster& cluster, const Workload& workload, const std::vector<Prediction>& predictions);

// The compute time of one step measured in a strait run directory's metrics.jsonl: the median
// step_ms of the steps that sent nothing across nodes (outer methods between syncs), else the
// median forward_ms + backward_ms (DDP, whose update waits on the link); for a ZeRO-3 run
// (train_config.json), 6/8 of it, as predict() adds the recomputed forward. Also the run's
// parameters and tokens per rank per step (summary.json), its model's tensor shapes
// (config.json) and, for SparseLoCo, its codec's time per parameter, when recorded.
struct MeasuredRun {
  double step_compute_s = 0;
  std::optional<double> params;
  std::optional<double> tokens_per_rank_step;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> layer_elements;
  // SparseLoCo runs: the median over rank 0's outer syncs of codec_ms per value it coded (its
  // dense_bytes / 4: the sync's fragments, or with ZeRO-3 inside its shard), in s; 0 for others.
  double sparse_codec_s_per_param = 0;
};
// Throws strait::Error naming the directory when it holds no usable metrics.
MeasuredRun read_measured_run(const std::string& run_dir);

}  // namespace strait::plan
