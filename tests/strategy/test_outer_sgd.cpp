// DiLoCo's outer step against its formula, and its exchange end to end: one replica with outer
// SGD at lr 1 and no momentum trains as one process does; two replicas stay bit-identical in
// every wire dtype, move the bytes the exchange's formula predicts, and resume exactly from
// checkpoints inside and at the end of an H window. SparseLoCo's outer step against a float64
// reference of its error feedback, and its exchange end to end (payload bytes, per-rank error
// buffers across a resume, replicas of DDP ranks with fragments).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>
#include <thread>

#include "strait/codec/sparse_codec.h"
#include "strait/comm/communicator.h"
#include "strait/codec/wire_codec.h"
#include "strait/core/safetensors.h"
#include "strait/core/metrics.h"
#include "strait/model/model_config.h"
#include "strait/model/tensor_io.h"
#include "strait/strategy/outer_sgd.h"
#include "strait/strategy/sparse_exchange.h"
#include "strait/train/checkpoint.h"
#include "strait/train/trainer.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::losses_of;

torch::Tensor flat_weights(const LlamaModel& model) {
  std::vector<torch::Tensor> parts;
  for (const auto& parameter : model.parameters()) parts.push_back(parameter.tensor.detach().reshape({-1}));
  return torch::cat(parts);
}

void set_weights(LlamaModel& model, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& parameter : model.parameters()) {
    const int64_t n = parameter.tensor.numel();
    parameter.tensor.view({n}).copy_(flat.narrow(0, offset, n));
    offset += n;
  }
}

TEST(OuterSgd, DilocoStepsFollowNesterovMomentumOnThePseudoGradient) {
  ModelConfig config = model_preset("nano", 256);
  LlamaModel model(config);
  model.init_weights(3);
  OuterSgdOptions options;
  options.sync_every = 2;
  options.lr = 0.7;
  options.momentum = 0.9;
  OuterSgd diloco(std::make_unique<ReplicaExchange>(nullptr, nullptr, codec::WireDtype::Fp32), options);
  diloco.prepare(model.config().num_layers, model.parameters());
  diloco.start_from(model.parameters());

  // The reference, in float64: θ, m; each window the "inner steps" move the weights by a
  // random amount, then Δ = θ − θ_r, m = μ m + Δ, θ = θ − lr (Δ + μ m). And the same in
  // float32, one operation at a time: this is streaming DiLoCo's code with P = 1, τ = 0, which
  // must be DiLoCo bit for bit.
  torch::Tensor theta = flat_weights(model).to(torch::kDouble);
  torch::Tensor momentum = torch::zeros_like(theta);
  torch::Tensor theta32 = flat_weights(model).clone(), momentum32 = torch::zeros_like(theta32);
  torch::manual_seed(5);
  for (int64_t window = 1; window <= 3; ++window) {
    const torch::Tensor inner = flat_weights(model) + 0.01 * torch::randn({theta.numel()});
    set_weights(model, inner);
    diloco.after_step(2 * window - 1, model.parameters(), false);  // not due: nothing changes
    ASSERT_TRUE(torch::equal(flat_weights(model), inner)) << "window " << window;
    diloco.after_step(2 * window, model.parameters(), false);
    const torch::Tensor delta = theta - inner.to(torch::kDouble);
    momentum = 0.9 * momentum + delta;
    theta = theta - 0.7 * (delta + 0.9 * momentum);
    const double error = (flat_weights(model).to(torch::kDouble) - theta).abs().max().item<double>();
    EXPECT_LT(error, 1e-6) << "window " << window;
    torch::Tensor delta32 = theta32 - inner;
    momentum32.mul_(0.9).add_(delta32);
    theta32.sub_(delta32.add_(momentum32, 0.9), 0.7);
    EXPECT_TRUE(torch::equal(flat_weights(model), theta32)) << "window " << window;
    const nlohmann::json sync = diloco.take_sync_metrics();
    EXPECT_EQ(sync.at("step"), 2 * window);
    EXPECT_NEAR(sync.at("pseudo_gradient_norm").get<double>(), delta.norm().item<double>(), 1e-4);
  }
  EXPECT_TRUE(diloco.take_sync_metrics().empty()) << "taken once";
  // The state checkpoints keep: θ and m.
  const NamedTensors state = diloco.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "outer.weights");
  EXPECT_LT((state[1].second.to(torch::kDouble) - momentum).abs().max().item<double>(), 1e-6);
}

