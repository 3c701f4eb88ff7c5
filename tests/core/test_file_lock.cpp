// The run directory's lock: one holder at a time, the holder's PID in the message, nothing left
// behind once released. flock conflicts between two open files even in one process, so one
// process can play both holders.
#include <gtest/gtest.h>

#include <unistd.h>

#include "strait/core/error.h"
#include "strait/core/file_lock.h"
#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

TEST(FileLock, ASecondHolderIsRefusedWithTheFirstsPidUntilItReleases) {
  testing::ScratchDir scratch;
  const fs::path path = scratch / ".lock";
  {
    FileLock first(path, "run directory R");
    EXPECT_EQ(testing::read_file(path), std::to_string(::getpid()));
    try {
      FileLock second(path, "run directory R");
      FAIL() << "a second lock was granted";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()), "run directory R is in use by process " + std::to_string(::getpid()) +
                                               " (it holds " + path.string() + ")");
    }
    EXPECT_EQ(testing::read_file(path), std::to_string(::getpid())) << "the refused one wrote nothing";
  }
  EXPECT_FALSE(fs::exists(path)) << "released locks leave no file";
  FileLock again(path, "run directory R");
  EXPECT_TRUE(fs::exists(path));
}

TEST(FileLock, AStaleFileFromADeadHolderIsTakenOver) {
  testing::ScratchDir scratch;
  testing::write_file(scratch / ".lock", "999999");  // left by a killed process: no flock on it
  FileLock lock(scratch / ".lock", "run directory R");
  EXPECT_EQ(testing::read_file(scratch / ".lock"), std::to_string(::getpid()));
}

}  // namespace
}  // namespace strait
