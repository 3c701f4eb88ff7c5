// strait train under other launchers: torchrun --no-python and Open MPI's mpirun must give the
// same run as strait launch, loss for loss.
#include <gtest/gtest.h>

#include "strait/core/metrics.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::losses_of;

class Launchers : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::make_byte_dataset(scratch_ / "data", 20000, 4000);
    auto result = testing::run_strait("launch --nproc-per-node 2 --master-port " + std::to_string(testing::free_tcp_port()) + " -- " +
                                      train_args(scratch_ / "strait-launch"));
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }

  std::string train_args(const fs::path& out) const {
    return "--quiet train --data '" + (scratch_ / "data").string() + "' --out '" + out.string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --precision fp32 "
           "--eval-every 0 --eval-batches 1 --comm-timeout-s 20";
  }

  testing::ScratchDir scratch_;
};

TEST_F(Launchers, TorchrunNoPython) {
  // Debian's torchrun (torch 1.13 on Python 3.11) crashes with its default --redirects 0
  // ("'NoneType' object has no attribute 'get'"); redirecting to a log directory avoids it.
  auto result = testing::run_command(
      "/usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 --master_port " + std::to_string(testing::free_tcp_port()) +
      " --redirects 1 --tee 1 --log_dir '" + (scratch_ / "torchrun-logs").string() + "' --no_python '" STRAIT_BINARY "' " +
      train_args(scratch_ / "torchrun"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(scratch_ / "torchrun"), losses_of(scratch_ / "strait-launch"));
}

TEST_F(Launchers, OpenMpiMpirun) {
  if (testing::run_command("command -v mpirun").exit_code != 0) GTEST_SKIP() << "mpirun not installed (scripts/setup installs openmpi-bin)";
  auto result = testing::run_command("mpirun --allow-run-as-root --oversubscribe -np 2 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=" +
                                     std::to_string(testing::free_tcp_port()) + " '" STRAIT_BINARY "' " + train_args(scratch_ / "mpirun"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(losses_of(scratch_ / "mpirun"), losses_of(scratch_ / "strait-launch"));
}

}  // namespace
}  // namespace strait
