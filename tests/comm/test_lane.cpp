// Pieces of the asynchronous engine in one process: the lane that runs a group's collectives,
// a default Work, and the check of the byte counts peers announce.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "strait/comm/group.h"
#include "strait/comm/lane.h"
#include "strait/comm/tensor_checks.h"
#include "strait/core/error.h"

namespace strait::comm {
namespace {

TEST(Lane, RunsTasksOneAtATimeInPostingOrderOnAThreadOfItsOwn) {
  std::vector<int> order;  // touched by the lane's thread only, read after it has stopped
  std::vector<std::thread::id> threads;
  std::atomic<int> running{0};
  bool overlapped = false;
  {
    Lane lane;
    for (int i = 0; i < 200; ++i) {
      lane.post([&, i] {
        overlapped = overlapped || running.fetch_add(1) != 0;
        order.push_back(i);
        threads.push_back(std::this_thread::get_id());
        running.fetch_sub(1);
      });
    }
  }
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(overlapped);
  EXPECT_NE(threads.front(), std::this_thread::get_id());
  EXPECT_EQ(std::count(threads.begin(), threads.end(), threads.front()), 200);
}

TEST(Lane, DestructionRunsEverythingAlreadyPosted) {
  int ran = 0;
  {
    Lane lane;
    lane.post([] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); });
    for (int i = 0; i < 10; ++i) lane.post([&] { ++ran; });
  }
  EXPECT_EQ(ran, 10);
}

TEST(Lane, ANeverUsedLaneIsDestroyedAtOnce) {
  const auto start = std::chrono::steady_clock::now();
  { Lane lane; }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(Work, ADefaultWorkIsCompleted) {
  Work work;
  EXPECT_TRUE(work.is_completed());
  work.wait();
}

std::string rejection(const std::vector<int64_t>& counts, int64_t max_bytes) {
  try {
    require_peer_byte_counts("all_gather_bytes on group g", counts, {4, 6, 9}, max_bytes);
  } catch (const Error& error) {
    return error.what();
  }
  return "accepted";
}

TEST(PeerByteCounts, ANegativeCountOrOneAboveTheLimitNamesTheRankAndValue) {
  EXPECT_EQ(rejection({0, 50, 7}, 50), "accepted");
  EXPECT_EQ(
      rejection({0, -3, 7}, 50),
      "all_gather_bytes on group g: global rank 6 (group rank 1) announced -3 bytes (expected 0 to max_bytes = 50)");
  EXPECT_EQ(
      rejection({0, 1, 51}, 50),
      "all_gather_bytes on group g: global rank 9 (group rank 2) announced 51 bytes (expected 0 to max_bytes = 50)");
  EXPECT_EQ(rejection({int64_t{1} << 62, 0, 0}, Group::kDefaultMaxGatherBytes),
            "all_gather_bytes on group g: global rank 4 (group rank 0) announced 4611686018427387904 bytes (expected 0 "
            "to max_bytes = 1073741824)");
}

}  // namespace
}  // namespace strait::comm
