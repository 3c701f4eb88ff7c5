#include "strait/strategy/zero3.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <utility>

#include "strait/core/clock.h"
#include "strait/core/error.h"
#include "strait/strategy/agreement.h"

namespace strait {

namespace {

// Reduce-scatters a backward may have in flight: each holds a unit's whole gradient, so without
// a bound the last layers' would add up to the model's gradient in memory before the first
// completes; two keep the link busy while the next layer computes.
constexpr size_t kReductionsInFlight = 2;

torch::ScalarType zero_wire_type(codec::WireDtype wire) {
  return wire == codec::WireDtype::Bf16 ? torch::kBFloat16 : torch::kFloat32;
}

// The unit of a parameter, by its Hugging Face name: 0 the embedding, 1 + i layer i, and
// layers + 1 the head (the final norm and an untied LM head).
size_t unit_of(const std::string& name, int64_t layers) {
  if (name.rfind("model.embed_tokens.", 0) == 0) return 0;
  static const std::string kLayerPrefix = "model.layers.";
  if (name.rfind(kLayerPrefix, 0) == 0) return 1 + std::stoul(name.substr(kLayerPrefix.size()));
  return static_cast<size_t>(layers) + 1;
}

}  // namespace

ZeroInner::ZeroInner(comm::Group& replica, comm::Group* node, ZeroOptions options,
                     std::unique_ptr<comm::QuantizedReduceScatter> quantized_gradients)
    : replica_(replica),
      node_(options.hpz_partition_size > 1 ? node : nullptr),
      options_(options),
      primary_codec_(options.quantized_weights ? codec::WireDtype::Int8 : options.wire),
      // What the primary decodes to, sent without loss: bf16 values stay bf16; int8 codes times
      // their scale need fp32.
      secondary_codec_(options.wire == codec::WireDtype::Bf16 && !options.quantized_weights ? codec::WireDtype::Bf16
                                                                                           : codec::WireDtype::Fp32),
      quantized_gradients_(std::move(quantized_gradients)) {
  if (options_.wire != codec::WireDtype::Fp32 && options_.wire != codec::WireDtype::Bf16) {
    throw Error("zero3: the wire dtype must be fp32 or bf16");
  }
  if (options_.hpz_partition_size > 1 && (node == nullptr || node->size() != options_.hpz_partition_size)) {
    throw Error("zero3: hpz_partition_size " + std::to_string(options_.hpz_partition_size) +
                " must be 1 (off) or the number of ranks of this node (" +
                std::to_string(node == nullptr ? 1 : node->size()) + ")");
  }
}

void ZeroInner::prepare(const LlamaModel& model) {
  if (!units_.empty()) return;
  const int64_t layers = model.config().num_layers;
  units_.resize(static_cast<size_t>(layers) + 2);
  for (const auto& parameter : model.parameters()) {
    Unit& unit = units_[unit_of(parameter.name, layers)];
    unit.offsets.push_back(unit.numel);
    unit.shapes.push_back(parameter.tensor.sizes().vec());
    unit.numel += parameter.tensor.numel();
    unit.parameters.push_back(parameter);
  }
  const int64_t n = replica_.size();
  for (auto& unit : units_) {
    unit.shard_numel = (unit.numel + n - 1) / n;  // the padding is at the end of the unit
    unit.shard = torch::zeros({unit.shard_numel}, torch::kFloat32);
    unit.shard_gradient = torch::zeros({unit.shard_numel}, torch::kFloat32);
    if (hpz()) {
      unit.secondary_numel = (unit.numel + node_->size() - 1) / node_->size();
      unit.secondary = torch::zeros({unit.secondary_numel}, torch::kFloat32);
    }
    const int64_t begin = replica_.rank() * unit.shard_numel, end = begin + unit.shard_numel;
    for (size_t i = 0; i < unit.parameters.size(); ++i) {
      const int64_t first = std::max(begin, unit.offsets[i]);
      const int64_t last = std::min(end, unit.offsets[i] + unit.parameters[i].tensor.numel());
      if (first >= last) continue;  // this parameter lies in other ranks' shards
      pieces_.push_back({unit.parameters[i].name, unit.shard.narrow(0, first - begin, last - first)});
      piece_gradients_.push_back(unit.shard_gradient.narrow(0, first - begin, last - first));
      piece_decayed_.push_back(unit.shapes[i].size() >= 2);
    }
  }
  take_shards();
}

TrainableParameters ZeroInner::trainable_parameters(LlamaModel& model) {
  prepare(model);
  return {pieces_, piece_decayed_};
}

std::vector<NamedParameter> ZeroInner::replica_weights(const LlamaModel& model) {
  prepare(model);
  return pieces_;
}

void ZeroInner::take_shards() {
  torch::NoGradGuard no_grad;
  for (auto& unit : units_) {
    const int64_t begin = replica_.rank() * unit.shard_numel, end = begin + unit.shard_numel;
    for (size_t i = 0; i < unit.parameters.size(); ++i) {
      const auto flat = unit.parameters[i].tensor.detach().reshape({-1});
      const int64_t first = std::max(begin, unit.offsets[i]), last = std::min(end, unit.offsets[i] + flat.numel());
      if (first < last) unit.shard.narrow(0, first - begin, last - first).copy_(flat.narrow(0, first - unit.offsets[i], last - first));
    }
  }
}

void ZeroInner::weights_synchronized(LlamaModel& /*model*/, bool restored) {
  // Restored: the checkpoint was loaded into the shards themselves (trainable_parameters), and
  // the model's full weights are stale. Otherwise they hold the weights every rank agreed on.
  if (!restored) take_shards();
  invalidate_secondaries();
  for (size_t u = 0; u < units_.size(); ++u) release(u);
}

void ZeroInner::write_secondary(Unit& unit, const torch::Tensor& full) {
  const int64_t begin = node_->rank() * unit.secondary_numel;
  const int64_t count = std::clamp<int64_t>(unit.numel - begin, 0, unit.secondary_numel);
  // `full` is captured, so the gathered buffer outlives the unit's release until the copy is
  // done, and then let go at once: the future keeps the callable (and its captures) as long as
  // it lives, which would hold every unit's gathered weights, the whole model, until its next
  // write.
  unit.written = std::async(std::launch::async, [secondary = unit.secondary, full = torch::Tensor(full), begin, count]() mutable {
                   if (count > 0) secondary.narrow(0, 0, count).copy_(full.narrow(0, begin, count));
                   full = torch::Tensor();
                 }).share();
  unit.secondary_valid = true;
}

void ZeroInner::invalidate_secondaries() {
  for (auto& unit : units_) {
    if (unit.written.valid()) unit.written.wait();  // no copy may still write into a slice that is refilled later
    unit.secondary_valid = false;
  }
}

void ZeroInner::begin_gathers(std::vector<size_t> sequence) {
  if (!gathers_.empty() || next_to_acquire_ != sequence_.size()) {
    throw Error("zero3: a new pass started while gathers of the previous one were pending");
  }
  sequence_ = std::move(sequence);
  next_to_issue_ = next_to_acquire_ = 0;
  issue_next_gather();
}

void ZeroInner::issue_next_gather() {
  if (next_to_issue_ >= sequence_.size()) return;
  const size_t index = sequence_[next_to_issue_++];
  Unit& unit = units_[index];
  Gather& gather = gathers_.emplace_back();
  gather.unit = index;
  gather.from_secondary = hpz() && unit.secondary_valid;
  torch::Tensor source = unit.shard;
  if (gather.from_secondary) {
    // The explicit dependency: the slice is read (encoded) only once its write has completed.
    const auto start = Clock::now();
    unit.written.wait();
    const double waited = seconds_since(start);
    secondary_wait_seconds_ += waited;
    longest_secondary_wait_ = std::max(longest_secondary_wait_, waited);
    ++secondary_gathers_;
    source = unit.secondary;
  }
  comm::Group& group = gather.from_secondary ? *node_ : replica_;
  const codec::WireCodec& codec = gather.from_secondary ? secondary_codec_ : primary_codec_;
  const auto bytes = static_cast<int64_t>(codec.encoded_size(static_cast<size_t>(source.numel())));
  gather.input = torch::empty({bytes}, torch::kUInt8);  // a copy: the shard may change before it is sent
  codec.encode(source.data_ptr<float>(), static_cast<size_t>(source.numel()), gather.input.data_ptr<uint8_t>());
  gather.wire = torch::empty({group.size() * bytes}, torch::kUInt8);
  for (int r = 0; r < group.size(); ++r) gather.outputs.push_back(gather.wire.narrow(0, r * bytes, bytes));
  gather.work = group.all_gather(gather.input, gather.outputs,
                                 gather.from_secondary ? "zero_hpz_allgather_weights" : "zero_allgather_weights");
  ++gathers_issued_;
}

void ZeroInner::acquire(size_t index) {
  if (gathers_.empty() || gathers_.front().unit != index) {
    throw Error("zero3: unit " + std::to_string(index) + " used out of its gather order");
  }
  issue_next_gather();  // the prefetch: the next unit's transfer runs while this one computes
  Gather& gather = gathers_.front();
  blocked_seconds_ += timed_wait(gather.work);
  Unit& unit = units_[index];
  // Peers' bytes are untrusted: decode() refuses malformed ones, naming the problem.
  const codec::WireCodec& codec = gather.from_secondary ? secondary_codec_ : primary_codec_;
  const int64_t chunk = gather.from_secondary ? unit.secondary_numel : unit.shard_numel;
  const auto members = static_cast<int64_t>(gather.outputs.size());
  torch::Tensor full = torch::empty({members * chunk}, torch::kFloat32);
  for (int64_t r = 0; r < members; ++r) {
    const auto& received = gather.outputs[static_cast<size_t>(r)];
    codec.decode(received.data_ptr<uint8_t>(), static_cast<size_t>(received.numel()), full.data_ptr<float>() + r * chunk,
                 static_cast<size_t>(chunk));
  }
  if (hpz() && !unit.secondary_valid) write_secondary(unit, full);
  gathers_.pop_front();
  ++next_to_acquire_;
  for (size_t i = 0; i < unit.parameters.size(); ++i) {
    const int64_t numel = c10::multiply_integers(unit.shapes[i]);
    unit.parameters[i].tensor.set_data(full.narrow(0, unit.offsets[i], numel).view(unit.shapes[i]));
  }
}

void ZeroInner::release(size_t index) {
  for (auto& parameter : units_[index].parameters) {
    parameter.tensor.set_data(torch::empty({0}, torch::kFloat32));
    parameter.tensor.mutable_grad().reset();
  }
}

void ZeroInner::reduce(size_t index) {
  torch::NoGradGuard no_grad;
  const Unit& unit = units_[index];
  auto gradients = torch::zeros({replica_.size() * unit.shard_numel}, torch::kFloat32);
  for (size_t i = 0; i < unit.parameters.size(); ++i) {
    const auto& gradient = unit.parameters[i].tensor.grad();
    if (gradient.defined()) gradients.narrow(0, unit.offsets[i], gradient.numel()).copy_(gradient.reshape({-1}));
  }
  Reduction& reduction = reductions_.emplace_back();
  reduction.unit = index;
  if (quantized_gradients_) {
    reduction.input = gradients;
    reduction.output = torch::empty({unit.shard_numel}, torch::kFloat32);
    auto done = std::make_shared<std::promise<void>>();
    reduction.quantized = done->get_future();
    quantized_lane_.post([this, input = reduction.input, output = reduction.output, done]() mutable {
      try {
        quantized_gradients_->run(input, output);
        done->set_value();
      } catch (...) {
        done->set_exception(std::current_exception());
      }
    });
    return;
  }
  reduction.input = gradients.to(zero_wire_type(options_.wire));
  reduction.output = torch::empty({unit.shard_numel}, reduction.input.scalar_type());
  // A ring: across nodes it sends a gather's bytes, where an all-to-all would have every rank
  // send to every remote rank.
  reduction.work = replica_.ring_reduce_scatter_sum(reduction.input, reduction.output, "zero_reduce_scatter_gradients");
}

void ZeroInner::finish_reductions(size_t keep) {
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(replica_.size());  // the mean over the replica
  while (reductions_.size() > keep) {
    Reduction& reduction = reductions_.front();
    if (reduction.quantized.valid()) {
      const auto start = Clock::now();
      reduction.quantized.get();  // rethrows qgZ's error
      blocked_seconds_ += seconds_since(start);
    } else {
      blocked_seconds_ += timed_wait(reduction.work);
    }
    units_[reduction.unit].shard_gradient.add_(reduction.output.to(torch::kFloat32), scale);
    reductions_.pop_front();
  }
}

double ZeroInner::timed_wait(comm::Work& work) {
  const auto start = Clock::now();
  work.wait();
  return seconds_since(start);
}

MicroBatchResult ZeroInner::forward_backward(LlamaModel& model, const torch::Tensor& inputs,
                                             const torch::Tensor& targets, double loss_divisor, bool /*last*/) {
  const int64_t layers = model.config().num_layers;
  // Forward: embedding, each layer, head; backward: each layer again, last first. The embedding
  // stays gathered throughout (a tied LM head uses it, and its gradient completes last).
  std::vector<size_t> sequence = {0};
  for (int64_t i = 0; i < layers; ++i) sequence.push_back(layer_unit(i));
  sequence.push_back(head_unit());
  for (int64_t i = layers - 1; i >= 0; --i) sequence.push_back(layer_unit(i));
  begin_gathers(std::move(sequence));

  MicroBatchResult result;
  const auto forward_start = Clock::now();
  acquire(0);
  std::vector<torch::Tensor> layer_inputs;
  torch::Tensor x;
  {
    // Only each layer's input is kept: backward recomputes the layer from it, which is what
    // lets a layer's full weights be freed as soon as its forward is done.
    torch::NoGradGuard no_grad;
    x = model.embed(inputs);
    for (int64_t i = 0; i < layers; ++i) {
      acquire(layer_unit(i));
      layer_inputs.push_back(x);
      x = model.block(i, x);
      release(layer_unit(i));
    }
  }
  acquire(head_unit());
  const torch::Tensor hidden = x.detach().requires_grad_(true);
  const torch::Tensor loss = model.head_loss(hidden, targets) / loss_divisor;
  result.forward_seconds = seconds_since(forward_start);

  const auto backward_start = Clock::now();
  loss.backward();
  reduce(head_unit());
  release(head_unit());
  torch::Tensor gradient = hidden.grad();
  for (int64_t i = layers - 1; i >= 0; --i) {
    acquire(layer_unit(i));
    const torch::Tensor input = layer_inputs[static_cast<size_t>(i)].detach().requires_grad_(true);
    model.block(i, input).backward(gradient);
    gradient = input.grad();
    layer_inputs[static_cast<size_t>(i)] = torch::Tensor();
    reduce(layer_unit(i));
    release(layer_unit(i));
    finish_reductions(kReductionsInFlight);
  }
  model.embed(inputs).backward(gradient);
  reduce(0);
  release(0);
  finish_reductions(0);
  result.backward_seconds = seconds_since(backward_start);
  result.loss = loss.item<double>();
  return result;
}

double ZeroInner::batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) {
  torch::NoGradGuard no_grad;
  const int64_t layers = model.config().num_layers;
  std::vector<size_t> sequence = {0};
  for (int64_t i = 0; i < layers; ++i) sequence.push_back(layer_unit(i));
  sequence.push_back(head_unit());
  begin_gathers(std::move(sequence));
  acquire(0);
  torch::Tensor x = model.embed(inputs);
  for (int64_t i = 0; i < layers; ++i) {
    acquire(layer_unit(i));
    x = model.block(i, x);
    release(layer_unit(i));
  }
  acquire(head_unit());
  const double loss = model.head_loss(x, targets).item<double>();
  release(head_unit());
  release(0);
  return loss;
}

