// Composed strategies: the strategy-owned step against the loop's former clip-then-step path,
// and the configuration checks that must fire before any process connects.
#include <gtest/gtest.h>

#include <functional>

#include "strait/core/error.h"
#include "strait/launch/rank_environment.h"
#include "strait/model/model_config.h"
#include "strait/strategy/strategy.h"
#include "train/fixtures.h"

namespace strait {
namespace {

LlamaModel tiny_model() {
  ModelConfig config = model_preset("nano", 256);
  config.context_length = 16;
  LlamaModel model(config);
  model.init_weights(7);
  return model;
}

// A fixed batch of byte tokens.
std::pair<torch::Tensor, torch::Tensor> batch(int64_t step) {
  auto tokens = torch::arange(step, step + 4 * 17, torch::kInt64).remainder(251).view({4, 17});
  return {tokens.narrow(1, 0, 16).contiguous(), tokens.narrow(1, 1, 16).contiguous()};
}

TEST(StrategyStep, SingleProcessStepEqualsClipThenAdamWBitForBit) {
  TrainConfig config;
  config.data = "unused";
  launch::RankEnvironment one_process;
  auto strategy = make_strategy(config, one_process);
  EXPECT_EQ(strategy->name(), "single");
  EXPECT_EQ(strategy->model_placement(), Placement::Replicated);

  LlamaModel by_strategy = tiny_model(), by_hand = tiny_model();
  Optimizer strategy_optimizer(by_strategy.parameters(), {}), hand_optimizer(by_hand.parameters(), {});
  strategy->synchronize_weights(by_strategy, false);
  for (int64_t step = 0; step < 8; ++step) {
    // A clip norm of 0.5 clips every step: both branches of the clipping are exercised.
    const double max_norm = step % 2 == 0 ? 0.5 : 0.0;
    auto [inputs, targets] = batch(step);
    strategy_optimizer.zero_grad();
    strategy->forward_backward(by_strategy, inputs, targets, 1.0, true);
    const double strategy_norm = strategy->step(by_strategy, strategy_optimizer, 1e-2, max_norm);

    hand_optimizer.zero_grad();
    by_hand.loss(inputs, targets).backward();
    const double hand_norm = clip_grad_norm(by_hand.parameters(), max_norm);
    hand_optimizer.step(1e-2);

    ASSERT_EQ(strategy_norm, hand_norm) << "step " << step;
    for (size_t i = 0; i < by_hand.parameters().size(); ++i) {
      ASSERT_TRUE(torch::equal(by_strategy.parameters()[i].tensor, by_hand.parameters()[i].tensor))
          << by_hand.parameters()[i].name << " differs after step " << step;
    }
  }
}

// A job of four ranks on two nodes, as rank 0 sees it; nothing listens on the port, so a
// configuration that slipped through would fail to connect instead (with another message).
launch::RankEnvironment four_ranks_on_two_nodes() {
  launch::RankEnvironment environment;
  environment.world_size = 4;
  environment.local_world_size = 2;
  environment.num_nodes = 2;
  environment.master_port = 1;
  return environment;
}

std::string strategy_error(const TrainConfig& config) {
  try {
    validate(config);
    make_strategy(config, four_ranks_on_two_nodes());
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(StrategyConfiguration, MeaninglessCombinationsFailBeforeAnyProcessConnects) {
  TrainConfig base;
  base.data = "data";
  base.comm_timeout_s = 1;
  struct Case {
    std::string strategy, inner, replica_ranks;
    int64_t sync_every;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"zero2", "auto", "auto", 50, "strategy must be auto, ddp, zero3, local-sgd, diloco or sparseloco, got 'zero2'"},
      {"zero3", "ddp", "auto", 50, "inner 'ddp' needs an outer method"},
      {"ddp", "single", "auto", 50, "inner 'single' needs an outer method"},
      {"ddp", "auto", "2", 50, "replica_ranks '2' needs an outer method"},
      {"local-sgd", "bogus", "auto", 50, "inner must be auto, single, ddp or zero3, got 'bogus'"},
      {"local-sgd", "auto", "two", 50, "replica_ranks must be a positive number of ranks, node or auto, got 'two'"},
      {"local-sgd", "auto", "0", 50, "replica_ranks must be a positive number of ranks"},
      {"local-sgd", "auto", "auto", 0, "sync_every must be >= 1"},
      {"local-sgd", "auto", "3", 50, "replica_ranks 3 does not divide the 4 ranks of this job into whole replicas"},
      {"local-sgd", "single", "2", 50, "inner single needs one-rank replicas, but replicas have 2 ranks"},
      {"local-sgd", "single", "node", 50, "inner single needs one-rank replicas, but replicas have 2 ranks"},
      {"local-sgd", "ddp", "1", 50, "inner ddp needs replicas of at least 2 ranks"},
      {"diloco", "zero3", "1", 50, "inner zero3 shards each replica's model over its ranks and needs replicas of at least 2 ranks"},
      {"zero3", "zero3", "auto", 50, "inner 'zero3' needs an outer method"},
  };
  for (const Case& c : cases) {
    TrainConfig config = base;
    config.strategy = c.strategy;
    config.inner = c.inner;
    config.replica_ranks = c.replica_ranks;
    config.sync_every = c.sync_every;
    const std::string message = strategy_error(config);
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << c.strategy << "/" << c.inner << "/" << c.replica_ranks << ": " << message;
    EXPECT_NE(message.find("invalid configuration"), std::string::npos) << message;
  }
}

TEST(StrategyConfiguration, BadOuterOptimizerSettingsAreNamed) {
  TrainConfig config;
  config.data = "data";
  config.strategy = "diloco";
  const std::vector<std::pair<std::function<void(TrainConfig&)>, std::string>> cases = {
      {[](TrainConfig& c) { c.outer_dtype = "int2"; }, "outer_dtype must be fp32, bf16, int8 or int4, got 'int2'"},
      {[](TrainConfig& c) { c.outer_lr = -0.5; }, "outer_lr must be a positive number (or 0: the method's default)"},
      {[](TrainConfig& c) { c.outer_momentum = 1; }, "outer_momentum must be in [0, 1) (or -1: the method's default)"},
      {[](TrainConfig& c) { c.fragments = 0; }, "fragments must be >= 1, got 0"},
      {[](TrainConfig& c) { c.sync_every = 10, c.overlap_steps = 10; },
       "overlap_steps must be in [0, sync_every) (a fragment's exchange must land before its next sync), got 10 "
       "with sync_every 10"},
      {[](TrainConfig& c) { c.overlap_steps = -1; },
       "overlap_steps must be in [0, sync_every) (a fragment's exchange must land before its next sync), got -1 "
       "with sync_every 50"},
      {[](TrainConfig& c) { c.fragment_mix = 1; }, "fragment_mix must be in [0, 1), got 1.000000"},
      {[](TrainConfig& c) { c.strategy = "local-sgd", c.fragments = 2; },
       "fragments, overlap_steps and fragment_mix are streaming DiLoCo's: they need --strategy diloco or sparseloco, "
       "got 'local-sgd'"},
      {[](TrainConfig& c) { c.strategy = "sparseloco", c.overlap_steps = 2; },
       "overlap_steps needs the dense exchange of --strategy diloco (sparseloco's error buffers are updated at each "
       "sync; its fragments sync without overlap)"},
      {[](TrainConfig& c) { c.strategy = "sparseloco", c.outer_dtype = "int4"; },
       "outer_dtype 'int4' is for the dense exchange of local-sgd and diloco; sparseloco sends top-k values in 2 bits "
       "(see --topk, --quant-bins)"},
      {[](TrainConfig& c) { c.topk = 0; }, "topk must be in [1, 4096] (values kept per 4096 elements), got 0"},
      {[](TrainConfig& c) { c.quant_bins = 5; }, "quant_bins must be in [1, 4] (codes travel in 2 bits), got 5"},
      {[](TrainConfig& c) { c.error_decay = 1.5; }, "error_decay must be in [0, 1], got 1.500000"},
      {[](TrainConfig& c) { c.aggregate = "median"; }, "aggregate must be mean or sum, got 'median'"},
      {[](TrainConfig& c) { c.index_coding = "huffman"; },
       "index_coding must be fixed, rice, bitmap or auto, got 'huffman'"},
      {[](TrainConfig& c) { c.optimizer = "adam"; }, "optimizer must be adamw or sgd, got 'adam'"},
      {[](TrainConfig& c) { c.sync_every_seconds = -1; },
       "sync_every_seconds must be >= 0 (0: sync every sync_every steps), got -1.000000"},
      {[](TrainConfig& c) { c.strategy = "sparseloco", c.sync_every_seconds = 5; },
       "sync_every_seconds (a time-boxed inner phase, replicas weighted by the tokens they trained) needs the dense "
       "exchange of --strategy local-sgd or diloco, got 'sparseloco'"},
      {[](TrainConfig& c) { c.fragments = 2, c.sync_every_seconds = 5; },
       "sync_every_seconds syncs the whole model when the time is up; it cannot be combined with streaming DiLoCo's "
       "fragments, overlap_steps or fragment_mix"},
      {[](TrainConfig& c) { c.throttle = "3"; },
       "throttle entry '3' must be REPLICA:FACTOR with a replica index >= 0 and a factor >= 1, e.g. 3:2"},
      {[](TrainConfig& c) { c.throttle = "1:2,x:2"; },
       "throttle entry 'x:2' must be REPLICA:FACTOR with a replica index >= 0 and a factor >= 1, e.g. 3:2"},
      {[](TrainConfig& c) { c.throttle = "1:0.5"; },
       "throttle entry '1:0.5' must be REPLICA:FACTOR with a replica index >= 0 and a factor >= 1, e.g. 3:2"},
      {[](TrainConfig& c) { c.throttle = "1:2,1:3"; }, "throttle names replica 1 twice"},
  };
  for (const auto& [change, expected] : cases) {
    TrainConfig bad = config;
    change(bad);
    try {
      validate(bad);
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()), "invalid configuration: " + expected);
    }
  }
}

// A DiLoCo configuration that passes validate(), for make_strategy to refuse.
TrainConfig diloco_config() {
  TrainConfig config;
  config.data = "data";
  config.comm_timeout_s = 1;
  config.strategy = "diloco";
  return config;
}

TEST(StrategyConfiguration, AThrottledReplicaOutsideTheJobFailsBeforeAnyProcessConnects) {
  TrainConfig config = diloco_config();
  config.replica_ranks = "2";
  config.throttle = "0:1.5,2:2";
  EXPECT_NE(strategy_error(config).find("invalid configuration: throttle names replica 2, but the job has 2 replicas "
                                        "(0..1)"),
            std::string::npos)
      << strategy_error(config);
  EXPECT_EQ(parse_throttle("0:1.5,2:2"), (std::map<int64_t, double>{{0, 1.5}, {2, 2.0}}));
  EXPECT_TRUE(parse_throttle("").empty());
}

TEST(StrategyConfiguration, MoreFragmentsThanLayersFailBeforeAnyProcessConnects) {
  TrainConfig config = diloco_config();
  config.preset = "nano";
  config.fragments = model_preset("nano", 256).num_layers + 1;
  const std::string message = strategy_error(config);
  EXPECT_NE(message.find("invalid configuration: fragments " + std::to_string(config.fragments) + " > the model's " +
                         std::to_string(config.fragments - 1) + " layers"),
            std::string::npos)
      << message;
}

TEST(StrategyConfiguration, OuterLrAndMomentumDefaultToTheMethods) {
  TrainConfig config;
  config.strategy = "diloco";
  EXPECT_EQ(outer_lr_of(config), 0.7);
  EXPECT_EQ(outer_momentum_of(config), 0.9);
  config.strategy = "sparseloco";
  EXPECT_EQ(outer_lr_of(config), 1.0);
  EXPECT_EQ(outer_momentum_of(config), 0.0);
  config.outer_lr = 0.5;
  config.outer_momentum = 0.0;
  config.strategy = "diloco";
  EXPECT_EQ(outer_lr_of(config), 0.5);
  EXPECT_EQ(outer_momentum_of(config), 0.0);
}

TEST(StrategyConfiguration, PerMachineSettingsAreNotComparedAcrossRanks) {
  TrainConfig a, b;
  a.data = "/mnt/a/data";
  b.data = "/srv/data";
  a.out = "runs/x";
  b.out = "/scratch/x";
  a.gloo_interface = "eth0";
  b.gloo_interface = "ens5";
  a.threads = 2;
  b.threads = 8;
  EXPECT_EQ(shared_settings(a), shared_settings(b));
  b.lr = 1e-3;
  EXPECT_NE(shared_settings(a), shared_settings(b));
}

}  // namespace
}  // namespace strait