TEST(OuterSgd, StreamingFragmentsSyncOnTheirOffsetsOverlapInnerStepsAndMix) {
  // nano has 2 layers: P = 2 gives fragment 0 = the embedding and layer 0, fragment 1 = layer 1,
  // the final norm and the head. H = 4: fragment 0 syncs at steps 4, 8, fragment 1 at 2, 6, 10;
  // each exchange lands τ = 1 step later and is mixed with α = 0.5; the last step (10) ends on θ.
  ModelConfig config = model_preset("nano", 256);
  ASSERT_EQ(config.num_layers, 2);
  LlamaModel model(config);
  model.init_weights(3);
  OuterSgdOptions options;
  options.sync_every = 4;
  options.fragments = 2;
  options.overlap_steps = 1;
  options.fragment_mix = 0.5;
  OuterSgd streaming(std::make_unique<ReplicaExchange>(nullptr, nullptr, codec::WireDtype::Fp32), options,
                     std::make_unique<ReplicaExchange>(nullptr, nullptr, codec::WireDtype::Fp32));
  streaming.prepare(model.config().num_layers, model.parameters());
  streaming.start_from(model.parameters());

  std::vector<torch::Tensor> in_fragment(2);  // float64 masks, from the parameter names
  for (const auto& parameter : model.parameters()) {
    const bool first = parameter.name.rfind("model.embed_tokens.", 0) == 0 || parameter.name.rfind("model.layers.0.", 0) == 0;
    for (int p = 0; p < 2; ++p) {
      in_fragment[p] = torch::cat({in_fragment[p].defined() ? in_fragment[p] : torch::empty({0}, torch::kDouble),
                                   torch::full({parameter.tensor.numel()}, (p == 0) == first ? 1.0 : 0.0, torch::kDouble)});
    }
  }
  // The reference, in float64.
  torch::Tensor theta = flat_weights(model).to(torch::kDouble);
  torch::Tensor momentum = torch::zeros_like(theta);
  std::vector<torch::Tensor> pending(2);  // Δ of an exchange in flight
  auto apply = [&](int p, const torch::Tensor& delta, torch::Tensor& local, double mix) {
    momentum = momentum + in_fragment[p] * (0.9 * momentum + delta - momentum);
    theta = theta - in_fragment[p] * 0.7 * (delta + 0.9 * momentum);
    local = local + in_fragment[p] * (mix * local + (1 - mix) * theta - local);
  };
  torch::manual_seed(5);
  for (int64_t step = 1; step <= 10; ++step) {
    const bool final_step = step == 10;
    const torch::Tensor inner = flat_weights(model) + 0.01 * torch::randn({theta.numel()});
    set_weights(model, inner);
    streaming.after_step(step, model.parameters(), final_step);
    torch::Tensor expected = inner.to(torch::kDouble);
    std::vector<bool> applied(2, false);
    const int started = step % 4 == 0 ? 0 : step % 4 == 2 ? 1 : -1;
    if (started >= 0) pending[started] = in_fragment[started] * (theta - expected);
    for (int p = 0; p < 2; ++p) {
      if (!pending[p].defined() || (p == started && !final_step)) continue;
      apply(p, pending[p], expected, final_step ? 0.0 : 0.5);
      pending[p] = torch::Tensor();
      applied[p] = true;
    }
    for (int p = 0; p < 2 && final_step; ++p) {
      if (!applied[p]) apply(p, in_fragment[p] * (theta - expected), expected, 0.0);
    }
    const double error = (flat_weights(model).to(torch::kDouble) - expected).abs().max().item<double>();
    EXPECT_LT(error, 1e-6) << "step " << step;
    const nlohmann::json sync = streaming.take_sync_metrics();
    if (step == 1) EXPECT_TRUE(sync.empty());
    if (step == 2) EXPECT_EQ(sync.at("fragments_started"), nlohmann::json::array({1})) << sync;
    if (step == 3) EXPECT_EQ(sync.at("fragments_applied"), nlohmann::json::array({1})) << sync;
    if (step == 10) EXPECT_EQ(sync.at("fragments_applied"), nlohmann::json::array({1, 0})) << sync;
  }
  EXPECT_LT((flat_weights(model).to(torch::kDouble) - theta).abs().max().item<double>(), 1e-6)
      << "the run ends on θ";
  const NamedTensors state = streaming.state();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[3].first, "outer.in_flight_since");
  EXPECT_TRUE(torch::equal(state[3].second, torch::full({2}, int64_t{-1}))) << "nothing left in flight";
  EXPECT_EQ(streaming.report().at("outer_syncs"), 6);  // 2, 4, 6, 8, 10 (fragment 1) and 10 (fragment 0)
}

