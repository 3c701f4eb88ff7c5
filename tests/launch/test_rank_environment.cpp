#include "strait/launch/rank_environment.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "strait/core/error.h"

namespace strait::launch {
namespace {

using Variables = std::map<std::string, std::string>;

RankEnvironment read_from(const Variables& variables) {
  return read_rank_environment([&](const std::string& name) -> std::optional<std::string> {
    auto found = variables.find(name);
    if (found == variables.end()) return std::nullopt;
    return found->second;
  });
}

// The message of the strait::Error that reading `variables` throws; fails the test if none.
std::string error_from(const Variables& variables) {
  try {
    read_from(variables);
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no strait::Error was thrown";
  return "";
}

void expect_ranks(const RankEnvironment& env, int rank, int world_size, int local_rank, int local_world_size,
                  int node_rank, int num_nodes) {
  EXPECT_EQ(env.rank, rank);
  EXPECT_EQ(env.world_size, world_size);
  EXPECT_EQ(env.local_rank, local_rank);
  EXPECT_EQ(env.local_world_size, local_world_size);
  EXPECT_EQ(env.node_rank, node_rank);
  EXPECT_EQ(env.num_nodes, num_nodes);
}

const Variables kTorchrunRank5{{"RANK", "5"},          {"WORLD_SIZE", "8"},           {"LOCAL_RANK", "1"},
                               {"LOCAL_WORLD_SIZE", "4"}, {"GROUP_RANK", "1"},         {"MASTER_ADDR", "node0"},
                               {"MASTER_PORT", "29400"}};

TEST(RankEnvironment, NoLauncherMeansOneProcess) {
  RankEnvironment env = read_from({{"PATH", "/usr/bin"}});
  expect_ranks(env, 0, 1, 0, 1, 0, 1);
  EXPECT_EQ(env.launcher, "single");
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 29500);
}

TEST(RankEnvironment, ReadsTorchrunVariables) {
  RankEnvironment env = read_from(kTorchrunRank5);
  expect_ranks(env, 5, 8, 1, 4, 1, 2);
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.master_addr, "node0");
  EXPECT_EQ(env.master_port, 29400);
}

TEST(RankEnvironment, StraitNodeRankMarksStraitLaunch) {
  Variables variables = kTorchrunRank5;
  variables["STRAIT_NODE_RANK"] = "1";
  RankEnvironment env = read_from(variables);
  expect_ranks(env, 5, 8, 1, 4, 1, 2);
  EXPECT_EQ(env.launcher, "strait");

  variables["STRAIT_NODE_RANK"] = "0";
  std::string message = error_from(variables);
  EXPECT_NE(message.find("GROUP_RANK=1"), std::string::npos) << message;
  EXPECT_NE(message.find("STRAIT_NODE_RANK=0"), std::string::npos) << message;
}

TEST(RankEnvironment, WithoutGroupRankTheNodeFollowsFromTheRank) {
  Variables variables = kTorchrunRank5;
  variables.erase("GROUP_RANK");
  expect_ranks(read_from(variables), 5, 8, 1, 4, 1, 2);
}

TEST(RankEnvironment, ReadsOpenMpiVariables) {
  RankEnvironment env = read_from({{"OMPI_COMM_WORLD_RANK", "3"},
                                   {"OMPI_COMM_WORLD_SIZE", "4"},
                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                   {"MASTER_ADDR", "10.0.0.1"},
                                   {"MASTER_PORT", "1234"}});
  expect_ranks(env, 3, 4, 1, 2, 1, 2);
  EXPECT_EQ(env.launcher, "mpirun");
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 1234);
}

TEST(RankEnvironment, ReadsMpichVariables) {
  RankEnvironment env = read_from(
      {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "2"}, {"MPI_LOCALNRANKS", "3"}});
  expect_ranks(env, 2, 3, 2, 3, 0, 1);
  EXPECT_EQ(env.launcher, "mpirun");
  // One node: the rendezvous defaults to loopback.
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 29500);
}

TEST(RankEnvironment, SeveralNodesNeedMasterAddressAndPort) {
  Variables variables{{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "1"}};
  std::string message = error_from(variables);
  EXPECT_NE(message.find("MASTER_ADDR is not set"), std::string::npos) << message;
  EXPECT_NE(message.find("2 nodes"), std::string::npos) << message;

  variables["MASTER_ADDR"] = "node0";
  message = error_from(variables);
  EXPECT_NE(message.find("MASTER_PORT is not set"), std::string::npos) << message;

  variables["MASTER_PORT"] = "29501";
  RankEnvironment env = read_from(variables);
  expect_ranks(env, 1, 2, 0, 1, 1, 2);
  EXPECT_EQ(env.master_addr, "node0");
  EXPECT_EQ(env.master_port, 29501);
}

