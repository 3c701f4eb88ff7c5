// strait sweep on the real binary over a tiny byte dataset: the cells' lines are what strait
// fit reads; a second sweep reruns nothing; a sweep killed mid-cell resumes that cell from its
// checkpoint without rerunning the finished one; failed cells are reported with their logs.
// Every strait process loads LibTorch (~1 s of CPU), so the tests start as few as they can.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>

#include "strait/fit/cells.h"
#include "strait/launch/process.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

class SweepRun : public ::testing::Test {
 protected:
  void SetUp() override { testing::make_byte_dataset(scratch_ / "data", 20000, 4000); }

  // Tiny cells: nano at 32 tokens of context, batch 4 (128 tokens a step), one thread.
  fs::path write_grid(const std::string& tokens, const std::string& extra = "", const std::string& methods = "\"ddp\"") {
    const fs::path path = scratch_ / "grid.toml";
    testing::write_file(path, "[train]\ndata = \"" + (scratch_ / "data").string() +
                                  "\"\ncontext_length = 32\nbatch_size = 4\nlr = 3e-3\nwarmup_steps = 2\n"
                                  "eval_every = 0\neval_batches = 2\ncheckpoint_every = 10\nlog_every = 10\n"
                                  "threads = 1\nprecision = \"fp32\"\n" + extra +
                                  "[grid]\nmodels = [\"nano\"]\nmethods = [" + methods + "]\ntokens = [" + tokens + "]\n");
    return path;
  }
  std::string sweep_args(const fs::path& grid) const {
    return "sweep --grid " + testing::quoted(grid) + " --out " + testing::quoted(out());
  }
  fs::path out() const { return scratch_ / "sweep"; }
  fs::path cell(const std::string& name) const { return out() / "cells" / name; }

  // Every file under the sweep's cells/ with its modification time: a rerun must change none.
  std::map<std::string, fs::file_time_type> mtimes(const fs::path& root) const {
    std::map<std::string, fs::file_time_type> times;
    for (const auto& entry : fs::recursive_directory_iterator(root)) times[entry.path().string()] = entry.last_write_time();
    return times;
  }
  size_t lines_in(const fs::path& path) const {
    std::ifstream in(path);
    size_t lines = 0;
    for (std::string line; std::getline(in, line);) lines += !line.empty();
    return lines;
  }

  testing::ScratchDir scratch_;
};

TEST_F(SweepRun, WritesCellsThatFitReadsAndRerunsNothing) {
  const fs::path grid = write_grid("1280, 2560");  // 10 and 20 steps
  auto result = testing::run_strait(sweep_args(grid));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("sweep: cell 1/2 nano-ddp-r1-d1.28k: started"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("sweep: cell 2/2 nano-ddp-r1-d2.56k: finished in"), std::string::npos) << result.output;

  const auto cells = fit::read_cells(out());
  ASSERT_EQ(cells.cells.size(), 2u);
  for (const auto& c : cells.cells) {
    EXPECT_EQ(c.method, "ddp");
    EXPECT_EQ(c.params, 100672);  // nano's non-embedding parameters (tests/sweep/test_grid.cpp)
  }
  EXPECT_EQ(cells.cells[0].tokens, 1280);
  EXPECT_EQ(cells.cells[1].tokens, 2560);
  const std::string lines = testing::read_file(out() / "cells.jsonl");
  const auto record = nlohmann::json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(record.at("cell"), "nano-ddp-r1-d1.28k");
  EXPECT_EQ(record.at("replicas"), 1);
  EXPECT_EQ(record.at("hidden_size"), 64);
  EXPECT_EQ(record.at("steps"), 10);
  EXPECT_TRUE(fs::exists(cell("nano-ddp-r1-d1.28k") / "summary.json"));
  EXPECT_TRUE(fs::exists(cell("nano-ddp-r1-d1.28k") / "train.log"));

  const auto before = mtimes(out());
  result = testing::run_strait(sweep_args(grid));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("sweep: cell 1/2 nano-ddp-r1-d1.28k: skipped (finished earlier"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("sweep: cell 2/2 nano-ddp-r1-d2.56k: skipped"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("started"), std::string::npos) << result.output;
  EXPECT_EQ(mtimes(out()), before);
  EXPECT_EQ(testing::read_file(out() / "cells.jsonl"), lines);

  // A grid edited after its cells ran is refused before anything runs, naming the key.
  result = testing::run_strait(sweep_args(write_grid("1280, 2560", "seed = 7\n")));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("strait: error: cell nano-ddp-r1-d1.28k was started with other options than"),
            std::string::npos) << result.output;
  EXPECT_NE(result.output.find("seed 1337 in"), std::string::npos) << result.output;
  EXPECT_EQ(mtimes(out()), before);
}

