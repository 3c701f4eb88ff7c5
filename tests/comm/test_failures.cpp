// Failure behaviour across real processes: dead and stuck peers, ranks that never arrive, a
// taken port, ranks that disagree, and arguments rejected before they reach the wire.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "launcher.h"

namespace strait::testing {
namespace {

std::vector<RankOutcome> without_rank(const std::vector<RankOutcome>& outcomes, int rank) {
  std::vector<RankOutcome> others;
  for (const RankOutcome& outcome : outcomes) {
    if (outcome.rank != rank) others.push_back(outcome);
  }
  return others;
}

// Enough steps that the job would outlive the deadline if a dead peer went unnoticed.
JobSpec endless_steps(int world_size, int local_world_size, const std::string& fault) {
  JobSpec spec{world_size, local_world_size, "steps", {"steps=100000000", "elements=10000", "fault=" + fault}};
  spec.deadline_s = 25;
  return spec;
}

TEST(Failures, AKilledPeerFailsTheOthersLongBeforeTheTimeout) {
  JobSpec spec = endless_steps(4, 2, "2:5:kill");
  spec.timeout_ms = 20000;  // detection must come from the closed connections, not the timeout
  const auto outcomes = run_job(spec);
  EXPECT_EQ(outcomes[2].signal, SIGKILL) << describe(outcomes);
  const auto survivors = without_rank(outcomes, 2);
  EXPECT_TRUE(all_failed_with(survivors, {"all_reduce_sum on group world", "failed"}));
  for (const RankOutcome& outcome : survivors) EXPECT_LT(outcome.seconds, 12.0) << describe(outcomes);
}

TEST(Failures, APeerThatExitsMidRunFailsTheOthers) {
  JobSpec spec = endless_steps(2, 1, "1:3:exit");
  spec.timeout_ms = 20000;
  const auto outcomes = run_job(spec);
  EXPECT_EQ(outcomes[1].exit_code, 3) << describe(outcomes);
  const auto survivors = without_rank(outcomes, 1);
  EXPECT_TRUE(
      all_failed_with(survivors, {"all_reduce_sum on group world", "peers in this collective: global ranks 1;"}));
  EXPECT_LT(survivors[0].seconds, 12.0) << describe(outcomes);
}

TEST(Failures, AStuckPeerIsCaughtByTheTimeout) {
  JobSpec spec = endless_steps(2, 1, "1:3:hang");
  spec.timeout_ms = 2000;
  spec.stuck_ranks = {1};
  const auto outcomes = run_job(spec);
  EXPECT_TRUE(outcomes[1].killed) << describe(outcomes);
  EXPECT_TRUE(all_failed_with(without_rank(outcomes, 1), {"all_reduce_sum on group world", "Timed out"}));
}

TEST(Failures, ARankThatNeverArrivesIsNamedByEveryOtherRank) {
  JobSpec spec{4, 2, "rendezvous"};
  spec.ranks = {0, 1, 2};
  spec.timeout_ms = 2000;
  const auto outcomes = run_job(spec);
  EXPECT_TRUE(
      all_failed_with(outcomes, {"rendezvous: rank 3 did not arrive at the store on 127.0.0.1:", "within 2000 ms"}));
  for (const RankOutcome& outcome : outcomes) EXPECT_GE(outcome.seconds, 2.0);
}

TEST(Failures, AMissingRankZeroIsReportedWithTheStoreAddress) {
  JobSpec spec{2, 2, "rendezvous"};
  spec.ranks = {1};
  spec.port = free_port();
  spec.timeout_ms = 1500;
  const auto outcomes = run_job(spec);
  EXPECT_TRUE(all_failed_with(outcomes, {"rendezvous: rank 1 cannot reach the store on 127.0.0.1:" +
                                         std::to_string(spec.port) + " within 1500 ms"}));
}

TEST(Failures, ATakenPortIsReportedByRankZero) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), size), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size), 0);
  JobSpec spec{2, 2, "rendezvous"};
  spec.port = ntohs(address.sin_port);
  spec.timeout_ms = 1500;
  const auto outcomes = run_job(spec);
  close(fd);
  const std::string store = "127.0.0.1:" + std::to_string(spec.port);
  EXPECT_TRUE(all_failed_with({outcomes[0]}, {"rendezvous: rank 0 cannot serve the store on " + store, "taken"}));
  EXPECT_TRUE(all_failed_with({outcomes[1]}, {store}));
}

TEST(Failures, MismatchedWorldSizesFailEveryRankNamingBothValues) {
  JobSpec spec{2, 1, "rendezvous"};
  spec.rank_env[1] = {{"WORLD_SIZE", "3"}};
  const auto outcomes = run_job(spec);
  EXPECT_TRUE(
      all_failed_with(outcomes, {"rendezvous: ranks disagree: rank 1 has world_size=3 where rank 0 has world_size=2"}));
}

TEST(Failures, MismatchedConfigHashesFailEveryRankNamingTheRanksAndValues) {
  JobSpec spec{3, 3, "consistency", {"config_hash=abc123"}};
  spec.rank_args[2] = {"config_hash=def456"};
  const auto outcomes = run_job(spec);
  EXPECT_TRUE(all_failed_with(
      outcomes,
      {"check_consistency: ranks disagree: rank 2 has config_hash=def456 where rank 0 has config_hash=abc123"}));
}

TEST(Failures, MatchingConfigHashesPass) {
  const auto outcomes = run_job({2, 1, "consistency", {"config_hash=abc123"}});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) EXPECT_EQ(outcome.result["consistent"], true);
}

TEST(Failures, RejectedArgumentsLeaveTheGroupInStep) {
  const auto outcomes = run_job({2, 1, "bad_arguments"});
  ASSERT_TRUE(all_succeeded(outcomes));
  for (const RankOutcome& outcome : outcomes) {
    const auto rejected = outcome.result["rejected"].get<std::vector<std::string>>();
    const std::string group = " on group world (global rank " + std::to_string(outcome.rank) + " = group rank " +
                              std::to_string(outcome.rank) + " of 2): ";
    ASSERT_EQ(rejected.size(), 4u);
    EXPECT_EQ(rejected[0], "all_to_all" + group + "input has 3 elements, not divisible by the group size 2");
    EXPECT_EQ(rejected[1], "all_reduce_sum" + group + "tensor is not contiguous (call .contiguous() first)");
    EXPECT_EQ(rejected[2], "broadcast" + group + "root is 2 (expected a group rank in [0, 2))");
    EXPECT_NE(rejected[3].find("all_reduce_sum" + group + "tensor has dtype Short (expected one of Float"),
              std::string::npos);
    EXPECT_EQ(outcome.result["sum_after"].get<std::vector<double>>(), std::vector<double>(5, 3.0));
  }
}

}  // namespace
}  // namespace strait::testing