double ZeroInner::step(LlamaModel& /*model*/, Optimizer& optimizer, double lr, double max_norm) {
  torch::NoGradGuard no_grad;
  finish_reductions(0);
  // The global norm: each rank's shards hold a disjoint part of every gradient (the padding's
  // gradient is zero), so the squares summed over the replica are the whole model's.
  double squares = 0.0;
  for (const auto& unit : units_) squares += unit.shard_gradient.to(torch::kFloat64).square().sum().item<double>();
  auto total = torch::tensor({squares}, torch::kFloat64);
  replica_.all_reduce_sum(total, "allreduce_grad_norm").wait();
  const double norm = std::sqrt(total.item<double>());
  if (max_norm > 0.0) {
    const double coefficient = max_norm / (norm + 1e-6);  // as clip_grad_norm
    if (coefficient < 1.0) {
      for (auto& unit : units_) unit.shard_gradient.mul_(coefficient);
    }
  }
  for (size_t k = 0; k < pieces_.size(); ++k) pieces_[k].tensor.mutable_grad() = piece_gradients_[k];
  optimizer.step(lr);
  for (auto& unit : units_) unit.shard_gradient.zero_();
  if (!options_.skip_hpz_refresh) invalidate_secondaries();  // they hold the weights before this step
  return norm;
}

double ZeroInner::mean(double value, ReplicaVotes& votes) { return mean_with_votes(replica_, value, votes); }

double ZeroInner::take_blocked_seconds() { return std::exchange(blocked_seconds_, 0.0); }

nlohmann::json ZeroInner::report() const {
  nlohmann::json report = {{"zero_units", units_.size()},
                            {"zero_wire", codec::to_string(options_.wire)},
                            {"zero_weights_wire", codec::to_string(primary_codec_.dtype())},
                            {"zero_gathers", gathers_issued_},
                            {"zero_quantized_gradients", quantized_gradients_ != nullptr}};
  if (hpz()) {
    report["zero_hpz_partition_size"] = node_->size();
    report["zero_hpz_secondary_gathers"] = secondary_gathers_;
    report["zero_hpz_secondary_wait_s"] = secondary_wait_seconds_;
    report["zero_hpz_longest_secondary_wait_ms"] = longest_secondary_wait_ * 1000.0;
  }
  return report;
}

}  // namespace strait
