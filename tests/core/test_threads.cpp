#include "strait/core/threads.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <thread>

namespace strait {
namespace {

TEST(Threads, AvailableCoresIsWithinTheMachine) {
  int cores = available_cores();
  EXPECT_GE(cores, 1);
  unsigned hardware = std::thread::hardware_concurrency();
  if (hardware > 0) {
    EXPECT_LE(static_cast<unsigned>(cores), hardware);
  }
}

TEST(Threads, AvailableCoresRespectsTheAffinityMask) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  ASSERT_EQ(sched_getaffinity(0, sizeof mask, &mask), 0);
  EXPECT_LE(available_cores(), CPU_COUNT(&mask));
}

TEST(Threads, AvailableCoresFollowsANarrowedAffinityMask) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof original, &original), 0);
  int first_cpu = 0;
  while (!CPU_ISSET(first_cpu, &original)) ++first_cpu;
  cpu_set_t single;
  CPU_ZERO(&single);
  CPU_SET(first_cpu, &single);
  ASSERT_EQ(sched_setaffinity(0, sizeof single, &single), 0);
  int cores = available_cores();
  ASSERT_EQ(sched_setaffinity(0, sizeof original, &original), 0);
  EXPECT_EQ(cores, 1);
}

TEST(Threads, CpuMaxQuotaRoundsUp) {
  EXPECT_EQ(cpu_max_core_limit("200000 100000\n"), 2);
  EXPECT_EQ(cpu_max_core_limit("150000 100000\n"), 2);
  EXPECT_EQ(cpu_max_core_limit("100001 100000"), 2);
  EXPECT_EQ(cpu_max_core_limit("50000 100000\n"), 1);
  EXPECT_EQ(cpu_max_core_limit("1 100000\n"), 1);
  EXPECT_EQ(cpu_max_core_limit("1600000 100000\n"), 16);
}

TEST(Threads, CpuMaxWithoutQuotaOrUnparsableMeansNoLimit) {
  EXPECT_EQ(cpu_max_core_limit("max 100000\n"), std::nullopt);
  EXPECT_EQ(cpu_max_core_limit(""), std::nullopt);
  EXPECT_EQ(cpu_max_core_limit("garbage"), std::nullopt);
  EXPECT_EQ(cpu_max_core_limit("100000 0"), std::nullopt);
  EXPECT_EQ(cpu_max_core_limit("-5 100000"), std::nullopt);
  EXPECT_EQ(cpu_max_core_limit("12abc 100000"), std::nullopt);
}

}  // namespace
}  // namespace strait
