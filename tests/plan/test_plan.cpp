// strait plan: its bytes against the ledger's models (exact where the formulas are), the ZeRO++
// ratios of ALGORITHMS.md, its time model's three bounds, its errors, the seed papers' settings,
// and its predicted step time against recorded testbed runs (tests/plan/testbed_runs.json).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "strait/comm/gloo_algorithms.h"
#include "strait/core/error.h"
#include "strait/plan/plan.h"
#include "error_of.h"
#include "test_support.h"

namespace strait::plan {
namespace {

namespace gloo = comm::gloo_algorithms;

// micro: strait's ~0.87M-parameter preset, the model of the recorded DiLoCo/SparseLoCo runs.
const auto kMicroShapes = llama_shapes(256, 128, 352, 4, false);
constexpr int64_t kMicroParams = 869504;

Workload measured(double params, double step_compute_s, std::vector<std::vector<int64_t>> shapes = {}) {
  Workload workload;
  workload.params = params;
  workload.step_compute_s = step_compute_s;
  workload.shapes = std::move(shapes);
  return workload;
}

Workload from_flops(double params, double tokens, double flops) {
  Workload workload;
  workload.params = params;
  workload.tokens_per_rank_step = tokens;
  workload.flops_per_rank = flops;
  return workload;
}

MethodSpec method(const std::string& name, int sync_every = 15) {
  MethodOptions options;
  options.sync_every = sync_every;
  return method_named(name, options);
}

using testing::error_of;

TEST(PlanLinkRate, ParsesTcRates) {
  EXPECT_DOUBLE_EQ(parse_link_rate("12.5gbit"), 12.5e9);
  EXPECT_DOUBLE_EQ(parse_link_rate("100mbit"), 100e6);
  EXPECT_DOUBLE_EQ(parse_link_rate("20mbit"), 20e6);
  EXPECT_DOUBLE_EQ(parse_link_rate("1gbit"), 1e9);
  EXPECT_DOUBLE_EQ(parse_link_rate("800kbit"), 800e3);
  EXPECT_DOUBLE_EQ(parse_link_rate("100MBit"), 100e6);
  EXPECT_DOUBLE_EQ(parse_link_rate("1e9bit"), 1e9);
  for (const char* bad : {"", "fast", "100", "100mb", "-1mbit", "0mbit", "1e400gbit", "100 mbit"}) {
    EXPECT_NE(error_of([&] { parse_link_rate(bad); }).find("is not a link rate like 12.5gbit"), std::string::npos) << bad;
  }
}

TEST(PlanBytes, DdpEqualsTheRingModelAndTheLedger) {
  // One node-rank per node: the plain ring over the nodes on the whole bucket.
  const Cluster four{4, 1, 100e6};
  const uint64_t bucket = kMicroParams * 4;
  double ring = 0;
  for (const auto& peer : gloo::ring_allreduce(0, 4, bucket, 4)) ring += static_cast<double>(peer.sent);
  EXPECT_EQ(ddp_bytes_per_node(four, {kMicroParams}), ring);
  // The recorded testbed run's ledger (bench/out/diloco-runs/testbed/*/ddp): 5,217,032 bytes a
  // step at rank 0 = the gradient ring, 5,217,024, + the loss mean's 8-byte all-reduce.
  EXPECT_EQ(ddp_bytes_per_node(four, {kMicroParams}), 5217024);
  const Prediction ddp = predict(four, measured(kMicroParams, 0.05, kMicroShapes), method("ddp"));
  EXPECT_EQ(ddp.cross_node_bytes_per_node_per_step, 5217024);

  // Two ranks per node: each takes half of every bucket across the nodes (hierarchical).
  const Cluster two_by_two{2, 2, 100e6};
  double expected = 0;
  for (int64_t bucket_elements : {300000, 262145}) {
    const uint64_t slice = static_cast<uint64_t>((bucket_elements + 1) / 2) * 4;
    for (const auto& peer : gloo::ring_allreduce(0, 2, slice, 4)) expected += 2.0 * static_cast<double>(peer.sent);
  }
  EXPECT_EQ(ddp_bytes_per_node(two_by_two, {300000, 262145}), expected);
  EXPECT_EQ(ddp_bytes_per_node(Cluster{1, 8, 1e9}, {kMicroParams}), 0);  // one node: nothing crosses
}

TEST(PlanBytes, DilocoIsTheDenseExchangeOfTheLedgerEveryHSteps) {
  // BENCHMARKS.md (issue 11), ledger = formula to the byte, per rank and sync: R = 4 and 8.
  EXPECT_EQ(dense_exchange_bytes_per_node(Cluster{4, 1, 20e6}, kMicroParams, codec::WireDtype::Fp32), 5217048);
  EXPECT_EQ(dense_exchange_bytes_per_node(Cluster{8, 1, 20e6}, kMicroParams, codec::WireDtype::Fp32), 6086584);
  const Prediction diloco = predict(Cluster{4, 1, 20e6}, measured(kMicroParams, 0.05), method("diloco", 15));
  EXPECT_EQ(diloco.bytes_per_outer_sync, 5217048);
  EXPECT_DOUBLE_EQ(diloco.cross_node_bytes_per_node_per_step, 5217048.0 / 15);
  // The outer dtypes shrink it by the codecs' sizes: int4 is half a byte a value plus a float32
  // scale per 256 (2 x 3 slices of 217,376 values, + the 24-byte weight check).
  MethodOptions int4;
  int4.outer_dtype = codec::WireDtype::Int4;
  const Prediction small = predict(Cluster{4, 1, 20e6}, measured(kMicroParams, 0.05), method_named("diloco", int4));
  EXPECT_EQ(small.bytes_per_outer_sync, 6 * (217376 / 2 + 4 * 850) + 24);
  // A replica of k ranks per node: every rank exchanges 1/k of the model, so the node the same.
  EXPECT_NEAR(dense_exchange_bytes_per_node(Cluster{4, 8, 20e6}, 8 * 1000000, codec::WireDtype::Fp32),
              8 * dense_exchange_bytes_per_node(Cluster{4, 1, 20e6}, 1000000, codec::WireDtype::Fp32), 1e-9);
}

int64_t elements(const std::vector<std::vector<int64_t>>& shapes) {
  int64_t total = 0;
  for (const auto& shape : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  return total;
}

TEST(PlanBytes, LlamaShapesAreStraitsPresets) {
  EXPECT_EQ(elements(kMicroShapes), kMicroParams);
  // micro's layers: 200,960 elements each, + the embedding (32,768) in the first, + the final
  // norm and head (128 + 32,768) in the last.
  EXPECT_EQ(llama_layer_elements(256, 128, 352, 4, false), (std::vector<int64_t>{233728, 200960, 200960, 233856}));
  EXPECT_EQ(elements(llama_shapes(256, 256, 688, 6, false)), 4877568);  // small (bench/out/wan_ddp.json)
  EXPECT_EQ(elements(llama_shapes(256, 256, 688, 6, true)), 4877568 - 256 * 256);
}

TEST(PlanBytes, SparseLocoUsesTheCodecsPayloadSize) {
  // With fixed 12-bit indices the payload depends on the shapes alone: micro's is 24,886 bytes
  // (BENCHMARKS.md), and the ledger's per-rank sync at R = 4 is 3 x (8 + 24,886) + 24 = 74,706.
  MethodOptions fixed;
  fixed.sparse.index_coding = codec::IndexCoding::Fixed;
  const Prediction p = predict(Cluster{4, 1, 20e6}, measured(kMicroParams, 0.05, kMicroShapes),
                               method_named("sparseloco", fixed));
  EXPECT_EQ(p.bytes_per_outer_sync, 74706);
  EXPECT_EQ(codec::expected_packed_size(kMicroShapes, fixed.sparse),
            static_cast<double>(codec::packed_size(kMicroShapes, fixed.sparse)));
  // Auto (Rice on random positions): the real pseudo-gradient's payload was 17,313 bytes at
  // 7.52 bits per index; the expectation for random positions is within 2%.
  EXPECT_NEAR(codec::expected_packed_size(kMicroShapes, codec::SparseOptions{}), 17313, 0.02 * 17313);
}

TEST(PlanBytes, Zero3InsideReplicasExchangesEachRanksShard) {
  // micro on 2 nodes of 3 ranks. ZeRO-3 shards each unit (embedding 32,768, each of 4 layers
  // 200,960, head 32,896 elements) into ceil(n / 3): ranks 0 and 1 keep 10,923 + 4 x 66,987 +
  // 10,966 = 289,837 elements, rank 2 the rest, 10,922 + 4 x 66,986 + 10,964 = 289,830. Each
  // exchanges its part with its counterpart on the other node: half of it, encoded, out (all-to-
  // all) and its mean of the other half back (all-gather), fp32, plus the 8-byte weight check:
  // 2 x (2 x 4 x 144,919 + 8) + (2 x 4 x 144,915 + 8) = 3,478,048 bytes a node. With DDP inside
  // every rank takes ceil(869,504 / 3) = 289,835: 3 x (2 x 4 x 144,918 + 8) = 3,478,056.
  const Cluster cluster{2, 3, 1e9};
  const Workload work = measured(kMicroParams, 0.05, kMicroShapes);
  MethodOptions inside;
  inside.zero3_inside = true;
  const Prediction zero = predict(cluster, work, method_named("diloco", inside));
  EXPECT_EQ(zero.bytes_per_outer_sync, 3478048);
  EXPECT_EQ(predict(cluster, work, method("diloco")).bytes_per_outer_sync, 3478056);
  EXPECT_EQ(zero.method.name, "diloco H=15 fp32 (zero3 inside)");
  EXPECT_DOUBLE_EQ(zero.compute_s, 0.05 * 8 / 6) << "its backward recomputes the forward";
  EXPECT_DOUBLE_EQ(zero.step_time_s, zero.compute_s + zero.comm_s);
  // Only the outer methods have replicas to put it inside; streaming's fragments are not modelled.
  EXPECT_FALSE(method_named("zero3", inside).zero3_inside);
  EXPECT_FALSE(method_named("ddp", inside).zero3_inside);
  EXPECT_TRUE(method_named("sparseloco", inside).zero3_inside);
  EXPECT_NE(error_of([&] { predict(cluster, work, method_named("streaming-diloco", inside)); })
                .find("streaming DiLoCo with ZeRO-3 inside its replicas is not in plan's model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { predict(Cluster{2, 1, 1e9}, work, method_named("diloco", inside)); })
                .find("ZeRO-3 inside replicas needs replicas of at least 2 ranks"),
            std::string::npos);
  EXPECT_NE(plan_json(cluster, work, {zero}).at("assumptions").dump().find("ZeRO-3 inside the node"), std::string::npos);
}

TEST(PlanBytes, ZeroPlusPlusRatiosAreThoseOfAlgorithmsMd) {
  // Llama-2 7B on 8 nodes of 8 ranks: ZeRO-3 moves 3M across a node's link (M = the bf16 model),
  // +hpZ 2M, +hpZ+qwZ 1.5M, all three 0.75M (+ scales), within 5%.
  const Cluster cluster{8, 8, 12.5e9};
  const Workload work = from_flops(7e9, 4096, 300e12);
  const double m = 7e9 * 2;
  const double zero3 = predict(cluster, work, method("zero3")).cross_node_bytes_per_node_per_step;
  EXPECT_NEAR(zero3 / m, 3.0, 3.0 * 0.05);
  EXPECT_NEAR(predict(cluster, work, method("zero3+hpz")).cross_node_bytes_per_node_per_step / zero3, 2.0 / 3, 0.05 * 2 / 3);
  EXPECT_NEAR(predict(cluster, work, method("zero3+hpz+qwz")).cross_node_bytes_per_node_per_step / zero3, 0.5, 0.05 * 0.5);
  EXPECT_NEAR(predict(cluster, work, method("zero++")).cross_node_bytes_per_node_per_step / zero3, 0.25, 0.05 * 0.25);
}

TEST(PlanTime, EachMethodFollowsItsBound) {
  const Cluster cluster{4, 1, 20e6, 1.0};
  const double compute = 0.3;
  // DDP with one bucket: nothing to overlap, so compute + link.
  const Prediction ddp = predict(cluster, measured(kMicroParams, compute), method("ddp"));
  EXPECT_NEAR(ddp.step_time_s, compute + 5217024 * 8 / 20e6, 1e-9);
  // Many buckets: forward + max(backward + link / b, backward / b + link).
  MethodOptions small_buckets;
  small_buckets.bucket_bytes = 4 * 8696;  // ~100 buckets
  const Prediction pipelined = predict(cluster, measured(kMicroParams, compute), method_named("ddp", small_buckets));
  EXPECT_NEAR(pipelined.step_time_s, compute / 3 + (compute * 2 / 3) / 100 + pipelined.comm_s, 1e-12);
  // ZeRO overlaps everything: max(compute with recompute, link).
  const Prediction zero = predict(cluster, measured(kMicroParams, compute), method("zero3"));
  EXPECT_DOUBLE_EQ(zero.step_time_s, std::max(compute * 8 / 6, zero.comm_s));
  // DiLoCo blocks once per H steps.
  const Prediction diloco = predict(cluster, measured(kMicroParams, compute), method("diloco", 15));
  EXPECT_DOUBLE_EQ(diloco.step_time_s, compute + 5217048 * 8 / 20e6 / 15);
  EXPECT_DOUBLE_EQ(diloco.exposed_comm_s, diloco.step_time_s - compute);
  // Streaming DiLoCo: each fragment's exchange hides behind τ = 5 steps here, so only the link
  // rate could bound it.
  const Prediction streaming = predict(Cluster{4, 1, 1e9, 1.0}, measured(kMicroParams, compute), method("streaming-diloco", 15));
  EXPECT_DOUBLE_EQ(streaming.step_time_s, compute);
  // Compute from FLOPs: 6 x params x tokens / FLOP/s.
  EXPECT_DOUBLE_EQ(predict(cluster, from_flops(1e9, 1000, 1e12), method("diloco")).compute_s, 6.0);
}

TEST(PlanTime, SparseLocoBlocksForItsCodecToo) {
  const Cluster cluster{4, 1, 20e6, 1.0};
  Workload work = measured(kMicroParams, 0.05, kMicroShapes);
  const Prediction without = predict(cluster, work, method("sparseloco", 15));
  EXPECT_EQ(without.codec_s_per_outer_sync, 0);
  EXPECT_DOUBLE_EQ(without.step_time_s, 0.05 + without.bytes_per_outer_sync * 8 / 20e6 / 15);
  // 30 ns a parameter: micro's 869,504 take 26.1 ms a sync, spread over its H = 15 steps; the
  // bytes and the link time do not change, the step and what it exposes do.
  work.sparse_codec_s_per_param = 30e-9;
  const Prediction with = predict(cluster, work, method("sparseloco", 15));
  EXPECT_DOUBLE_EQ(with.codec_s_per_outer_sync, 30e-9 * kMicroParams);
  EXPECT_EQ(with.bytes_per_outer_sync, without.bytes_per_outer_sync);
  EXPECT_EQ(with.comm_s, without.comm_s);
  EXPECT_DOUBLE_EQ(with.step_time_s, without.step_time_s + 30e-9 * kMicroParams / 15);
  EXPECT_DOUBLE_EQ(with.exposed_comm_s, with.step_time_s - 0.05);
  EXPECT_EQ(with.time_model, "compute + (blocking exchange + codec) / H");
  // It scales with the parameters, and only SparseLoCo has it.
  work.params = 10 * kMicroParams;
  EXPECT_DOUBLE_EQ(predict(cluster, work, method("sparseloco", 15)).codec_s_per_outer_sync, 30e-9 * 10 * kMicroParams);
  EXPECT_EQ(predict(cluster, work, method("diloco", 15)).codec_s_per_outer_sync, 0);
  // It is part of the exchange whose share of compute sets the smallest H.
  const SyncCondition condition = sync_condition(cluster, work, method("sparseloco"));
  EXPECT_DOUBLE_EQ(condition.sync_s, condition.bytes_per_sync * 8 / 20e6 + 30e-9 * 10 * kMicroParams);
  const nlohmann::json report = plan_json(cluster, work, {with});
  EXPECT_DOUBLE_EQ(report["methods"][0]["codec_s_per_outer_sync"].get<double>(), 30e-9 * kMicroParams);
  EXPECT_DOUBLE_EQ(report["workload"]["sparse_codec_s_per_param"].get<double>(), 30e-9);
}

TEST(PlanErrors, NameTheProblem) {
  const Cluster cluster{2, 1, 1e9};
  EXPECT_EQ(error_of([&] { predict(cluster, measured(-7e9, 1), method("ddp")); }),
            "plan: --params must be a positive number, got -7e+09");
  EXPECT_EQ(error_of([&] { predict(cluster, measured(0, 1), method("ddp")); }),
            "plan: --params must be a positive number, got 0");
  EXPECT_NE(error_of([&] { method("dilcoo"); }).find("unknown method 'dilcoo' (did you mean 'diloco'?); the methods are ddp"),
            std::string::npos);
  EXPECT_NE(error_of([&] { predict(cluster, from_flops(1e9, 1000, 0), method("ddp")); }).find("--flops"), std::string::npos);
  EXPECT_NE(error_of([&] { predict(Cluster{0, 1, 1e9}, measured(1e9, 1), method("ddp")); }).find("--nodes"),
            std::string::npos);
  MethodOptions options;
  options.overlap_steps = 15;
  EXPECT_NE(error_of([&] { predict(cluster, measured(1e9, 1), method_named("streaming-diloco", options)); })
                .find("--overlap-steps must be in [0, --sync-every)"),
            std::string::npos);
  Workload negative_codec = measured(1e9, 1);
  negative_codec.sparse_codec_s_per_param = -1e-9;
  EXPECT_EQ(error_of([&] { predict(cluster, negative_codec, method("sparseloco")); }),
            "plan: SparseLoCo's codec time per parameter must be in [0, 1) s");
}

// The seed papers' settings (README "strait plan" shows the same commands' output).
TEST(PlanSeedPapers, ZeroPlusPlusBeatsZero3OnLlama2) {
  for (double params : {7e9, 70e9}) {
    const Cluster cluster{8, 8, parse_link_rate("12.5gbit")};
    const Workload work = from_flops(params, 4096, 300e12);
    const Prediction zero3 = predict(cluster, work, method("zero3"));
    const Prediction zeropp = predict(cluster, work, method("zero++"));
    EXPECT_GT(zero3.comm_s, zero3.compute_s) << params;  // ZeRO-3 is link-bound on one NIC a node
    EXPECT_LT(zeropp.step_time_s, zero3.step_time_s / 2) << params;
  }
}

TEST(PlanSeedPapers, SparseLocoSendsFarLessThanDilocoOn512M) {
  for (const char* link : {"1gbit", "500mbit", "100mbit"}) {
    const Cluster cluster{8, 1, parse_link_rate(link)};
    const Workload work = from_flops(512e6, 16 * 2048, 100e12);
    const Prediction diloco = predict(cluster, work, method("diloco", 15));
    const Prediction sparse = predict(cluster, work, method("sparseloco", 15));
    // The all-gather's download grows with R (8 here), the ring's does not: ~35-50x, not 146x.
    EXPECT_GT(diloco.cross_node_bytes_per_node_per_step / sparse.cross_node_bytes_per_node_per_step, 30) << link;
    EXPECT_LT(sparse.step_time_s, diloco.step_time_s) << link;
  }
}

TEST(PlanReport, JsonHasEveryMethodsFieldsAndARecommendation) {
  const Cluster cluster{8, 8, 12.5e9};
  const Workload work = from_flops(7e9, 4096, 300e12);
  std::vector<Prediction> predictions;
  for (const auto& name : method_names()) predictions.push_back(predict(cluster, work, method(name)));
  const nlohmann::json report = plan_json(cluster, work, predictions);
  ASSERT_EQ(report["methods"].size(), method_names().size());
  for (const auto& entry : report["methods"]) {
    for (const char* key : {"cross_node_bytes_per_node_per_step", "step_time_s", "compute_s", "comm_s", "exposed_comm_s"}) {
      EXPECT_TRUE(entry.contains(key)) << entry.dump() << " lacks " << key;
    }
  }
  const Recommendation best = recommend(predictions);
  EXPECT_EQ(report["recommendation"]["method"], predictions[best.index].method.name);
  for (const auto& p : predictions) EXPECT_GE(p.step_time_s, predictions[best.index].step_time_s);
  EXPECT_NE(report["recommendation"]["caveat"].get<std::string>().find("change the optimisation"), std::string::npos);
  EXPECT_NE(plan_table(cluster, work, predictions).find("recommendation: "), std::string::npos);
}

TEST(PlanMeasured, ReadsTheComputeTimeOfARun) {
  testing::ScratchDir dir;
  // Two quiet steps and a sync step (which has cross-node bytes and is left out).
  testing::write_file(dir / "metrics.jsonl",
                      "{\"step\":1,\"step_ms\":50,\"forward_ms\":15,\"backward_ms\":30,\"traffic\":{\"cross_node\":{\"sent\":0}}}\n"
                      "{\"step\":2,\"step_ms\":60,\"forward_ms\":15,\"backward_ms\":30,\"traffic\":{\"cross_node\":{\"sent\":0}}}\n"
                      "{\"step\":3,\"step_ms\":900,\"forward_ms\":15,\"backward_ms\":30,\"outer_sync\":{},"
                      "\"traffic\":{\"cross_node\":{\"sent\":5}}}\n");
  testing::write_file(dir / "summary.json", "{\"parameters\": 869504, \"tokens_per_step\": 2048, \"world_size\": 4}");
  testing::write_file(dir / "config.json",
                      "{\"vocab_size\": 256, \"hidden_size\": 128, \"intermediate_size\": 352, "
                      "\"num_hidden_layers\": 4, \"tie_word_embeddings\": false}");
  const MeasuredRun run = read_measured_run(dir.path().string());
  EXPECT_DOUBLE_EQ(run.step_compute_s, 0.060);
  EXPECT_EQ(run.params, 869504);
  EXPECT_EQ(run.tokens_per_rank_step, 512);
  EXPECT_EQ(run.shapes, kMicroShapes);
  EXPECT_EQ(run.sparse_codec_s_per_param, 0) << "no sync recorded codec_ms";
  // A SparseLoCo run's syncs record their codec time and the values they coded (dense_bytes /
  // 4: here the whole model twice, then half of it, as one of two fragments or one of two
  // ranks' shards would be): the median (upper, of 3) per value, 26 ms for the whole model.
  testing::write_file(dir / "metrics.jsonl",
                      "{\"step\":1,\"step_ms\":50,\"outer_sync\":{\"codec_ms\":20.0,\"dense_bytes\":3478016}}\n"
                      "{\"step\":2,\"step_ms\":60,\"outer_sync\":{\"codec_ms\":40.0,\"dense_bytes\":3478016}}\n"
                      "{\"step\":3,\"step_ms\":55,\"outer_sync\":{\"codec_ms\":13.0,\"dense_bytes\":1739008}}\n"
                      "{\"step\":4,\"step_ms\":45}\n");
  EXPECT_DOUBLE_EQ(read_measured_run(dir.path().string()).sparse_codec_s_per_param, 0.026 / 869504);
  EXPECT_NE(error_of([&] { read_measured_run((dir / "missing").string()); }).find("no metrics.jsonl"), std::string::npos);
  // The files are input: fields of other types are named errors, not internal ones.
  testing::write_file(dir / "summary.json", "{\"parameters\": \"many\", \"tokens_per_step\": 2048, \"world_size\": 4}");
  EXPECT_NE(error_of([&] { read_measured_run(dir.path().string()); })
                .find("plan: " + (dir / "summary.json").string() + ": a field has an unexpected type"),
            std::string::npos);
  testing::write_file(dir / "metrics.jsonl", "{\"step\":1,\"step_ms\":50,\"traffic\":{\"cross_node\":\"x\"}}\n");
  EXPECT_NE(error_of([&] { read_measured_run(dir.path().string()); })
                .find((dir / "metrics.jsonl").string() + " line 1: a field has an unexpected type"),
            std::string::npos);
}

// Every recorded testbed run, predicted from its own measured compute. The 4-node runs at 20 and
// 100 Mbit/s were re-recorded under TCP CUBIC, scripts/wan's default since 2026-12-01; under the
// machine's BBR, which the testbed inherited before, DiLoCo H=15 across 4 nodes at 20 Mbit/s was
// 23.8% slower than predicted (its syncs blocked 1.42-1.49x their bytes' link time, 1.18x under
// CUBIC; BENCHMARKS.md, "The testbed's TCP: CUBIC").
TEST(PlanValidation, PredictsRecordedTestbedRunsWithin20Percent) {
  std::ifstream file(std::filesystem::path(STRAIT_SOURCE_DIR) / "tests/plan/testbed_runs.json");
  ASSERT_TRUE(file) << "tests/plan/testbed_runs.json";
  const auto recorded = nlohmann::json::parse(file);
  ASSERT_GE(recorded["runs"].size(), 15u);
  for (const auto& run : recorded["runs"]) {
    const std::string name = run["name"];
    const auto& model = run["model"];
    const Cluster cluster{run["nodes"].get<int>(), run["ranks_per_node"].get<int>(), parse_link_rate(run["link"])};
    Workload work = measured(run["params"].get<double>(), run["step_compute_s"].get<double>(),
                             llama_shapes(model["vocab_size"], model["hidden_size"], model["intermediate_size"],
                                          model["num_hidden_layers"], model["tie_word_embeddings"]));
    work.layer_elements = llama_layer_elements(model["vocab_size"], model["hidden_size"], model["intermediate_size"],
                                               model["num_hidden_layers"], model["tie_word_embeddings"]);
    work.sparse_codec_s_per_param = run.value("sparse_codec_s_per_param", 0.0);
    const auto& spec = run["method"];
    MethodOptions options;
    options.sync_every = spec.value("sync_every", 15);
    options.fragments = spec.value("fragments", 1);
    options.overlap_steps = spec.value("overlap_steps", 0);
    options.bucket_bytes = spec.value("bucket_mb", 25.0) * 1024 * 1024;
    options.outer_dtype = codec::parse_wire_dtype(spec.value("outer_dtype", "fp32"));
    options.sparse.topk = spec.value("topk", 64);
    options.sparse.index_coding = codec::index_coding(spec.value("index_coding", "auto"));
    const Prediction p = predict(cluster, work, method_named(spec["kind"], options));
    const double measured_step = run["train_s"].get<double>() / run["steps"].get<double>();
    const double error = p.step_time_s / measured_step - 1;
    std::printf("  %-56s predicted %8.1f ms  measured %8.1f ms  %+6.1f%%\n", name.c_str(), 1000 * p.step_time_s,
                1000 * measured_step, 100 * error);
    EXPECT_LE(std::abs(error), 0.2) << name << " (TCP " << run["tcp_congestion_control"].get<std::string>() << ")";
    // Bytes: the ledger's. DDP's step adds only its loss mean (8 bytes); an outer window's
    // exchanges lack the 8-byte weight checks the plan counts, streaming's fragments are layers
    // (the plan splits evenly) and the real SparseLoCo payloads' positions are not random: 5%.
    if (run.contains("ledger_bytes_per_node_per_step")) {
      EXPECT_NEAR(p.cross_node_bytes_per_node_per_step, run["ledger_bytes_per_node_per_step"].get<double>(), 64) << name;
    } else {
      const double ledger = run["ledger_exchange_bytes_per_node_per_window"];
      EXPECT_NEAR(p.bytes_per_outer_sync, ledger, 0.05 * ledger) << name;
    }
    // Streaming's fragments (layers p, p + P, ...) each to the byte, less the 8-byte weight check
    // to each other replica, which the ledger's bytes_sent leaves out.
    if (run.contains("ledger_fragment_exchange_bytes")) {
      const auto& ledger = run["ledger_fragment_exchange_bytes"];
      ASSERT_EQ(p.fragment_sync_bytes.size(), ledger.size()) << name;
      for (size_t f = 0; f < ledger.size(); ++f) {
        EXPECT_EQ(p.fragment_sync_bytes[f] - 8.0 * (cluster.nodes - 1) * cluster.ranks_per_node, ledger[f].get<double>())
            << name << " fragment " << f;
      }
    }
  }
}

}  // namespace
}  // namespace strait::plan

namespace strait::plan {
namespace {

// The command line: exit statuses and messages as the other commands have them. The binary is
// built with the LibTorch targets, which this test executable does not wait for.
class PlanCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(STRAIT_BINARY)) GTEST_SKIP() << STRAIT_BINARY << " is not built";
  }
};

TEST_F(PlanCommand, PrintsOneJsonObjectWithEveryMethod) {
  const auto result =
      testing::run_strait("plan --params 7e9 --nodes 8 --ranks-per-node 8 --link 12.5gbit --flops 300e12 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.output);
  EXPECT_EQ(report["methods"].size(), method_names().size());
  EXPECT_EQ(report["cluster"]["link_bits_per_s"], 12.5e9);
  EXPECT_TRUE(report["recommendation"].contains("reason"));
}

TEST_F(PlanCommand, RefusesABadLinkRateAsAUsageError) {
  // One start of the binary costs ~0.7 s (LibTorch loads): the other errors are the library's,
  // checked above, and reach the user through main()'s one handler as every command's do.
  const auto result = testing::run_strait("plan --params 7e9 --link 12.5gbps --flops 1e12");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("strait: error: --link: '12.5gbps' is not a link rate like 12.5gbit"), std::string::npos)
      << result.output;
}

}  // namespace
TEST(PlanSyncCondition, TheSmallestHKeepsOneExchangeUnderTenPercentOfHStepsCompute) {
  const Cluster cluster{4, 1, 100e6};
  Workload work;
  work.params = 1e6;
  work.step_compute_s = 0.05;
  const SyncCondition diloco = sync_condition(cluster, work, method_named("diloco", {}), 0.1);
  const double bytes = dense_exchange_bytes_per_node(cluster, 1000000, codec::WireDtype::Fp32);
  EXPECT_DOUBLE_EQ(diloco.bytes_per_sync, bytes);
  EXPECT_DOUBLE_EQ(diloco.sync_s, bytes * 8 / (100e6 * 0.94));
  const int h = diloco.smallest_sync_every;
  EXPECT_LT(diloco.sync_s, 0.1 * h * 0.05) << "at H the exchange is under 10%";
  EXPECT_GE(diloco.sync_s, 0.1 * (h - 1) * 0.05) << "at H - 1 it is not";
  // SparseLoCo's payload is far smaller, so its H is too; a 5x slower link needs ~5x the H.
  const SyncCondition sparse = sync_condition(cluster, work, method_named("sparseloco", {}), 0.1);
  EXPECT_LT(sparse.smallest_sync_every, h / 10);
  const SyncCondition slow = sync_condition(Cluster{4, 1, 20e6}, work, method_named("diloco", {}), 0.1);
  EXPECT_NEAR(slow.smallest_sync_every, 5.0 * h, 5);
  EXPECT_NE(error_of([&] { sync_condition(cluster, work, method_named("ddp", {}), 0.1); })
                .find("for methods that block at the outer step"),
            std::string::npos);
}

}  // namespace strait::plan
