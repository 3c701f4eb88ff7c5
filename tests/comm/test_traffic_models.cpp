// Topology, the Gloo traffic models and the ledger, in one process.
#include <gtest/gtest.h>

#include <thread>

#include "gloo_replay.h"
#include "strait/comm/gloo_algorithms.h"
#include "strait/comm/ledger.h"
#include "strait/comm/topology.h"
#include "strait/core/error.h"

namespace strait::comm {
namespace {

namespace gloo = gloo_algorithms;
using strait::testing::replay_gloo_ring;
using strait::testing::RingCount;

PeerTraffic find_peer(const std::vector<PeerTraffic>& plan, int peer) {
  for (const PeerTraffic& entry : plan) {
    if (entry.peer == peer) return entry;
  }
  return {peer, 0, 0};
}

TEST(Topology, DerivesNodesFromContiguousRanks) {
  Topology topology = Topology::of_rank(5, 8, 4);
  EXPECT_EQ(topology.local_rank, 1);
  EXPECT_EQ(topology.node_rank, 1);
  EXPECT_EQ(topology.num_nodes, 2);
  EXPECT_EQ(topology.node_of(3), 0);
  EXPECT_EQ(topology.node_of(4), 1);
  EXPECT_EQ(topology.ranks_of_node(1), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(topology.ranks_with_local_rank(1), (std::vector<int>{1, 5}));
}

TEST(Topology, RejectsInconsistentFields) {
  auto message = [](const Topology& topology) {
    try {
      topology.validate();
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({0, 6, 0, 4, 0, 2}).find("world_size is 6 (expected local_world_size * num_nodes = 8)"),
            std::string::npos);
  EXPECT_NE(message({8, 8, 0, 4, 2, 2}).find("rank is 8 (expected in [0, 8))"), std::string::npos);
  EXPECT_NE(message({5, 8, 1, 4, 0, 2}).find("node_rank is 0 (expected 1"), std::string::npos);
  EXPECT_THROW(Topology::of_rank(0, 6, 4), Error);
  EXPECT_THROW(Topology::of_rank(0, 4, 2).node_of(4), Error);
}

TEST(GlooModels, RingAllReduceMatchesGloosLoopsForEvenUnevenAndMultiSegmentSizes) {
  for (int64_t size : {2, 3, 4, 5, 8}) {
    for (int64_t elements : {1, 3, 4, 5, 1001, 4096, 300000, 1 << 20, 3000001}) {
      for (int64_t element : {2, 4, 8}) {
        const int64_t total = elements * element;
        for (int64_t rank = 0; rank < size; ++rank) {
          const RingCount expected = replay_gloo_ring(rank, size, total, element);
          const auto plan = gloo::ring_allreduce(rank, size, total, element);
          const int successor = static_cast<int>((rank + size - 1) % size);
          const int predecessor = static_cast<int>((rank + 1) % size);
          SCOPED_TRACE("size " + std::to_string(size) + " bytes " + std::to_string(total) + " rank " +
                       std::to_string(rank));
          if (size == 2) {
            EXPECT_EQ(find_peer(plan, successor).sent, expected.sent);
            EXPECT_EQ(find_peer(plan, successor).received, expected.received);
          } else {
            EXPECT_EQ(find_peer(plan, successor).sent, expected.sent);
            EXPECT_EQ(find_peer(plan, successor).received, 0u);
            EXPECT_EQ(find_peer(plan, predecessor).received, expected.received);
            EXPECT_EQ(find_peer(plan, predecessor).sent, 0u);
          }
        }
      }
    }
  }
}

TEST(GlooModels, RingAllReduceOfEvenSizeSendsTwiceNMinusOneOverN) {
  // 4 ranks, 4000 floats: 2 * 3/4 * 16000 bytes each way, to rank - 1, from rank + 1.
  const auto plan = gloo::ring_allreduce(1, 4, 16000, 4);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(find_peer(plan, 0).sent, 24000u);
  EXPECT_EQ(find_peer(plan, 2).received, 24000u);
  // 5 floats over 4 ranks: 8 segments of 4 bytes, chunks of 8, 8, 4 and 0 bytes.
  EXPECT_EQ(find_peer(gloo::ring_allreduce(0, 4, 20, 4), 3).sent, 40u - 8 - 0);
  EXPECT_EQ(find_peer(gloo::ring_allreduce(3, 4, 20, 4), 2).sent, 40u - 0 - 4);
  EXPECT_TRUE(gloo::ring_allreduce(0, 1, 20, 4).empty());
}

TEST(GlooModels, AllGatherForwardsNMinusOneInputsToTheNextRank) {
  const auto plan = gloo::ring_allgather(3, 4, 100);
  EXPECT_EQ(find_peer(plan, 0).sent, 300u);
  EXPECT_EQ(find_peer(plan, 2).received, 300u);
  EXPECT_EQ(plan.size(), 2u);
}

TEST(GlooModels, BroadcastIsABinomialTreeFromTheRoot) {
  // 6 ranks, root 2; virtual ranks v = rank - 2 (mod 6): 0 -> 1, then 0 -> 2, 1 -> 3, then
  // 0 -> 4, 1 -> 5.
  const uint64_t bytes = 10;
  EXPECT_EQ(gloo::binomial_broadcast(2, 6, 2, bytes).size(), 3u);
  for (int peer : {3, 4, 0}) EXPECT_EQ(find_peer(gloo::binomial_broadcast(2, 6, 2, bytes), peer).sent, bytes);
  const auto v1 = gloo::binomial_broadcast(3, 6, 2, bytes);
  EXPECT_EQ(find_peer(v1, 2).received, bytes);
  EXPECT_EQ(find_peer(v1, 5).sent, bytes);
  EXPECT_EQ(find_peer(v1, 1).sent, bytes);
  const auto v5 = gloo::binomial_broadcast(1, 6, 2, bytes);
  ASSERT_EQ(v5.size(), 1u);
  EXPECT_EQ(find_peer(v5, 3).received, bytes);
}

TEST(GlooModels, AllToAllSendsOneChunkToEveryOtherRank) {
  const auto plan = gloo::direct_alltoall(1, 3, 7);
  ASSERT_EQ(plan.size(), 2u);
  for (int peer : {0, 2}) {
    EXPECT_EQ(find_peer(plan, peer).sent, 7u);
    EXPECT_EQ(find_peer(plan, peer).received, 7u);
  }
}

TEST(Ledger, ClassifiesLinksAndDiffsSnapshots) {
  Ledger ledger(Topology::of_rank(1, 4, 2));  // node 0 = {0, 1}, node 1 = {2, 3}
  ledger.record("allreduce", {{0, 10, 20}, {2, 30, 40}});
  const LedgerSnapshot before = ledger.snapshot();
  ledger.record("allreduce", {{3, 1, 2}});
  ledger.record("barrier", {});
  const LedgerSnapshot step = ledger.snapshot() - before;
  EXPECT_EQ(ledger.total(LinkClass::IntraNode), (Traffic{10, 20}));
  EXPECT_EQ(ledger.total(LinkClass::CrossNode), (Traffic{31, 42}));
  EXPECT_EQ(step.totals.cross_node, (Traffic{1, 2}));
  EXPECT_EQ(step.totals.intra_node, (Traffic{0, 0}));
  EXPECT_EQ(step.operations.at("allreduce").calls, 1u);
  EXPECT_EQ(step.operations.at("barrier").calls, 1u);
  const nlohmann::json json = ledger.to_json();
  EXPECT_EQ(json["cross_node"]["sent"], 31);
  EXPECT_EQ(json["operations"]["allreduce"]["calls"], 2);
  EXPECT_EQ(json["operations"]["allreduce"]["intra_node"]["received"], 20);
  EXPECT_THROW(ledger.record("allreduce", {{4, 1, 1}}), Error);
  EXPECT_EQ(ledger.snapshot().operations.at("allreduce").calls, 2u);
}

TEST(Ledger, CountsEveryRecordFromConcurrentThreads) {
  Ledger ledger(Topology::of_rank(0, 2, 1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&ledger] {
      for (int i = 0; i < 10000; ++i) ledger.record("allreduce", {{1, 3, 5}});
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ledger.total(LinkClass::CrossNode), (Traffic{120000, 200000}));
  EXPECT_EQ(ledger.snapshot().operations.at("allreduce").calls, 40000u);
}

}  // namespace
}  // namespace strait::comm