TEST(OuterSgd, SparseLoCoStepsWithTheDecodedPayloadAndItsErrorBuffersKeepTheRest) {
  // One replica, P = 2 fragments, H = 2: fragment 0 (the embedding and layer 0) syncs at even
  // steps, fragment 1 (layer 1, the norm and the head) at odd ones, each with its own error
  // buffer; outer lr 1, no momentum. At a sync e ← β e + Δ, the payload is the top-k of e in 2
  // bits, θ ← θ − decoded payload, e ← e − decoded payload. Checked against a float64 reference
  // of e and θ: what θ moved by plus what the buffer kept is β e + Δ; only k_C values per chunk
  // moved, and by at most 4 distinct amounts per tensor (2-bit codes through a centroid table).
  ModelConfig config = model_preset("nano", 256);
  LlamaModel model(config);
  model.init_weights(3);
  OuterSgdOptions options;
  options.rule = OuterSgdOptions::Rule::SparseLoCo;
  options.sync_every = 2;
  options.lr = 1.0;
  options.momentum = 0.0;
  options.fragments = 2;
  codec::SparseOptions sparse;  // k = 64 per 4096, 4 bins, β = 0.95
  sparse.index_coding = codec::IndexCoding::Fixed;  // so that the payload's size is the shape formula
  OuterSgd sparseloco(std::make_unique<SparseExchange>(nullptr, nullptr, sparse, codec::Aggregation::Mean), options);
  sparseloco.prepare(model.config().num_layers, model.parameters());
  sparseloco.start_from(model.parameters());
  EXPECT_EQ(sparseloco.name(), "sparseloco");

  // Per fragment (contiguous in nano's parameter order): its tensors' shapes and the figures the
  // fixed index coding must give.
  struct Part {
    int64_t offset = 0, size = 0, kept = 0, index_bits = 0;
    std::vector<std::vector<int64_t>> shapes;
  };
  std::vector<Part> parts(2);
  for (const auto& parameter : model.parameters()) {
    const bool first = parameter.name.rfind("model.embed_tokens.", 0) == 0 || parameter.name.rfind("model.layers.0.", 0) == 0;
    Part& part = parts[first ? 0 : 1];
    part.shapes.push_back(parameter.tensor.sizes().vec());
    const codec::Chunking chunking = codec::chunking_for(part.shapes.back());
    const int64_t kept = chunking.chunk_count() * codec::kept_per_chunk(chunking.chunk_size(), sparse.topk);
    part.kept += kept;
    part.index_bits += kept * chunking.index_bits();
    part.size += parameter.tensor.numel();
  }
  parts[1].offset = parts[0].size;

  torch::Tensor theta = flat_weights(model).to(torch::kDouble);
  std::vector<torch::Tensor> errors = {torch::zeros({parts[0].size}, torch::kDouble),
                                       torch::zeros({parts[1].size}, torch::kDouble)};
  torch::manual_seed(5);
  for (int64_t step = 1; step <= 6; ++step) {
    const size_t p = step % 2 == 0 ? 0 : 1;
    const Part& part = parts[p];
    const torch::Tensor inner = flat_weights(model) + 0.01 * torch::randn({theta.numel()});
    set_weights(model, inner);
    sparseloco.after_step(step, model.parameters(), false);
    const torch::Tensor after = flat_weights(model).to(torch::kDouble);
    const torch::Tensor other = after.narrow(0, parts[1 - p].offset, parts[1 - p].size);
    EXPECT_TRUE(torch::equal(other, inner.to(torch::kDouble).narrow(0, parts[1 - p].offset, parts[1 - p].size)))
        << "step " << step << ": the other fragment waits for its own step";
    const torch::Tensor theta_before = theta.narrow(0, part.offset, part.size);
    const torch::Tensor moved = theta_before - after.narrow(0, part.offset, part.size);
    const torch::Tensor fed = 0.95 * errors[p] + (theta_before - inner.to(torch::kDouble).narrow(0, part.offset, part.size));
    const NamedTensors buffers = sparseloco.rank_state();
    ASSERT_EQ(buffers.size(), 2u);
    EXPECT_EQ(buffers[p].first, "outer.error." + std::to_string(p));
    errors[p] = buffers[p].second.to(torch::kDouble);
    EXPECT_LT((moved + errors[p] - fed).abs().max().item<double>(), 1e-6) << "step " << step;
    EXPECT_EQ(moved.ne(0).sum().item<int64_t>(), part.kept) << "step " << step;
    int64_t offset = 0;
    for (const auto& shape : part.shapes) {
      const int64_t n = torch::empty(shape).numel();
      // θ − (θ − v) is v up to θ's rounding: values further apart than that are distinct codes.
      const torch::Tensor values = moved.narrow(0, offset, n);
      const torch::Tensor kept = std::get<0>(values.masked_select(values.ne(0)).sort());
      const int64_t distinct = 1 + (kept.narrow(0, 1, kept.numel() - 1) - kept.narrow(0, 0, kept.numel() - 1))
                                       .gt(1e-5).sum().item<int64_t>();
      EXPECT_LE(distinct, 4) << "step " << step << ", tensor at " << offset;
      offset += n;
    }
    const nlohmann::json sync = sparseloco.take_sync_metrics();
    EXPECT_EQ(sync.at("payload_bytes"), codec::packed_size(part.shapes, sparse)) << sync;
    EXPECT_EQ(sync.at("dense_bytes"), 4 * part.size);
    EXPECT_EQ(sync.at("kept_values"), part.kept);
    EXPECT_EQ(sync.at("index_bits"), part.index_bits);  // fixed: ceil(log2 C) bits each
    theta.narrow(0, part.offset, part.size).copy_(after.narrow(0, part.offset, part.size));
  }
  const NamedTensors state = sparseloco.state();
  ASSERT_EQ(state.size(), 1u) << "θ only: no momentum";
  EXPECT_EQ(state[0].first, "outer.weights");
}

