// ZeRO++'s quantized reduce-scatter (comm/quantized_reduce_scatter.h) across real processes on
// loopback, on 2 nodes x 2 ranks, 1 x 4, 4 x 1 and 2 x 3 (nodes simulated by LOCAL_WORLD_SIZE):
// exact sums where both int4 quantizations are exact, the stated error bound and a float32
// model of the specified algorithm on random inputs, the bytes against the ledger, rejected
// arguments, and (1 x 4, 4 x 1) a peer whose bytes do not decode. One job per layout: each
// costs seconds of process start-up and rendezvous.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "launcher.h"
#include "strait/codec/wire_codec.h"
#include "strait/comm/quantized_reduce_scatter.h"

namespace strait::testing::qgz_tests {
namespace {

using comm::QuantizedReduceScatter;
using nlohmann::json;

struct QgzLayout {
  int nodes;
  int local;  // ranks per node
  int world() const { return nodes * local; }
};

std::string qgz_layout_name(const ::testing::TestParamInfo<QgzLayout>& info) {
  return std::to_string(info.param.nodes) + "_nodes_x_" + std::to_string(info.param.local);
}

torch::Tensor as_doubles(const json& values) { return torch::tensor(values.get<std::vector<double>>(), torch::kDouble); }

// One case of the worker's "qgz" scenario (tests/comm/worker/qgz_scenarios.cpp) as every rank
// reported it, by world rank.
struct QgzCase {
  std::string mode;
  int64_t block = 0, chunk = 0;
  std::vector<torch::Tensor> inputs;   // (N, S) float64: row c is the chunk bound for rank c
  std::vector<torch::Tensor> outputs;  // (S) float64
  std::vector<json> reports;           // the whole case, for the bytes
};

QgzCase collect_case(const std::vector<RankOutcome>& outcomes, size_t index, int world) {
  QgzCase qcase;
  for (const RankOutcome& outcome : outcomes) {
    const json& report = outcome.result["cases"][index];
    qcase.mode = report["mode"].get<std::string>();
    qcase.block = report["block"].get<int64_t>();
    qcase.chunk = report["elements"].get<int64_t>();
    qcase.inputs.push_back(as_doubles(report["input"]).view({world, qcase.chunk}));
    qcase.outputs.push_back(as_doubles(report["output"]));
    qcase.reports.push_back(report);
  }
  return qcase;
}

// The values as the wire delivers them: float32 through WireCodec's int4 and back.
torch::Tensor through_int4(const torch::Tensor& values, int64_t block) {
  const codec::WireCodec codec(codec::WireDtype::Int4, block);
  const torch::Tensor floats = values.to(torch::kFloat).contiguous();
  const size_t n = floats.numel();
  std::vector<uint8_t> bytes(codec.encoded_size(n));
  codec.encode(floats.data_ptr<float>(), n, bytes.data());
  torch::Tensor decoded = torch::empty({static_cast<int64_t>(n)}, torch::kFloat);
  codec.decode(bytes.data(), bytes.size(), decoded.data_ptr<float>(), n);
  return decoded;
}

// The header's algorithm for chunk c, in float32: node b's partial is the sum, in local-rank
// order, of its ranks' chunk c through int4 (as is with one rank per node); the result is the
// sum, in node order, of the partials through int4 (the one partial with one node).
torch::Tensor model_sum(const QgzCase& qcase, int c, QgzLayout layout) {
  torch::Tensor sum = torch::zeros({qcase.chunk}, torch::kFloat);
  for (int b = 0; b < layout.nodes; ++b) {
    torch::Tensor partial = torch::zeros({qcase.chunk}, torch::kFloat);
    for (int l = 0; l < layout.local; ++l) {
      const torch::Tensor values = qcase.inputs[b * layout.local + l][c];
      partial += layout.local > 1 ? through_int4(values, qcase.block) : values.to(torch::kFloat);
    }
    sum += layout.nodes > 1 ? through_int4(partial, qcase.block) : partial;
  }
  return sum.to(torch::kDouble);
}

// Half the int4 scale of each value's block (max |x| / 7 / 2), blocks starting at the chunk's
// first value: the most that rounding to the nearest code can move a value.
torch::Tensor half_scales(const torch::Tensor& chunk, int64_t block) {
  torch::Tensor half = torch::empty_like(chunk);
  for (int64_t start = 0; start < chunk.numel(); start += block) {
    const int64_t count = std::min(block, chunk.numel() - start);
    half.narrow(0, start, count).fill_(chunk.narrow(0, start, count).abs().max().item<double>() / 14);
  }
  return half;
}

// How far run()'s result for chunk c may be from the exact sum. Phase 1 moves each rank's value
// by at most half its block's scale, so node b's decoded partial p' lies within
// e1 = sum of those halves of the exact partial p; phase 2 moves p' by half its block's scale,
// at most max |p| + e1 over the block / 7 / 2. Float32 rounding (sums, scales, codes) adds a
// few eps of the magnitudes involved: 1e-5 (84 eps) of the sum of |x| and of the block maxima.
torch::Tensor error_bound(const QgzCase& qcase, int c, QgzLayout layout) {
  torch::Tensor bound = torch::zeros({qcase.chunk}, torch::kDouble);
  torch::Tensor magnitudes = torch::zeros({qcase.chunk}, torch::kDouble);
  for (int b = 0; b < layout.nodes; ++b) {
    torch::Tensor partial = torch::zeros({qcase.chunk}, torch::kDouble);
    torch::Tensor phase1 = torch::zeros({qcase.chunk}, torch::kDouble);
    for (int l = 0; l < layout.local; ++l) {
      const torch::Tensor values = qcase.inputs[b * layout.local + l][c];
      partial += values;
      magnitudes += values.abs();
      if (layout.local > 1) phase1 += half_scales(values, qcase.block);
    }
    bound += phase1;
    if (layout.nodes > 1) bound += half_scales(partial.abs() + phase1, qcase.block);
  }
  return bound + 1e-5 * (magnitudes + 14 * bound);
}

void expect_bytes(const QgzCase& qcase, QgzLayout layout) {
  const uint64_t encoded = codec::WireCodec(codec::WireDtype::Int4, qcase.block).encoded_size(qcase.chunk);
  const uint64_t intra = (layout.local - 1) * layout.nodes * encoded, cross = (layout.nodes - 1) * encoded;
  for (size_t rank = 0; rank < qcase.reports.size(); ++rank) {
    const json& report = qcase.reports[rank];
    SCOPED_TRACE("rank " + std::to_string(rank) + ": " + report["ledger"].dump());
    EXPECT_EQ(report["bytes_sent"]["intra_node"], intra);
    EXPECT_EQ(report["bytes_sent"]["cross_node"], cross);
    // Nothing else moved: the totals are the two all-to-alls', each on its own class of link.
    const json& ledger = report["ledger"];
    for (const char* direction : {"sent", "received"}) {
      EXPECT_EQ(ledger["intra_node"][direction], intra) << direction;
      EXPECT_EQ(ledger["cross_node"][direction], cross) << direction;
    }
    const json& operations = ledger["operations"];
    for (auto [label, link, bytes] : {std::tuple{QuantizedReduceScatter::kIntraLabel, "intra_node", intra},
                                      std::tuple{QuantizedReduceScatter::kCrossLabel, "cross_node", cross}}) {
      if (bytes == 0) {
        EXPECT_FALSE(operations.contains(label)) << label << " ran: its group has one member";
        continue;
      }
      ASSERT_TRUE(operations.contains(label)) << label;
      EXPECT_EQ(operations[label]["calls"], 1) << label;
      EXPECT_EQ(operations[label][link]["sent"], bytes) << label;
    }
  }
}

// With one phase (one node, or one rank per node), rank 0 sent bytes whose scales are NaN
// (0xFFFFFFFF) in it: every other rank's run() must fail naming the phase, rank 0 and the
// codec's reason, instead of summing NaNs.
void expect_garbage_rejected(const std::vector<RankOutcome>& outcomes, QgzLayout layout) {
  const std::string label = layout.local > 1 ? QuantizedReduceScatter::kIntraLabel : QuantizedReduceScatter::kCrossLabel;
  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const json& garbage = outcome.result["garbage"];
    if (outcome.rank == 0) {
      EXPECT_TRUE(garbage.contains("lied_on")) << garbage;
      continue;
    }
    const std::string error = garbage["error"].get<std::string>();
    for (const std::string fragment : {"qgz reduce-scatter: " + label, std::string("global rank 0 sent do not decode"),
                                       std::string("wire codec: block at value 0 has scale"), std::string("nan")}) {
      EXPECT_NE(error.find(fragment), std::string::npos) << fragment << " not in: " << error;
    }
  }
}

class QuantizedReduceScatterJob : public ::testing::TestWithParam<QgzLayout> {};

TEST_P(QuantizedReduceScatterJob, SumsWithinTheInt4BoundBooksItsBytesAndRejectsBadBytes) {
  const QgzLayout layout = GetParam();
  const int world = layout.world();
  const auto outcomes = run_job({world, layout.local, "qgz"});
  ASSERT_TRUE(all_succeeded(outcomes));

  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const json& rejected = outcome.result["rejected"];
    EXPECT_NE(rejected["input_size"].get<std::string>().find("input has " + std::to_string(world * 4 + 1)),
              std::string::npos)
        << rejected["input_size"];
    EXPECT_NE(rejected["input_dtype"].get<std::string>().find("dtype Double"), std::string::npos)
        << rejected["input_dtype"];
    // Swapped, the groups of one node (or of one rank per node) still describe a valid layout.
    if (layout.nodes > 1 && layout.local > 1) {
      EXPECT_NE(rejected["swapped_groups"].get<std::string>().find("are not this rank's node"), std::string::npos)
          << rejected["swapped_groups"];
    }
  }

