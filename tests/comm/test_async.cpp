// The asynchronous engine across real processes on loopback: collectives issued from two
// threads at once on two groups, the hierarchical all-reduce as one Work (bit for bit the
// synchronous algorithm), Work::is_completed, the lane's grad mode, collectives queued behind a
// failure, variable-size byte gathers and groups made on demand.
#include <gtest/gtest.h>

#include "launcher.h"

namespace strait::testing {
namespace {

using nlohmann::json;

// One thread's report from the worker's two_threads scenario: call i on global rank m
// contributed sign * (1000 i + m + 1), summed over the thread's group.
void expect_exact_sums(const json& report, double sign, int64_t calls) {
  const auto members = report["members"].get<std::vector<int>>();
  ASSERT_EQ(report["results"].size(), static_cast<size_t>(calls));
  for (int64_t i = 0; i < calls; ++i) {
    double sum = 0;
    for (int member : members) sum += sign * static_cast<double>(1000 * i + member + 1);
    ASSERT_EQ(report["results"][i].get<std::vector<double>>(), std::vector<double>{sum}) << "call " << i;
  }
}

void expect_two_threads_exact(int world_size, int local_world_size, const std::string& a, const std::string& b) {
  const int64_t calls = 200;
  JobSpec spec{world_size, local_world_size, "two_threads", {"a=" + a, "b=" + b, "calls=200", "elements=1000"}};
  spec.deadline_s = 90;
  const auto outcomes = run_job(spec);
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    expect_exact_sums(outcome.result["a"], 1.0, calls);
    expect_exact_sums(outcome.result["b"], -1.0, calls);
  }
}

TEST(Async, TwoThreadsOnTwoGroupsMadeOverTheSameRanksGetExactSums) { expect_two_threads_exact(3, 3, "made", "made"); }

TEST(Async, TwoThreadsOnWorldAndAMadeGroupGetExactSums) { expect_two_threads_exact(2, 1, "world", "made"); }

// The hierarchical phases run on private groups, so another thread may use any public group.
class HierarchicalBesideAnotherThread : public ::testing::TestWithParam<std::string> {};

TEST_P(HierarchicalBesideAnotherThread, BothGetExactSums) {
  expect_two_threads_exact(4, 2, "hierarchical", GetParam());
}

INSTANTIATE_TEST_SUITE_P(Async, HierarchicalBesideAnotherThread, ::testing::Values("world", "intra_node", "cross_node"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(Async, HierarchicalIsBitIdenticalToItsPhasesIssuedStepByStep) {
  // 2 x 2 runs the three phases; 1 x 4 and 2 x 1 the flat all-reduce.
  for (auto [world_size, local_world_size] : {std::pair{4, 2}, std::pair{4, 4}, std::pair{2, 1}}) {
    SCOPED_TRACE(std::to_string(world_size) + " ranks, " + std::to_string(local_world_size) + " a node");
    const auto outcomes = run_job({world_size, local_world_size, "hierarchical_bitwise"});
    ASSERT_TRUE(all_succeeded(outcomes));
    for (const RankOutcome& outcome : outcomes) {
      ASSERT_EQ(outcome.result.size(), 8u);  // float32 and bfloat16, four sizes each
      for (const auto& [name, figures] : outcome.result.items()) {
        EXPECT_EQ(figures["bitwise_equal"], true) << "rank " << outcome.rank << ", " << name;
        EXPECT_EQ(figures["changed"], true) << "rank " << outcome.rank << ", " << name;
      }
    }
  }
}

TEST(Async, IsCompletedTurnsTrueOnlyOnceTheLastPeerHasIssued) {
  const auto outcomes = run_job({2, 2, "completion", {"delay_ms=500"}});
  ASSERT_TRUE(all_succeeded(outcomes));
  const json& waiting = outcomes[0].result;  // rank 1 issues 500 ms after rank 0
  EXPECT_EQ(waiting["default_work_completed"], true);
  EXPECT_EQ(waiting["at_issue"], false);
  EXPECT_EQ(waiting["a_little_later"], false);
  EXPECT_EQ(waiting["without_wait"], true);
  EXPECT_GE(waiting["waited_ms"].get<double>(), 300.0);
  EXPECT_EQ(waiting["after_wait"], true);
  for (const RankOutcome& outcome : outcomes) {
    EXPECT_EQ(outcome.result["sum"].get<std::vector<double>>(), std::vector<double>{3.0}) << "rank " << outcome.rank;
  }
}

TEST(Async, TheLaneRunsLocalStepsWithoutAutogradWhateverTheCallersMode) {
  const auto outcomes = run_job({4, 2, "requires_grad"});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    EXPECT_EQ(outcome.result, json({{"all_reduce", {10.0}}, {"hierarchical", {10.0}}, {"reduce_scatter", {4.0}}}))
        << "rank " << outcome.rank;
  }
}

TEST(Async, CollectivesQueuedBehindAFailureFailAtOnceAndTheRankStillExits) {
  JobSpec spec{2, 1, "queued_behind_a_failure", {"dies=1", "delay_ms=300", "calls=50"}};
  spec.timeout_ms = 20000;  // each queued collective waiting for the timeout would outlive the deadline
  spec.deadline_s = 25;
  const auto outcomes = run_job(spec);
  EXPECT_EQ(outcomes[1].exit_code, 3) << describe(outcomes);
  ASSERT_TRUE(all_succeeded({outcomes[0]}));
  const json& result = outcomes[0].result;
  const std::string world = "all_reduce_sum on group world (global rank 0 = group rank 0 of 2)";
  EXPECT_EQ(result["first"].get<std::string>().rfind(world + " failed: ", 0), 0u) << result.dump();
  EXPECT_EQ(result["last"].get<std::string>().rfind(
                world + " was not run: an earlier collective on this group failed: " + world + " failed: ", 0),
            0u)
      << result.dump();
  EXPECT_EQ(result["first_again"], result["first"]);
  EXPECT_LT(outcomes[0].seconds, 10.0) << describe(outcomes);
}

// ---- all_gather_bytes with a different byte count on each rank.

// As the worker's gather_bytes scenario: case c gives rank r counts[c][r % 4] bytes, byte t
// of which is (37 r + 11 t + c) mod 256.
const std::vector<std::vector<int64_t>> kByteCountCases = {
    {0, 1, 1000, 7}, {0, 0, 0, 0}, {5, 5, 5, 5}, {1000, 0, 0, 1}, {1, 1000, 0, 3}};

std::vector<int> bytes_of(int rank, size_t c) {
  std::vector<int> bytes(kByteCountCases[c][rank % 4]);
  for (size_t t = 0; t < bytes.size(); ++t) bytes[t] = static_cast<int>((37 * rank + 11 * t + c) % 256);
  return bytes;
}

uint64_t both_links(const json& traffic, const char* direction) {
  return traffic["intra_node"][direction].get<uint64_t>() + traffic["cross_node"][direction].get<uint64_t>();
}

TEST(GatherBytes, DifferentCountsIncludingNoneArriveExactlyAndTheLedgerBooksBothPhases) {
  const int n = 4;
  const auto outcomes = run_job({n, 2, "gather_bytes"});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    for (size_t c = 0; c < kByteCountCases.size(); ++c) {
      SCOPED_TRACE("rank " + std::to_string(outcome.rank) + ", case " + std::to_string(c));
      const json& result = outcome.result[c];
      ASSERT_EQ(result["outputs"].size(), static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) EXPECT_EQ(result["outputs"][i].get<std::vector<int>>(), bytes_of(i, c));
      // Ring all-gathers over 4 ranks: 3 ranks' 8-byte counts, then 3 ranks' padded inputs, each way.
      const uint64_t largest = *std::max_element(kByteCountCases[c].begin(), kByteCountCases[c].end());
      const json& operations = result["ledger"]["operations"];
      EXPECT_EQ(operations.size(), 2u) << operations.dump();
      for (const char* direction : {"sent", "received"}) {
        EXPECT_EQ(both_links(operations["payload/sizes"], direction), 3u * 8) << direction;
        EXPECT_EQ(both_links(operations["payload"], direction), 3 * largest) << direction;
      }
      EXPECT_EQ(operations["payload/sizes"]["calls"], 1);
      EXPECT_EQ(operations["payload"]["calls"], 1);
    }
  }
}

TEST(GatherBytes, ACountAboveMaxBytesFailsEveryRankNamingTheSenderAndLeavesTheGroupInStep) {
  const auto outcomes = run_job({3, 3, "gather_bytes_limit"});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const std::string group = "all_gather_bytes on group world (global rank " + std::to_string(outcome.rank) +
                              " = group rank " + std::to_string(outcome.rank) + " of 3): ";
    EXPECT_EQ(outcome.result["too_many"],
              group + "global rank 1 (group rank 1) announced 100 bytes (expected 0 to max_bytes = 50)");
    EXPECT_EQ(outcome.result["negative"], group + "max_bytes is -1 (expected >= 0)");
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(outcome.result["after"][i].get<std::vector<int>>(), std::vector<int>(i + 1, i));
    }
  }
}