TEST(OuterSgd, FragmentsAreStridedLayerGroups) {
  EXPECT_EQ(fragment_of("model.layers.0.mlp.up_proj.weight", 6, 3), 0);
  EXPECT_EQ(fragment_of("model.layers.4.self_attn.q_proj.weight", 6, 3), 1);
  EXPECT_EQ(fragment_of("model.layers.5.input_layernorm.weight", 6, 3), 2);
  EXPECT_EQ(fragment_of("model.embed_tokens.weight", 6, 3), 0);
  EXPECT_EQ(fragment_of("model.norm.weight", 6, 3), 2);
  EXPECT_EQ(fragment_of("lm_head.weight", 7, 3), 0);  // with layer 6
}

// Two one-rank replicas as two threads of this process, over loopback: replica 0 runs 3 steps
// in a time-boxed phase, replica 1 (slower) 1. With weights 1 on replica 0 and 4 on replica 1,
// the token-weighted mean is (3·1 + 1·4) / 4 = 1.75, for local SGD and for DiLoCo with outer lr
// 1 and no momentum from θ = 0 (θ − mean Δ = the weighted mean of the replicas' weights); exact
// in float32 (factors 1.5 and 0.5). A second phase of 2 steps each weighs them alike.
TEST(OuterSgd, TimeBoxedPhasesWeightEachReplicaByTheStepsItRan) {
  for (const auto rule : {OuterSgdOptions::Rule::AverageWeights, OuterSgdOptions::Rule::Diloco}) {
    const int port = testing::free_tcp_port();
    std::vector<std::vector<float>> seen(2);
    std::vector<std::vector<int64_t>> progress(2);
    std::vector<std::string> errors(2);
    auto replica = [&](int rank) {
      try {
        comm::CommOptions options;
        options.topology = {rank, 2, rank, 2, 0, 1};
        options.master_port = port;
        options.timeout = std::chrono::seconds(20);
        auto communicator = comm::Communicator::create(options);
        comm::Group& own = communicator->make_group({rank}, "replica[" + std::to_string(rank) + "]");
        comm::Group& across = communicator->make_group({0, 1}, "across_replicas[0]");
        OuterSgdOptions outer_options;
        outer_options.rule = rule;
        outer_options.lr = 1.0;
        outer_options.momentum = 0.0;
        outer_options.sync_every_seconds = 3600;  // the votes below end the phases
        OuterSgd outer(std::make_unique<ReplicaExchange>(&own, &across, codec::WireDtype::Fp32), outer_options);
        LlamaModel model(model_preset("nano", 256));
        outer.prepare(model.config().num_layers, model.parameters());
        const auto parameters = flat_weights(model).numel();
        set_weights(model, torch::zeros({parameters}));
        outer.start_from(model.parameters());
        set_weights(model, torch::full({parameters}, rank == 0 ? 1.0f : 4.0f));
        auto phase = [&](int64_t first_step, int64_t steps) {
          for (int64_t step = first_step; step < first_step + steps; ++step) {
            outer.offer_votes({false, step + 1 == first_step + steps});
            outer.after_step(step, model.parameters(), false);
          }
          const torch::Tensor weights = flat_weights(model);
          seen[rank].push_back(weights[0].item<float>());
          EXPECT_TRUE(torch::equal(weights, torch::full_like(weights, weights[0].item<float>()))) << "rank " << rank;
          progress[rank].push_back(outer.synced_progress());
        };
        phase(1, rank == 0 ? 3 : 1);
        set_weights(model, flat_weights(model) + (rank == 0 ? 1.0f : 3.0f));
        phase(rank == 0 ? 4 : 2, 2);
        EXPECT_EQ(outer.report().at("replica_steps"), (std::vector<int64_t>{5, 3}));
        EXPECT_EQ(outer.state().back().first, "outer.replica_steps");
      } catch (const std::exception& error) {
        errors[rank] = error.what();
      }
    };
    std::thread other(replica, 1);
    replica(0);
    other.join();
    for (int rank = 0; rank < 2; ++rank) {
      ASSERT_EQ(errors[rank], "") << "rank " << rank;
      EXPECT_EQ(seen[rank], (std::vector<float>{1.75f, 3.75f})) << "rank " << rank;  // (2.75 + 4.75) / 2
      EXPECT_EQ(progress[rank], (std::vector<int64_t>{2, 4})) << "rank " << rank;
    }
  }
}