  const size_t cases = outcomes[0].result["cases"].size();
  for (size_t index = 0; index < cases; ++index) {
    const QgzCase qcase = collect_case(outcomes, index, world);
    SCOPED_TRACE(qcase.mode + " case, block " + std::to_string(qcase.block) + ", chunk " + std::to_string(qcase.chunk));
    expect_bytes(qcase, layout);
    torch::Tensor exact = torch::zeros_like(qcase.inputs[0]);
    for (const torch::Tensor& input : qcase.inputs) exact += input;
    // Rank r's output is chunk r's sum: the outputs in rank order tile the full sum.
    for (int rank = 0; rank < world; ++rank) {
      SCOPED_TRACE("rank " + std::to_string(rank));
      const torch::Tensor output = qcase.outputs[rank];
      if (qcase.mode == "exact") {
        EXPECT_TRUE(torch::equal(output, exact[rank])) << "largest |output - exact|: "
                                                       << (output - exact[rank]).abs().max().item<double>();
        continue;
      }
      const torch::Tensor error = (output - exact[rank]).abs(), bound = error_bound(qcase, rank, layout);
      EXPECT_TRUE((error <= bound).all().item<bool>())
          << "largest |output - exact| / bound: " << (error / bound).max().item<double>();
      EXPECT_TRUE(torch::equal(output, model_sum(qcase, rank, layout)))
          << "largest |output - float32 model|: " << (output - model_sum(qcase, rank, layout)).abs().max().item<double>();
      // Random chunks differ: a rank that summed another rank's chunk cannot match it.
      for (int other = 0; other < rank; ++other) {
        EXPECT_FALSE(torch::equal(output, qcase.outputs[other])) << "ranks " << other << " and " << rank;
      }
    }
  }