TEST(RankEnvironment, WorldSizeMustBeAMultipleOfTheLocalWorldSize) {
  Variables variables = kTorchrunRank5;
  variables["WORLD_SIZE"] = "4";
  variables["LOCAL_WORLD_SIZE"] = "3";
  variables["RANK"] = "1";
  variables["GROUP_RANK"] = "0";
  std::string message = error_from(variables);
  EXPECT_NE(message.find("WORLD_SIZE=4"), std::string::npos) << message;
  EXPECT_NE(message.find("LOCAL_WORLD_SIZE=3"), std::string::npos) << message;
}

TEST(RankEnvironment, NonIntegersAreRejectedByName) {
  for (const auto& [name, value] : Variables{{"RANK", "one"},
                                            {"WORLD_SIZE", "8x"},
                                            {"LOCAL_RANK", ""},
                                            {"LOCAL_WORLD_SIZE", " 4"},
                                            {"GROUP_RANK", "1.0"},
                                            {"MASTER_PORT", "99999999999"}}) {
    Variables variables = kTorchrunRank5;
    variables[name] = value;
    std::string message = error_from(variables);
    EXPECT_NE(message.find(name + "='" + value + "' is not an integer"), std::string::npos) << message;
  }
  std::string message = error_from({{"OMPI_COMM_WORLD_RANK", "0"},
                                    {"OMPI_COMM_WORLD_SIZE", "two"},
                                    {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}});
  EXPECT_NE(message.find("OMPI_COMM_WORLD_SIZE='two'"), std::string::npos) << message;
}

TEST(RankEnvironment, RanksOutOfRangeAreRejectedByName) {
  const std::map<std::string, std::pair<std::string, std::string>> cases{
      {"RANK", {"8", "RANK=8 is out of range for WORLD_SIZE=8"}},
      {"LOCAL_RANK", {"4", "LOCAL_RANK=4 is out of range for LOCAL_WORLD_SIZE=4"}},
      {"WORLD_SIZE", {"0", "WORLD_SIZE=0 must be at least 1"}},
      {"MASTER_PORT", {"0", "MASTER_PORT=0 is not a TCP port"}},
      {"GROUP_RANK", {"0", "RANK=5 is not node 0"}}};
  for (const auto& [name, value_and_expected] : cases) {
    Variables variables = kTorchrunRank5;
    variables[name] = value_and_expected.first;
    std::string message = error_from(variables);
    EXPECT_NE(message.find(value_and_expected.second), std::string::npos) << name << ": " << message;
  }
}

TEST(RankEnvironment, MpiRanksMustBeNumberedNodeByNode) {
  // Round-robin placement (--map-by node) puts ranks 0 and 2 on the first node.
  std::string message = error_from({{"OMPI_COMM_WORLD_RANK", "2"},
                                    {"OMPI_COMM_WORLD_SIZE", "4"},
                                    {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                    {"MASTER_ADDR", "node0"},
                                    {"MASTER_PORT", "29500"}});
  EXPECT_NE(message.find("OMPI_COMM_WORLD_RANK=2"), std::string::npos) << message;
  EXPECT_NE(message.find("--map-by slot"), std::string::npos) << message;
}

TEST(RankEnvironment, PartialLauncherVariablesAreAnError) {
  std::string message = error_from({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
  EXPECT_NE(message.find("LOCAL_RANK is not set"), std::string::npos) << message;

  message = error_from({{"WORLD_SIZE", "2"}});
  EXPECT_NE(message.find("RANK is not set"), std::string::npos) << message;

  message = error_from({{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}});
  EXPECT_NE(message.find("MPI_LOCALRANKID is not set"), std::string::npos) << message;
}

}  // namespace
}  // namespace strait::launch

namespace strait::launch {
namespace {

TEST(RankEnvironment, TorchrunAgentStoreIsJoinedNotServed) {
  Variables variables{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "2"},
                      {"GROUP_RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29400"}};
  EXPECT_FALSE(read_from(variables).launcher_serves_store);
  variables["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  EXPECT_TRUE(read_from(variables).launcher_serves_store);
}

}  // namespace
}  // namespace strait::launch
