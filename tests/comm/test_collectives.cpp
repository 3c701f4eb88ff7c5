// Collectives across real processes on loopback, PyTorch's Gloo-test style: every input is an
// integer, so every result must be exact. Sizes below, equal to and not divisible by the group
// size; groups world, intra-node and cross-node; layouts 1 x 2, 2 x 1, 2 x 2 and 1 x 4.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "launcher.h"

namespace strait::testing {
namespace {

using nlohmann::json;

struct Layout {
  int world_size;
  int local_world_size;
};

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) {
  return std::to_string(info.param.world_size / info.param.local_world_size) + "_nodes_x_" +
         std::to_string(info.param.local_world_size);
}

std::vector<int> range_of(int first, int count, int stride) {
  std::vector<int> ranks;
  for (int i = 0; i < count; ++i) ranks.push_back(first + i * stride);
  return ranks;
}

// Checks one group's report (tests/comm/worker/main.cpp, exact_collectives): group rank g of n
// contributed ones * (g + 1), arange + 100 g, 1000 g + j, (g + 1)(j + 1) and bytes 10 g + t.
void expect_exact(const json& report, const std::vector<int>& members, int global_rank) {
  const int n = static_cast<int>(members.size());
  const int g = static_cast<int>(std::find(members.begin(), members.end(), global_rank) - members.begin());
  ASSERT_EQ(report["group"]["members"].get<std::vector<int>>(), members);
  ASSERT_EQ(report["group"]["rank"], g);
  const double sum = n * (n + 1) / 2.0;
  for (const char* dtype : {"Float", "Double", "Int", "Long", "Half", "BFloat16"}) {
    for (int count : {1, n - 1, n, n + 3, 1000}) {
      if (count == 0) continue;
      const auto values = report["allreduce"][dtype][std::to_string(count)].get<std::vector<double>>();
      EXPECT_EQ(values, std::vector<double>(count, sum)) << dtype << " x " << count;
    }
  }
  for (int root = 0; root < n; ++root) {
    EXPECT_EQ(report["broadcast"][std::to_string(root)].get<std::vector<double>>(),
              std::vector<double>(n + 3, root + 1));
  }
  for (int i = 0; i < n; ++i) {
    std::vector<double> gathered, exchanged, bytes;
    for (int j = 0; j < n + 3; ++j) gathered.push_back(j + 100 * i);
    for (int t = 0; t < 3; ++t) exchanged.push_back(1000 * i + 3 * g + t);
    for (int t = 0; t < 5; ++t) bytes.push_back(10 * i + t);
    EXPECT_EQ(report["allgather"][i].get<std::vector<double>>(), gathered);
    EXPECT_EQ(std::vector<double>(report["alltoall"].begin() + 3 * i, report["alltoall"].begin() + 3 * i + 3),
              exchanged);
    EXPECT_EQ(report["allgather_bytes"][i].get<std::vector<double>>(), bytes);
  }
  std::vector<double> scattered;
  for (int t = 0; t < 3; ++t) scattered.push_back(sum * (3 * g + t + 1));
  EXPECT_EQ(report["reduce_scatter"]["Float"].get<std::vector<double>>(), scattered);
  EXPECT_EQ(report["reduce_scatter"]["BFloat16"].get<std::vector<double>>(), scattered);
  EXPECT_EQ(report["reduce_scatter"]["ring Float"].get<std::vector<double>>(), scattered);
  EXPECT_EQ(report["reduce_scatter"]["ring BFloat16"].get<std::vector<double>>(), scattered);
}

class ExactCollectives : public ::testing::TestWithParam<Layout> {};

TEST_P(ExactCollectives, EveryGroupGivesExactResults) {
  const Layout layout = GetParam();
  const int k = layout.local_world_size;
  const auto outcomes = run_job({layout.world_size, k, "collectives"});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    expect_exact(outcome.result["world"], range_of(0, layout.world_size, 1), outcome.rank);
    expect_exact(outcome.result["intra_node"], range_of(outcome.rank / k * k, k, 1), outcome.rank);
    expect_exact(outcome.result["cross_node"], range_of(outcome.rank % k, layout.world_size / k, k), outcome.rank);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ExactCollectives,
                         ::testing::Values(Layout{2, 2}, Layout{2, 1}, Layout{4, 2}, Layout{4, 4}), layout_name);

// ---- all_reduce_sum in every dtype it sums, over 2, 3 and 4 ranks (the worker's
// allreduce_dtypes scenario): integer inputs must sum exactly; random ones within the rounding of
// n - 1 additions in their dtype (bfloat16: float32, then one rounding) of the sum taken here in
// double; and every rank must hold the same bits.

// The worker's integer input of group rank `rank`: element j is (7 j + 3 r) mod 11, less 5 unless
// the dtype is unsigned.
torch::Tensor allreduce_integer_input(int rank, int64_t count, bool is_unsigned) {
  torch::Tensor values = (torch::arange(count, torch::kInt64) * 7 + 3 * rank).remainder(11);
  return is_unsigned ? values : values - 5;
}

torch::Tensor allreduce_integer_sum(int size, int64_t count, bool is_unsigned) {
  torch::Tensor sum = torch::zeros({count}, torch::kInt64);
  for (int rank = 0; rank < size; ++rank) sum += allreduce_integer_input(rank, count, is_unsigned);
  return sum.to(torch::kDouble);
}

torch::Tensor reported_values(const json& values) {
  return torch::tensor(values.get<std::vector<double>>(), torch::kDouble);
}

class AllReduceDtypes : public ::testing::TestWithParam<int> {};

TEST_P(AllReduceDtypes, SumsExactlyOrWithinRoundingAndEveryRankHoldsTheSameBits) {
  const int n = GetParam();
  const auto outcomes = run_job({n, 1, "allreduce_dtypes"});
  ASSERT_TRUE(all_succeeded(outcomes));
  const json& first = outcomes[0].result;
  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const json& result = outcome.result;
    ASSERT_EQ(result["group"]["size"], n);
    ASSERT_EQ(result["integer"].size(), 8u);  // float, double, half, bfloat16, int8, uint8, int32, int64
    for (const auto& [dtype, by_count] : result["integer"].items()) {
      ASSERT_EQ(by_count.size(), n == 2 ? 5u : 6u) << dtype;  // 1, n - 1, n, n + 1, 2 n + 1, 1001; one duplicate at n = 2
      for (const auto& [count, values] : by_count.items()) {
        const torch::Tensor expected = allreduce_integer_sum(n, std::stoll(count), dtype == "Byte");
        EXPECT_TRUE(torch::equal(reported_values(values), expected)) << dtype << " x " << count;
      }
    }
    ASSERT_EQ(result["random"].size(), 4u);
    for (const auto& [dtype, by_count] : result["random"].items()) {
      const double eps = dtype == "Double" ? std::numeric_limits<double>::epsilon()
                         : dtype == "Float" ? std::numeric_limits<float>::epsilon()
                         : dtype == "Half"  ? 1.0 / 1024
                                            : 1.0 / 128;  // BFloat16: the final rounding dominates
      const torch::ScalarType type = dtype == "Double" ? torch::kDouble
                                     : dtype == "Float" ? torch::kFloat
                                     : dtype == "Half"  ? torch::kHalf
                                                        : torch::kBFloat16;
      for (const auto& [count, values] : by_count.items()) {
        torch::Tensor exact = torch::zeros({std::stoll(count)}, torch::kDouble);
        torch::Tensor abs_sum = torch::zeros_like(exact);
        for (int rank = 0; rank < n; ++rank) {
          torch::manual_seed(2000 + rank);
          const torch::Tensor input = torch::randn({std::stoll(count)}, torch::kFloat).to(type).to(torch::kDouble);
          exact += input;
          abs_sum += input.abs();
        }
        const torch::Tensor error = (reported_values(values) - exact).abs();
        const torch::Tensor bound = n * eps * abs_sum;
        EXPECT_TRUE((error <= bound).all().item<bool>())
            << dtype << " x " << count << ": largest error / bound " << (error / bound).max().item<double>();
        EXPECT_EQ(values, first["random"][dtype][count]) << dtype << " x " << count << " differs from rank 0";
      }
    }
    const int64_t large = result["large"]["count"].get<int64_t>();
    const torch::Tensor weights = torch::arange(large, torch::kInt64).remainder(1009).add(1).to(torch::kDouble);
    EXPECT_EQ(result["large"]["digest"].get<double>(),
              (allreduce_integer_sum(n, large, false) * weights).sum().item<double>());
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, AllReduceDtypes, ::testing::Values(2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) { return std::to_string(info.param) + "_ranks"; });

// Regenerates what the worker's "hierarchical" scenario fed in on `rank`.
torch::Tensor worker_input(int rank, bool integer_values, int64_t count) {
  torch::manual_seed(1000 + rank);
  return integer_values ? torch::randint(-1000, 1000, {count}, torch::kFloat) : torch::randn({count}, torch::kFloat);
}

struct HierarchicalRun {
  std::vector<RankOutcome> outcomes;
  torch::Tensor exact;    // the sum in float64
  torch::Tensor abs_sum;  // sum over ranks of |x|, float64
};

HierarchicalRun run_hierarchical(Layout layout, bool integer_values) {
  const int64_t count = 1001;  // not divisible by 2 or 4: exercises the padding
  HierarchicalRun run;
  run.outcomes = run_job({layout.world_size,
                          layout.local_world_size,
                          "hierarchical",
                          {"values=" + std::string(integer_values ? "integer" : "random"), "elements=1001"}});
  run.exact = torch::zeros({count}, torch::kDouble);
  run.abs_sum = torch::zeros({count}, torch::kDouble);
  for (int rank = 0; rank < layout.world_size; ++rank) {
    torch::Tensor input = worker_input(rank, integer_values, count).to(torch::kDouble);
    run.exact += input;
    run.abs_sum += input.abs();
  }
  return run;
}

torch::Tensor reported(const RankOutcome& outcome, const char* key) {
  return torch::tensor(outcome.result[key].get<std::vector<double>>(), torch::kDouble);
}

TEST(Hierarchical, IntegerValuedInputsGiveExactlyTheFlatSum) {
  for (Layout layout : {Layout{4, 2}, Layout{4, 4}}) {
    const HierarchicalRun run = run_hierarchical(layout, true);
    ASSERT_TRUE(all_succeeded(run.outcomes));
    for (const RankOutcome& outcome : run.outcomes) {
      EXPECT_TRUE(torch::equal(reported(outcome, "hierarchical"), run.exact)) << "rank " << outcome.rank;
      EXPECT_TRUE(torch::equal(reported(outcome, "flat"), run.exact)) << "rank " << outcome.rank;
    }
  }
}

TEST(Hierarchical, RandomInputsStayWithinTheStatedToleranceOfTheFlatSum) {
  const Layout layout{4, 2};
  const HierarchicalRun run = run_hierarchical(layout, false);
  ASSERT_TRUE(all_succeeded(run.outcomes));
  const double eps = std::numeric_limits<float>::epsilon();
  const torch::Tensor bound = (layout.world_size - 1) * eps * run.abs_sum;
  const torch::Tensor first = reported(run.outcomes[0], "hierarchical");
  for (const RankOutcome& outcome : run.outcomes) {
    const torch::Tensor tiered = reported(outcome, "hierarchical");
    const torch::Tensor flat = reported(outcome, "flat");
    EXPECT_TRUE(torch::equal(tiered, first)) << "rank " << outcome.rank << " holds a different result than rank 0";
    EXPECT_TRUE(((tiered - flat).abs() <= bound).all().item<bool>())
        << "largest |hierarchical - flat| / bound: " << ((tiered - flat).abs() / bound).max().item<double>();
    EXPECT_TRUE(((tiered - run.exact).abs() <= bound / 2).all().item<bool>());
    EXPECT_TRUE(((flat - run.exact).abs() <= bound / 2).all().item<bool>());
  }
}

}  // namespace
}  // namespace strait::testing
