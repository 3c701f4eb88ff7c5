// ZeRO-3 as an inner method (ALGORITHMS.md section 1): each of a replica's N ranks keeps 1/N of
// the weights, of the gradients and of the optimizer state, and gathers a layer's full weights
// only while it computes with them.
//
// Units and shards. The model's parameters form units: the embedding, each transformer layer,
// and the head (final norm, plus the LM head when it is not tied to the embedding). A unit's
// parameters are laid end to end in one flat fp32 vector, zero-padded to N * S elements; rank r
// owns elements [r S, (r + 1) S): its shard, the master copy it updates. The optimizer sees the
// shard as pieces, one per parameter it overlaps (named after the parameter), so AdamW's state
// is per shard too and weight decay still skips the norms.
//
// One micro-batch (forward_backward):
//   forward, without autograd: gather the embedding (held for the whole micro-batch: a tied LM
//     head needs it again, and its gradient completes last), then each layer in turn, keeping
//     only each layer's input; then the head, with autograd, which starts backward;
//   backward, layer by layer from the last: gather the layer again, recompute it with autograd
//     from its saved input, backpropagate, and reduce-scatter the layer's gradients to their
//     shards; the embedding's gradient last.
// Every gather is issued one unit ahead of its use (prefetch), so the next unit's transfer runs
// while this one computes; a unit's full weights are freed as soon as it is done. Gathers and
// reduce-scatters are rings (Group::all_gather, ring_reduce_scatter_sum: in node order only one
// rank per node sends across) and go on the replica group's lane in one order that is the same
// on every rank.
// Gradients are reduce-scattered every micro-batch and accumulated in the shards in fp32.
//
// ZeRO++ (arXiv 2306.10209), each a switch:
// - qwZ (quantized_weights): the shards travel block-quantized as int8 (one fp32 scale per 256
//   values) in the gathers from the primary shards, and every rank (the owner too) computes with
//   the dequantized values, so all ranks see the same weights.
// - hpZ (hpz_partition_size k = the ranks of a node): when a unit is gathered from the primary
//   shards, each rank also keeps a secondary slice, 1/k of the unit's gathered weights, copied
//   (no network) on a thread of its own. While the secondary slices are valid, gathers of the
//   unit (backward's, the next micro-batches', validation's) run inside the node from them. A
//   gather reads a secondary slice only after waiting on the future of its write, an explicit
//   dependency rather than a matter of timing (the race of arXiv 2407.01614); the time spent
//   waiting is measured. The slices are invalidated after every optimizer step and whenever
//   the weights are written otherwise (broadcast, checkpoint load). The secondary gathers carry
//   the gathered values losslessly (bf16 when that is the wire and no qwZ, else fp32), so hpZ
//   changes no value.
// - qgZ (a QuantizedReduceScatter, several nodes): gradients are reduced with the hierarchical
//   int4 all-to-all instead of the reduce-scatter; it runs on a lane of its own (its groups are
//   its own too), so backward goes on while it runs.
//
// step() clips by the global norm (the shards' squared norms summed over the replica) and runs
// the optimizer on the shards. The model's own parameters hold no weights between uses (empty
// tensors); checkpoints therefore keep each rank's shard (Placement::Sharded), and load_model
// consolidates them for eval, generate and export.
#pragma once

#include <deque>
#include <future>
#include <memory>
#include <optional>
#include <vector>

#include "strait/codec/wire_codec.h"
#include "strait/comm/communicator.h"
#include "strait/comm/lane.h"
#include "strait/comm/quantized_reduce_scatter.h"
#include "strait/strategy/inner.h"

namespace strait {

struct ZeroOptions {
  // What the gathers and reduce-scatters carry: fp32, or bf16 (half the bytes; the shards, the
  // accumulated gradients and the optimizer stay fp32).
  codec::WireDtype wire = codec::WireDtype::Fp32;
  bool quantized_weights = false;  // qwZ
  int hpz_partition_size = 1;      // hpZ's k: 1 (off) or the ranks per node
  // Tests only (STRAIT_TEST_SKIP_HPZ_REFRESH=1): keep the secondary slices valid across optimizer
  // steps, the stale-secondary bug, so that a test can show it is caught.
  bool skip_hpz_refresh = false;
};

class ZeroInner final : public InnerSync {
 public:
  // `replica`: the ranks that share the model state (the communicator's world() when ZeRO-3 is
  // the whole strategy); `node`: this rank's node's ranks, for hpZ (null without hpZ). Both
  // must outlive this object. Error if hpz_partition_size is neither 1 nor node's size.
  // `quantized_gradients`: qgZ's collective on groups of its own (null: the reduce-scatter).
  ZeroInner(comm::Group& replica, comm::Group* node, ZeroOptions options,
            std::unique_ptr<comm::QuantizedReduceScatter> quantized_gradients = nullptr);