TEST(OuterSgd, OneReplicaWithOuterLrOneAndNoMomentumTrainsAsOneProcess) {
  // θ − (θ − θ_r) = θ_r up to one float32 rounding per sync.
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data");
  TrainConfig single = testing::tiny_train_config(scratch / "data", scratch / "single");
  train(single, {false});
  TrainConfig diloco = testing::tiny_train_config(scratch / "data", scratch / "diloco");
  diloco.strategy = "diloco";
  diloco.sync_every = 4;
  diloco.outer_lr = 1.0;
  diloco.outer_momentum = 0.0;
  const auto summary = train(diloco, {false});
  EXPECT_EQ(summary.at("strategy"), "diloco(single x 1)");
  EXPECT_EQ(summary.at("outer_syncs"), 5);  // steps 4, 8, ..., 20
  const auto expected = losses_of(scratch / "single"), actual = losses_of(scratch / "diloco");
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << "step " << i + 1;
}

class Diloco : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 40000, 8000); }

  std::string common_args(const fs::path& out) const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 12 --warmup-steps 3 --threads 1 "
           "--precision fp32 --eval-every 6 --eval-batches 2 --checkpoint-every 3 --comm-timeout-s 20 ";
  }

  std::string train_args(const fs::path& out, const std::string& extra = "") const {
    return common_args(out) + "--lr 3e-3 --strategy diloco --sync-every 4 " + extra;
  }

  testing::CommandResult launch(int ranks, const std::string& arguments) const {
    return testing::run_strait("launch --nproc-per-node " + std::to_string(ranks) + " --master-port " +
                               std::to_string(testing::free_tcp_port()) + " -- " + arguments);
  }

  testing::ScratchDir scratch_;
};

TEST_F(Diloco, EveryWireDtypeKeepsReplicasIdenticalAndMovesTheBytesItsFormulaSays) {
  // Two one-rank replicas: per sync each rank sends one encoded slice (all-to-all) and its
  // encoded mean (all-gather), E bytes each, E = encoded size of half the parameters, plus the
  // 8-byte hash of the new weights. A failed hash check would stop the run.
  std::map<std::string, double> bytes;
  for (const std::string dtype : {"fp32", "bf16", "int8", "int4"}) {
    const fs::path run = scratch_ / dtype;
    auto result = launch(2, train_args(run, "--outer-dtype " + dtype));
    ASSERT_EQ(result.exit_code, 0) << dtype << "\n" << result.output;
    const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
    ASSERT_EQ(summary.at("outer_syncs"), 3) << dtype;
    const auto parameters = summary.at("parameters").get<size_t>();
    const size_t slice = (parameters + 1) / 2;
    const double encoded = static_cast<double>(codec::WireCodec(codec::parse_wire_dtype(dtype)).encoded_size(slice));
    bytes[dtype] = summary.at("cross_replica_bytes_sent").get<double>();
    EXPECT_EQ(bytes[dtype], 3 * 2 * (2 * encoded + 8)) << dtype;
    for (const auto& line : read_metrics(run / "metrics.jsonl")) {
      EXPECT_EQ(line.contains("outer_sync"), line.at("step").get<int>() % 4 == 0) << dtype << " step " << line.at("step");
    }
  }
  EXPECT_GT(bytes["fp32"] / bytes["int4"], 7.7);  // 1024 / 132: 8x less 4 scale bytes per 256 values
  EXPECT_GT(bytes["fp32"] / bytes["bf16"], 1.99);
}

