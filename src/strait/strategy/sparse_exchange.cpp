#include "strait/strategy/sparse_exchange.h"

#include <algorithm>
#include <chrono>

#include "strait/core/error.h"

namespace strait {

namespace {

int64_t elements_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t dimension : shape) n *= dimension;
  return n;
}

void add_figure(nlohmann::json& figures, const std::string& key, int64_t value) {
  figures[key] = figures.value(key, int64_t{0}) + value;
}

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Adds one payload's figures to the sync's (several fragments may sync at one step).
void add_payload_figures(nlohmann::json& figures, const codec::PayloadStats& stats, int64_t dense_bytes) {
  add_figure(figures, "payload_bytes", static_cast<int64_t>(stats.bytes));
  add_figure(figures, "dense_bytes", dense_bytes);
  add_figure(figures, "kept_values", stats.kept);
  add_figure(figures, "index_bits", stats.index_bits);
  figures["bits_per_index"] =
      static_cast<double>(figures["index_bits"].get<int64_t>()) / std::max<int64_t>(1, figures["kept_values"].get<int64_t>());
}

}  // namespace

SparseExchange::SparseExchange(comm::Group* replica, comm::Group* across, codec::SparseOptions options,
                               codec::Aggregation aggregation)
    : replica_(replica), across_(across), options_(options), aggregation_(aggregation) {}

void SparseExchange::prepare(const std::vector<std::vector<std::vector<int64_t>>>& fragment_shapes) {
  shapes_ = fragment_shapes;
  errors_.clear();
  for (const auto& shapes : shapes_) {
    int64_t count = 0;
    for (const auto& shape : shapes) count += elements_of(shape);
    errors_.push_back(torch::zeros({count}, torch::kFloat32));
  }
}

int64_t SparseExchange::aggregate(size_t fragment, const torch::Tensor& flat, const std::string& label,
                                  nlohmann::json& figures) {
  const auto& shapes = shapes_.at(fragment);
  const auto encode_start = std::chrono::steady_clock::now();
  float* error = errors_[fragment].data_ptr<float>();
  const float* delta = flat.data_ptr<float>();
  std::vector<codec::SparseTensor> sent;
  int64_t offset = 0;
  for (const auto& shape : shapes) {
    sent.push_back(codec::error_feedback_step(error + offset, delta + offset, shape, options_));
    offset += elements_of(shape);
  }
  const std::vector<uint8_t> payload = codec::pack(sent, options_);
  add_payload_figures(figures, codec::payload_stats(sent, options_), 4 * offset);
  // The codec's CPU time (error feedback, top-k, quantization, packing; unpacking and
  // aggregating the replicas' payloads), apart from the wait on the gather: plan models it.
  double codec_ms = milliseconds_since(encode_start);

  int64_t bytes_sent = 0;
  if (across_ == nullptr) {
    const auto decode_start = std::chrono::steady_clock::now();
    aggregate_payloads(fragment, {payload}, flat);  // one replica: the trip through the wire format
    codec_ms += milliseconds_since(decode_start);
  } else if (replica_ == nullptr || replica_->rank() == 0) {
    // Bounds the memory a peer's announced size may make the gather allocate.
    const auto max_bytes = static_cast<int64_t>(codec::max_packed_size(shapes, options_));
    std::vector<std::vector<uint8_t>> payloads;
    across_->all_gather_bytes(payload, payloads, label + "/allgather", max_bytes).wait();
    const auto decode_start = std::chrono::steady_clock::now();
    aggregate_payloads(fragment, payloads, flat);
    codec_ms += milliseconds_since(decode_start);
    size_t largest = 0;
    for (const auto& received : payloads) largest = std::max(largest, received.size());
    // Each rank's 8-byte count, then every payload padded to the largest (Group::all_gather_bytes).
    bytes_sent = static_cast<int64_t>(across_->size() - 1) * (8 + static_cast<int64_t>(largest));
  }
  if (replica_ != nullptr && replica_->size() > 1) replica_->broadcast(flat, 0, label + "/in_replica").wait();
  figures["codec_ms"] = figures.value("codec_ms", 0.0) + codec_ms;
  return bytes_sent;
}

void SparseExchange::aggregate_payloads(size_t fragment, const std::vector<std::vector<uint8_t>>& payloads,
                                        const torch::Tensor& flat) const {
  const auto& shapes = shapes_[fragment];
  codec::SparseAggregate sum(shapes);
  for (size_t r = 0; r < payloads.size(); ++r) {
    try {
      sum.add(codec::unpack(payloads[r].data(), payloads[r].size(), shapes, options_));
    } catch (const Error& error) {
      const std::string sender =
          across_ == nullptr ? "" : " (rank " + std::to_string(across_->members()[r]) + ")";
      throw Error("sparseloco: the payload of replica " + std::to_string(r) + sender + " is malformed: " +
                  error.what());
    }
  }
  float* out = flat.data_ptr<float>();
  for (size_t t = 0; t < shapes.size(); ++t) {
    sum.result(t, aggregation_, static_cast<int64_t>(payloads.size()), out);
    out += elements_of(shapes[t]);
  }
}

NamedTensors SparseExchange::rank_state() {
  NamedTensors state;
  for (size_t f = 0; f < errors_.size(); ++f) state.emplace_back("outer.error." + std::to_string(f), errors_[f]);
  return state;
}

}  // namespace strait