  std::string name() const override { return "zero3"; }
  void prepare(const LlamaModel& model) override;
  TrainableParameters trainable_parameters(LlamaModel& model) override;
  void weights_synchronized(LlamaModel& model, bool restored) override;
  // This rank's shard, as the optimizer's pieces: an outer method exchanges it with the same
  // shard of the other replicas.
  std::vector<NamedParameter> replica_weights(const LlamaModel& model) override;
  void replica_weights_written() override { invalidate_secondaries(); }
  MicroBatchResult forward_backward(LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets,
                                    double loss_divisor, bool last) override;
  double batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) override;
  void before_backward(bool) override {}
  double step(LlamaModel& model, Optimizer& optimizer, double lr, double max_norm) override;
  double mean(double value, ReplicaVotes& votes) override;
  double take_blocked_seconds() override;
  nlohmann::json report() const override;

 private:
  struct Unit {
    std::vector<NamedParameter> parameters;  // the model's, in model order
    std::vector<int64_t> offsets;            // of each parameter in the unit's flat vector
    std::vector<std::vector<int64_t>> shapes;  // of each parameter (the model's are empty between uses)
    int64_t numel = 0;                       // of the unit, unpadded
    int64_t shard_numel = 0;                 // S
    torch::Tensor shard;                     // (S) this rank's weights
    torch::Tensor shard_gradient;            // (S) reduced gradients, accumulated over micro-batches
    // hpZ: this rank's 1/k slice of the gathered unit, valid once `written` is ready.
    int64_t secondary_numel = 0;             // S2 = ceil(numel / k)
    torch::Tensor secondary;
    std::shared_future<void> written;
    bool secondary_valid = false;
  };
  struct Gather {
    size_t unit = 0;
    bool from_secondary = false;         // inside the node, from the hpZ slices
    torch::Tensor input;                 // this rank's shard (or slice), encoded
    torch::Tensor wire;                  // every member's encoding, filled by the collective
    std::vector<torch::Tensor> outputs;  // views of `wire`, one per member
    comm::Work work;
  };
  struct Reduction {
    size_t unit = 0;
    torch::Tensor input;   // (N S) gradients in the wire dtype
    torch::Tensor output;  // (S) the sum of this rank's slice
    comm::Work work;       // the reduce-scatter's
    std::future<void> quantized;  // qgZ's instead, run on quantized_lane_
  };

  size_t layer_unit(int64_t layer) const { return 1 + static_cast<size_t>(layer); }
  size_t head_unit() const { return units_.size() - 1; }
  // Copies this rank's shard of every unit out of the model's full weights.
  void take_shards();
  // Starts the gathers of `sequence` (units in the order they will be used); acquire() then
  // takes them one by one, each time issuing the next so that one transfer is always ahead.
  void begin_gathers(std::vector<size_t> sequence);
  // Waits for the next gathered unit of the sequence (which must be `unit`) and points the
  // model's parameters at its full weights.
  void acquire(size_t unit);
  // Frees a unit's full weights (the parameters become empty) and its gradients.
  void release(size_t unit);
  void issue_next_gather();
  // Starts the reduce-scatter of a unit's parameters' gradients (zero where a parameter got none).
  void reduce(size_t unit);
  // Waits for the oldest reduce-scatters in flight until at most `keep` remain, adding their
  // averages into the shards' gradients.
  void finish_reductions(size_t keep);
  double timed_wait(comm::Work& work);
  // hpZ: starts copying this rank's slice of a freshly gathered unit into its secondary.
  void write_secondary(Unit& unit, const torch::Tensor& full);
  void invalidate_secondaries();
  bool hpz() const { return node_ != nullptr; }

  comm::Group& replica_;
  comm::Group* node_;  // hpZ's group; null without hpZ
  ZeroOptions options_;
  codec::WireCodec primary_codec_;    // the gathers from the primary shards
  codec::WireCodec secondary_codec_;  // hpZ's gathers inside the node: lossless for what the primary decodes to
  std::unique_ptr<comm::QuantizedReduceScatter> quantized_gradients_;  // qgZ; null without
  // Declared after what its tasks use, so it is destroyed (running what is queued) first.
  comm::Lane quantized_lane_;
  std::vector<Unit> units_;  // embedding, layers..., head
  std::vector<NamedParameter> pieces_;  // the optimizer's view of the shards
  std::vector<torch::Tensor> piece_gradients_;  // the same pieces of the shards' gradients
  std::vector<bool> piece_decayed_;
  std::vector<size_t> sequence_;
  size_t next_to_issue_ = 0, next_to_acquire_ = 0;
  std::deque<Gather> gathers_;  // issued, not yet acquired
  std::deque<Reduction> reductions_;
  double blocked_seconds_ = 0;
  int64_t gathers_issued_ = 0;  // over the run, for the report
  int64_t secondary_gathers_ = 0;
  double secondary_wait_seconds_ = 0;      // gathers waiting on a secondary write, over the run
  double longest_secondary_wait_ = 0;
};

}  // namespace strait
