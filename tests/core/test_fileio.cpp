// Durable writes: atomic files and staged directories.
#include <gtest/gtest.h>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

TEST(FileIo, AtomicWriteReplacesWholeAndLeavesNoTemporaries) {
  testing::ScratchDir scratch;
  atomic_write_file(scratch / "a.txt", std::string("first"));
  atomic_write_file(scratch / "a.txt", std::string("second"));
  EXPECT_EQ(read_whole_file(scratch / "a.txt"), "second");
  EXPECT_EQ(std::distance(fs::directory_iterator(scratch.path()), fs::directory_iterator{}), 1);
}

TEST(FileIo, StagedDirectoryAppearsOnlyOnCommit) {
  testing::ScratchDir scratch;
  {
    StagedDirectory staged(scratch / "out");
    atomic_write_file(staged.staging_path() / "x", std::string("x"));
  }  // abandoned: nothing published, staging removed
  EXPECT_TRUE(fs::is_empty(scratch.path()));
  StagedDirectory staged(scratch / "out");
  atomic_write_file(staged.staging_path() / "x", std::string("x"));
  staged.commit();
  EXPECT_EQ(read_whole_file(scratch / "out" / "x"), "x");
  StagedDirectory again(scratch / "out");
  EXPECT_THROW(again.commit(), Error);  // commit() never replaces
  EXPECT_EQ(read_whole_file(scratch / "out" / "x"), "x");
}

TEST(FileIo, CommitReplacingSwapsInTheNewDirectoryAndRemovesTheOld) {
  testing::ScratchDir scratch;
  testing::write_file(scratch / "out" / "old-only", "old");
  StagedDirectory staged(scratch / "out");
  atomic_write_file(staged.staging_path() / "new-only", std::string("new"));
  EXPECT_EQ(staged.commit_replacing(), "");
  EXPECT_FALSE(fs::exists(scratch / "out" / "old-only"));
  EXPECT_EQ(read_whole_file(scratch / "out" / "new-only"), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(scratch.path()), fs::directory_iterator{}), 1);
}

}  // namespace
}  // namespace strait