  // Across nodes, qgZ sends encoded_size(S) ~ S / 2 bytes to each other node, where a float32
  // reduce-scatter over the world sends 4 S bytes to each of that node's k ranks: 1 / (8 k) of the
  // bytes, plus the scales (4 bytes per 256 values, 1001 = 3 x 256 + 233: 517 bytes for 1001).
  if (layout.nodes > 1) {
    for (const RankOutcome& outcome : outcomes) {
      const auto flat = outcome.result["flat_reduce_scatter_1001"]["cross_node"]["sent"].get<uint64_t>();
      ASSERT_EQ(flat, uint64_t(world - layout.local) * 4 * 1001);
      const json& qgz_1001 = outcome.result["cases"][2];
      ASSERT_EQ(qgz_1001["elements"], 1001);
      const auto qgz = qgz_1001["bytes_sent"]["cross_node"].get<uint64_t>();
      EXPECT_EQ(qgz, uint64_t(layout.nodes - 1) * 517);
      EXPECT_GE(8.0 * layout.local * qgz, flat);
      EXPECT_LE(8.0 * layout.local * qgz, 1.04 * flat);
    }
  }
  if (layout.nodes == 1 || layout.local == 1) expect_garbage_rejected(outcomes, layout);
}

INSTANTIATE_TEST_SUITE_P(Layouts, QuantizedReduceScatterJob,
                         ::testing::Values(QgzLayout{2, 2}, QgzLayout{1, 4}, QgzLayout{4, 1}, QgzLayout{2, 3}),
                         qgz_layout_name);

}  // namespace
}  // namespace strait::testing::qgz_tests
