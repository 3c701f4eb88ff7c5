#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/launch/rank_environment.h"
#include "strait/strategy/ddp.h"

namespace strait {

std::unique_ptr<Strategy> make_strategy(const TrainConfig& config, const launch::RankEnvironment& environment) {
  if (environment.world_size == 1) return make_single_process_strategy();
  comm::CommOptions options;
  options.topology = {environment.rank,       environment.world_size, environment.local_rank,
                      environment.local_world_size, environment.node_rank, environment.num_nodes};
  options.master_addr = environment.master_addr;
  options.master_port = environment.master_port;
  options.launcher_serves_store = environment.launcher_serves_store;
  options.interface = config.gloo_interface;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(config.comm_timeout_s * 1000.0));
  auto communicator = comm::Communicator::create(options);
  // Ranks started with different options would silently train different things.
  const std::string dump = to_json(config).dump();
  communicator->check_consistency(xxh64_hex(dump.data(), dump.size()));
  DdpOptions ddp;
  ddp.bucket_bytes = static_cast<int64_t>(config.bucket_mb * (1 << 20));
  return std::make_unique<DdpStrategy>(std::move(communicator), ddp);
}

}  // namespace strait