TEST_F(Diloco, ReplicasWhoseWeightsDifferAfterASyncStopTheRunNamingThem) {
  // Rank 1's weights move by one float32 rounding after the outer step (fault injection), as a
  // silently corrupted exchange would leave them: the weight hashes differ and every rank stops.
  // Streaming with τ = 1 exchanges the hash of fragment 1's outer step at step 3 in the
  // background; the checkpoint of step 3 judges it before it writes anything.
  const std::vector<std::pair<std::string, int>> cases = {
      {"--outer-dtype int8", 4}, {"--outer-dtype int8 --fragments 2 --overlap-steps 1 --fragment-mix 0.5", 3}};
  for (const auto& [options, step] : cases) {
    const fs::path run = scratch_ / ("desync-" + std::to_string(step));
    const auto result = testing::run_command("STRAIT_TEST_DESYNC_RANK=1 '" STRAIT_BINARY "' launch --nproc-per-node 2 "
                                             "--master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                                             train_args(run, options));
    EXPECT_NE(result.exit_code, 0) << options << "\n" << result.output;
    EXPECT_NE(result.output.find("diloco: after the outer step of step " + std::to_string(step) +
                                 " the weights of replica 1 (rank 1) differ from replica 0's (rank 0); the replicas "
                                 "would silently train apart"),
              std::string::npos)
        << options << "\n" << result.output;
    EXPECT_FALSE(fs::exists(run / "checkpoints" / "step-000006")) << options << ": the run stopped at its first sync";
  }
}

TEST_F(Diloco, ResumesExactlyFromInsideAndTheEndOfAnHWindow) {
  const fs::path straight = scratch_ / "straight", resumed = scratch_ / "resumed";
  auto result = launch(2, train_args(straight, "--outer-dtype int4"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Stop at step 6 (inside the window 5..8), then at step 8 (its end), then finish.
  for (const std::string stop : {"--stop-after 6", "--stop-after 8 --resume", "--resume"}) {
    result = launch(2, train_args(resumed, "--outer-dtype int4 " + stop));
    ASSERT_EQ(result.exit_code, 0) << stop << "\n" << result.output;
  }
  EXPECT_EQ(losses_of(resumed), losses_of(straight));
  EXPECT_TRUE(fs::exists(scratch_ / "resumed" / "checkpoints" / "step-000012" / "strategy.safetensors"));
}

TEST_F(Diloco, WithHOneInnerSgdAndAPlainOuterStepItIsDdpWithSgd) {
  // H = 1: each replica takes θ − lr g_r, Δ_r = lr g_r, and θ − 1·mean Δ_r = θ − lr mean g_r,
  // DDP's SGD step; equal up to the rounding of θ − (θ − lr g). Clipping is per replica in one
  // and of the mean in the other, so it is off.
  const fs::path ddp = scratch_ / "ddp", diloco = scratch_ / "diloco";
  const std::string sgd = "--optimizer sgd --lr 0.3 --grad-clip 0 ";
  auto result = launch(2, common_args(ddp) + sgd);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = launch(2, common_args(diloco) + sgd + "--strategy diloco --sync-every 1 --outer-lr 1 --outer-momentum 0");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(testing::read_file(diloco / "summary.json"));
  EXPECT_EQ(summary.at("optimizer"), "sgd");
  EXPECT_EQ(summary.at("outer_syncs"), 12);
  auto val_losses = [](const fs::path& run) {
    std::vector<double> found;
    for (const auto& line : read_metrics(run / "metrics.jsonl")) {
      if (line.contains("val_loss")) found.push_back(line.at("val_loss").get<double>());
    }
    return found;
  };
  const auto expected = val_losses(ddp), actual = val_losses(diloco);
  ASSERT_EQ(expected.size(), 2u);
  ASSERT_EQ(actual.size(), 2u);
  EXPECT_LT(expected[1], expected[0] - 0.05) << "SGD trains";
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5 * expected[i]) << "evaluation " << i;
  // The final weights, every tensor.
  const auto ddp_model = SafetensorsFile::load(ddp / "checkpoints" / "step-000012" / "model.safetensors");
  const auto diloco_model =
      SafetensorsFile::load(diloco / "checkpoints" / "step-000012" / "rank-00000" / "model.safetensors");
  for (const auto& info : ddp_model.tensors()) {
    const torch::Tensor a = tensor_from_file(ddp_model, info.name), b = tensor_from_file(diloco_model, info.name);
    EXPECT_TRUE(torch::allclose(b, a, 1e-4, 1e-6)) << info.name << ": max difference "
                                                     << (b - a).abs().max().item<double>();
  }
}

TEST_F(Diloco, TimeBoxedPhasesLetTheFasterReplicaRunMoreStepsAndFollowTheAgreedProgress) {
  // Replica 0 (rank 0, whose metrics the run writes) sleeps twice each step's time: in phases of
  // 0.05 s replica 1 runs more steps. Whatever the timing: the progress each sync reports is
  // the running sum of both replicas' steps over 2; validations and checkpoints happen at syncs
  // only, named by that progress; the run ends at the first sync at or past --steps; and a run
  // stopped by --stop-after resumes from its checkpoint to the end.
  auto args = [&](const fs::path& out, const std::string& extra, const std::string& throttle = "0:3") {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 40 --warmup-steps 3 --threads 1 "
           "--precision fp32 --eval-every 10 --eval-batches 2 --checkpoint-every 10 --keep-checkpoints 0 "
           "--comm-timeout-s 20 --lr 3e-3 --strategy diloco --sync-every-seconds 0.05 --throttle " + throttle + " " + extra;
  };
  const fs::path run = scratch_ / "time-boxed";
  auto result = launch(2, args(run, ""));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::set<std::string> expected_checkpoints;
  int64_t total = 0, progress = 0;
  for (const auto& line : read_metrics(run / "metrics.jsonl")) {
    EXPECT_TRUE(line.contains("throttle_ms")) << line.dump();
    if (!line.contains("outer_sync")) {
      EXPECT_FALSE(line.contains("val_loss")) << "validation between syncs: " << line.dump();
      continue;
    }
    const auto steps = line.at("outer_sync").at("replica_steps").get<std::vector<int64_t>>();
    ASSERT_EQ(steps.size(), 2u);
    const int64_t previous = progress;
    total += steps[0] + steps[1];
    progress = line.at("outer_sync").at("progress").get<int64_t>();
    EXPECT_EQ(progress, total / 2) << line.dump();
    if (progress / 10 > previous / 10 || progress >= 40) {
      EXPECT_TRUE(line.contains("val_loss")) << line.dump();
      char name[32];
      std::snprintf(name, sizeof(name), "step-%06lld", static_cast<long long>(progress));
      expected_checkpoints.insert(name);
    }
  }
  EXPECT_GE(progress, 40);
  std::set<std::string> checkpoints;
  for (const auto& entry : fs::directory_iterator(run / "checkpoints")) checkpoints.insert(entry.path().filename());
  EXPECT_EQ(checkpoints, expected_checkpoints);
  const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
  EXPECT_EQ(summary.at("last_step"), progress);
  const auto replica_steps = summary.at("replica_steps").get<std::vector<int64_t>>();
  EXPECT_EQ(replica_steps[0] + replica_steps[1], total);
  EXPECT_LT(replica_steps[0], replica_steps[1]) << "the throttled replica ran fewer steps";

  const fs::path resumed = scratch_ / "time-boxed-resumed";
  result = launch(2, args(resumed, "--stop-after 10"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto stopped = nlohmann::json::parse(testing::read_file(resumed / "summary.json"));
  EXPECT_GE(stopped.at("last_step").get<int64_t>(), 10);
  result = launch(2, args(resumed, "--resume"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_GE(nlohmann::json::parse(testing::read_file(resumed / "summary.json")).at("last_step").get<int64_t>(), 40);

  // Replicas of two DDP ranks, replica 1 throttled: each rank reads its own clock, so a
  // replica's ranks may see their time run out at different steps and must agree on one (the
  // vote in the metric's all-reduce), or their collectives would no longer match.
  const fs::path ddp_inside = scratch_ / "time-boxed-ddp-inside";
  result = launch(4, args(ddp_inside, "--replica-ranks 2", "1:3"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto inside = nlohmann::json::parse(testing::read_file(ddp_inside / "summary.json"));
  EXPECT_EQ(inside.at("strategy"), "diloco(ddp x 2)");
  EXPECT_GE(inside.at("last_step").get<int64_t>(), 40);
  EXPECT_LT(inside.at("replica_steps")[1].get<int64_t>(), inside.at("replica_steps")[0].get<int64_t>());
}

TEST_F(Diloco, StreamingFragmentsOverlapTheirExchangesAndResumeExactlyWithOneInFlight) {
  // Two replicas, P = 2 fragments (nano's two layers), H = 4, τ = 1, α = 0.5, int8 on the wire:
  // fragment 1 starts at steps 2, 6, 10 and lands one step later, fragment 0 at 4, 8 (+ the last
  // step). The checkpoint of step 6 holds fragment 1's exchange in flight.
  const std::string streaming = "--outer-dtype int8 --fragments 2 --overlap-steps 1 --fragment-mix 0.5 ";
  const fs::path straight = scratch_ / "straight", resumed = scratch_ / "resumed";
  auto result = launch(2, train_args(straight, streaming));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(testing::read_file(straight / "summary.json"));
  // Fragment 1 lands at 3, 7, 11 and syncs again at the last step; fragment 0 lands at 5, 9 and
  // 12 (started at 12, completed early as the run ends).
  EXPECT_EQ(summary.at("outer_syncs"), 7);
  std::map<int, nlohmann::json> syncs;
  for (const auto& line : read_metrics(straight / "metrics.jsonl")) {
    if (line.contains("outer_sync")) syncs[line.at("step").get<int>()] = line.at("outer_sync");
  }
  EXPECT_EQ(syncs.at(2).at("fragments_started"), nlohmann::json::array({1}));
  EXPECT_FALSE(syncs.at(2).contains("fragments_applied"));
  EXPECT_EQ(syncs.at(3).at("fragments_applied"), nlohmann::json::array({1}));
  EXPECT_EQ(syncs.at(4).at("fragments_started"), nlohmann::json::array({0}));
  EXPECT_EQ(syncs.at(5).at("fragments_applied"), nlohmann::json::array({0}));
  EXPECT_EQ(syncs.count(1), 0u);
  // Each exchange moves one fragment: its bytes, booked when it lands, are a part of the model's.
  const double parameters = summary.at("parameters").get<double>();
  const double whole = 2.0 * codec::WireCodec(codec::WireDtype::Int8).encoded_size(static_cast<size_t>((parameters + 1) / 2));
  for (int step : {3, 5}) {
    const double bytes = syncs.at(step).at("bytes_sent").get<double>();
    EXPECT_GT(bytes, 0.2 * whole) << "step " << step;
    EXPECT_LT(bytes, 0.8 * whole) << "step " << step;
  }

  for (const std::string stop : {"--stop-after 6", "--resume"}) {
    result = launch(2, train_args(resumed, streaming + stop));
    ASSERT_EQ(result.exit_code, 0) << stop << "\n" << result.output;
  }
  const auto in_flight = SafetensorsFile::load(resumed / "checkpoints" / "step-000006" / "strategy.safetensors");
  const torch::Tensor since = tensor_from_file(in_flight, "outer.in_flight_since");
  EXPECT_TRUE(torch::equal(since, torch::tensor({int64_t{-1}, int64_t{6}}))) << since;
  EXPECT_EQ(losses_of(resumed), losses_of(straight));
}

// SparseLoCo end to end: the same fixture, another outer method.
class Sparseloco : public Diloco {
 protected:
  std::string sparse_args(const fs::path& out, const std::string& extra = "") const {
    return common_args(out) + "--lr 3e-3 --strategy sparseloco --sync-every 4 " + extra;
  }

  // The payload of one replica for the model a run trained, with the fixed index coding.
  static size_t fixed_payload_bytes(const fs::path& run) {
    const LlamaModel model(read_checkpoint_state(checkpoint_dir(run, 12)).model_config);
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& parameter : model.parameters()) shapes.push_back(parameter.tensor.sizes().vec());
    codec::SparseOptions options;
    options.index_coding = codec::IndexCoding::Fixed;
    return codec::packed_size(shapes, options);
  }
};

TEST_F(Sparseloco, TwoReplicasStayIdenticalSendOnePayloadEachAndResumeWithTheirOwnErrorBuffers) {
  // Two one-rank replicas, H = 4: per sync each rank all-gathers its payload (an 8-byte count,
  // then the payload) and the 8-byte hash of the new weights, which must agree or the run stops.
  const fs::path straight = scratch_ / "straight", resumed = scratch_ / "resumed";
  auto result = launch(2, sparse_args(straight, "--index-coding fixed"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(testing::read_file(straight / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "sparseloco(single x 1)");
  EXPECT_EQ(summary.at("outer_syncs"), 3);
  EXPECT_EQ(summary.at("outer_lr"), 1.0);
  EXPECT_EQ(summary.at("outer_momentum"), 0.0);
  const auto payload = static_cast<double>(fixed_payload_bytes(straight));
  EXPECT_EQ(summary.at("cross_replica_bytes_sent").get<double>(), 3 * 2 * (8 + payload + 8));
  EXPECT_LT(payload, summary.at("parameters").get<double>() * 4 / 40) << "k = 64 per 4096 in ~14 bits";
  for (const auto& line : read_metrics(straight / "metrics.jsonl")) {
    if (!line.contains("outer_sync")) continue;
    EXPECT_EQ(line.at("outer_sync").at("payload_bytes").get<double>(), payload);
    EXPECT_GT(line.at("outer_sync").at("bits_per_index").get<double>(), 6.0);
    // The codec's time (which plan models) is part of the time the sync blocked.
    const double codec_ms = line.at("outer_sync").at("codec_ms").get<double>();
    EXPECT_GT(codec_ms, 0.0);
    EXPECT_LE(codec_ms, line.at("outer_sync").at("blocked_ms").get<double>());
  }

  // Stop at step 6, inside a window: each replica's error buffer is its own checkpoint state.
  for (const std::string stop : {"--stop-after 6", "--resume"}) {
    result = launch(2, sparse_args(resumed, "--index-coding fixed " + stop));
    ASSERT_EQ(result.exit_code, 0) << stop << "\n" << result.output;
  }
  const fs::path checkpoint = checkpoint_dir(resumed, 6);
  const auto rank0 = SafetensorsFile::load(checkpoint / "rank-00000" / "strategy.safetensors");
  const auto rank1 = SafetensorsFile::load(checkpoint / "rank-00001" / "strategy.safetensors");
  const torch::Tensor error0 = tensor_from_file(rank0, "outer.error.0"), error1 = tensor_from_file(rank1, "outer.error.0");
  EXPECT_GT(error0.abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(torch::equal(error0, error1)) << "the replicas' buffers differ";
  EXPECT_EQ(losses_of(resumed), losses_of(straight));
}

TEST_F(Sparseloco, ReplicasOfTwoDdpRanksWithFragmentsCrossTheBoundaryFromOneRankEach) {
  // 2 replicas x 2 ranks, P = 2 fragments: fragment 1 syncs at 2, 6, 10 and 12 (the last step),
  // fragment 0 at 4, 8, 12. The rank at position 0 of each replica all-gathers the payloads and
  // broadcasts the aggregate inside its replica; the rank at position 1 sends other replicas
  // only the 8-byte hash of each sync's weights.
  const fs::path run = scratch_ / "2x2";
  const auto result = launch(4, sparse_args(run, "--replica-ranks 2 --fragments 2 --bucket-mb 0.0625"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(testing::read_file(run / "summary.json"));
  EXPECT_EQ(summary.at("strategy"), "sparseloco(ddp x 2)");
  EXPECT_EQ(summary.at("outer_syncs"), 7);
  const auto& operations = summary.at("traffic").at("operations");
  EXPECT_EQ(operations.at("outer_pseudo_gradient/allgather").at("calls"), 7);
  EXPECT_EQ(operations.at("outer_pseudo_gradient/in_replica").at("calls"), 7);
  const auto& by_rank = summary.at("traffic_by_rank");
  EXPECT_EQ(by_rank.at(1).at("cross_replica").at("sent").get<double>(), 7 * 8);
  EXPECT_GT(by_rank.at(0).at("cross_replica").at("sent").get<double>(), 7 * (8 + 8 + 32));
}

}  // namespace
}  // namespace strait