// ---- groups made on demand, on 2 nodes x 2 ranks.

const std::vector<RankOutcome>& make_group_job() {
  static const std::vector<RankOutcome> outcomes = run_job({4, 2, "make_group"});
  return outcomes;
}

TEST(MakeGroup, GroupsOverTheSameRanksAreDistinctAndEveryGroupSumsExactly) {
  ASSERT_TRUE(all_succeeded(make_group_job()));
  for (const RankOutcome& outcome : make_group_job()) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const json& result = outcome.result;
    const int r = outcome.rank;
    EXPECT_EQ(result["first"], json({{"rank", r}, {"size", 4}, {"members", {0, 1, 2, 3}}}));
    EXPECT_EQ(result["second"], json({{"rank", r}, {"size", 4}, {"members", {0, 1, 2, 3}}}));  // sorted
    EXPECT_EQ(result["pair"], json({{"rank", r / 2}, {"size", 2}, {"members", {r % 2, r % 2 + 2}}}));
    EXPECT_EQ(result["names"], json({"first", "second", "pair", "after"}));
    EXPECT_EQ(result["distinct"], true);
    // first: 1 + 2 + 3 + 4; second: 100 times that; pair: (r%2 + 1) + (r%2 + 3); after: as first.
    EXPECT_EQ(result["sums"], json({{10.0}, {1000.0}, {2.0 * (r % 2) + 4}, {10.0}}));
  }
}

TEST(MakeGroup, BadArgumentsAreRejectedBeforeAnyRendezvous) {
  ASSERT_TRUE(all_succeeded(make_group_job()));
  for (const RankOutcome& outcome : make_group_job()) {
    SCOPED_TRACE("rank " + std::to_string(outcome.rank));
    const json& rejected = outcome.result["rejected"];
    const std::string r = std::to_string(outcome.rank);
    EXPECT_EQ(rejected["repeated"], "make_group 'repeated': global rank " + r + " appears more than once");
    EXPECT_EQ(rejected["out_of_range"], "make_group 'out of range': global rank 4 is out of range (expected 0 to 3)");
    EXPECT_EQ(rejected["negative"], "make_group 'negative': global rank -1 is out of range (expected 0 to 3)");
    EXPECT_EQ(rejected["not_a_member"], "make_group 'not a member': this rank (global rank " + r +
                                            ") is not among the members (global ranks " +
                                            std::to_string((outcome.rank + 1) % 4) + "): only members call make_group");
    EXPECT_EQ(rejected["empty"], "make_group 'empty': this rank (global rank " + r +
                                     ") is not among the members (none): only members call make_group");
  }
}

}  // namespace
}  // namespace strait::testing