TEST_F(SweepRun, AKilledSweepResumesWithoutRerunningFinishedCells) {
  const fs::path grid = write_grid("1280, 25600");  // 10 and 200 steps
  const fs::path first = cell("nano-ddp-r1-d1.28k"), second = cell("nano-ddp-r1-d25.6k");
  const int log_fd = open((scratch_ / "first-sweep.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(log_fd, 0);
  const pid_t sweep = launch::spawn_process(
      STRAIT_BINARY, {STRAIT_BINARY, "sweep", "--grid", grid.string(), "--out", out().string()},
      launch::environment_with({}), log_fd, log_fd, SIGKILL);
  close(log_fd);
  // Kill it outright once the first cell is recorded and the second has a checkpoint.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!(lines_in(out() / "cells.jsonl") == 1 && fs::exists(second / "checkpoints" / "step-000010"))) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << testing::read_file(scratch_ / "first-sweep.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(kill(sweep, SIGKILL), 0);
  ASSERT_EQ(waitpid(sweep, nullptr, 0), sweep);
  // The orphaned cell gets SIGTERM (its parent-death signal), checkpoints and ends, which
  // removes its run directory's lock file.
  while (fs::exists(second / ".lock")) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << testing::read_file(second / "train.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(fs::exists(second / "summary.json") &&
               nlohmann::json::parse(testing::read_file(second / "summary.json")).value("last_step", 0) == 200)
      << "the second cell finished before the sweep was killed: the test proves nothing";
  const auto first_before = mtimes(first);

  const auto result = testing::run_strait(sweep_args(grid));
  ASSERT_EQ(result.exit_code, 0) << result.output << testing::read_file(second / "train.log");
  EXPECT_NE(result.output.find("sweep: cell 1/2 nano-ddp-r1-d1.28k: skipped"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("sweep: cell 2/2 nano-ddp-r1-d25.6k: resuming from step "), std::string::npos)
      << result.output;
  EXPECT_NE(testing::read_file(second / "train.log").find("strait: resumed from"), std::string::npos);
  EXPECT_EQ(mtimes(first), first_before);
  const auto cells = fit::read_cells(out());
  ASSERT_EQ(cells.cells.size(), 2u);
  EXPECT_EQ(cells.cells[1].tokens, 25600);
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(second / "summary.json")).at("last_step"), 200);
}

// A cell that fails at run time (replicas of 2 ranks in a 1-process job) is reported with its
// log; the other cell still runs and keeps its line. With --fail-fast nothing after it starts.
TEST_F(SweepRun, FailedCellsAreReportedWithTheirLogsAndTheOthersKept) {
  const std::string failing = "{method = \"diloco\", replica_ranks = \"2\", label = \"broken\"}";
  fs::path grid = write_grid("1280", "", "\"ddp\", " + failing);
  auto result = testing::run_strait(sweep_args(grid));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const std::string log = (cell("nano-broken-r1-h50-d1.28k") / "train.log").string();
  EXPECT_NE(result.output.find("sweep: cell 2/2 nano-broken-r1-h50-d1.28k: FAILED: exited with status 1; see " + log +
                               ": strait: error: invalid configuration: replica_ranks 2 does not divide"),
            std::string::npos) << result.output;
  EXPECT_NE(result.output.find("strait: error: sweep: 1 cell(s) failed: nano-broken-r1-h50-d1.28k (" + log + ")"),
            std::string::npos) << result.output;
  const auto cells = fit::read_cells(out());
  ASSERT_EQ(cells.cells.size(), 1u);
  EXPECT_EQ(cells.cells[0].method, "ddp");

  fs::remove_all(out());
  grid = write_grid("1280", "", failing + ", \"ddp\"");
  result = testing::run_strait(sweep_args(grid) + " --fail-fast");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("sweep: cell 1/2 nano-broken-r1-h50-d1.28k: FAILED"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("cell 2/2"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(out() / "cells.jsonl"));
}

}  // namespace
}  // namespace strait
