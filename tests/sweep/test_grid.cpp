// The sweep's grid: which cells a grid.toml crosses into, their names, methods, steps and
// parameter counts, and the errors a bad grid gets (each naming its key).
#include <gtest/gtest.h>

#include <string>

#include "strait/core/error.h"
#include "strait/sweep/grid.h"

namespace strait::sweep {
namespace {

const std::string kTrain = R"([train]
data = "data/x"
context_length = 32
batch_size = 4
)";

// The message of the strait::Error parse_grid throws for `text`, or "" when it parses.
std::string grid_error(const std::string& text) {
  try {
    parse_grid(text, "grid.toml");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(SweepGrid, CrossesModelsMethodsReplicasSyncIntervalsAndTokens) {
  const Grid grid = parse_grid(kTrain + R"([grid]
models = ["nano", {hidden_size = 96, num_layers = 3, intermediate_size = 256, num_heads = 4}]
methods = ["ddp", {method = "diloco", outer_lr = 0.5}]
replicas = [1, 2]
sync_every = [10, 20]
tokens_per_param = [2]
)", "grid.toml");
  // Per model: DDP at 2 replica counts (H is not crossed), DiLoCo at 2 replica counts x 2 H.
  ASSERT_EQ(grid.cells.size(), 12u);
  std::vector<std::string> names;
  for (const auto& cell : grid.cells) names.push_back(cell.name);
  EXPECT_EQ(names[0], "nano-ddp-r1-d2n");
  EXPECT_EQ(names[1], "nano-ddp-r2-d2n");
  EXPECT_EQ(names[2], "nano-diloco-r1-h10-d2n");
  EXPECT_EQ(names[5], "nano-diloco-r2-h20-d2n");
  EXPECT_EQ(names[6], "n332k-ddp-r1-d2n");

  // strait fit groups by method: the label plus the dimensions the grid varies.
  EXPECT_EQ(grid.cells[1].method, "ddp-r2");
  EXPECT_EQ(grid.cells[5].method, "diloco-r2-h20");
  EXPECT_EQ(grid.cells[0].config.strategy, "auto");  // one process: the single-process baseline
  EXPECT_EQ(grid.cells[1].config.strategy, "ddp");
  EXPECT_EQ(grid.cells[5].config.strategy, "diloco");
  EXPECT_EQ(grid.cells[5].config.sync_every, 20);
  EXPECT_EQ(grid.cells[5].config.outer_lr, 0.5);
  EXPECT_EQ(grid.cells[0].config.outer_lr, 0);  // method options stay with their method

  // Hand count for hidden 96, 3 layers, SwiGLU 256: per layer q, k, v, o (4 x 96²) + gate, up,
  // down (3 x 96 x 256) + two RMSNorm weights (2 x 96) = 36864 + 73728 + 192 = 110784; three
  // layers and the final norm: 332352 + 96.
  const Cell& custom = grid.cells[6];
  EXPECT_EQ(custom.non_embedding_params, 332448);
  EXPECT_EQ(custom.config.hidden_size, 96);
  // nano: 2 layers of 4 x 64² + 3 x 64 x 176 + 2 x 64 = 50304, and the final norm.
  EXPECT_EQ(grid.cells[0].non_embedding_params, 100672);

  // D = 2 N tokens in steps of batch 4 x 32 tokens x replicas.
  EXPECT_EQ(grid.cells[0].tokens_per_step, 128);
  EXPECT_EQ(grid.cells[0].steps, 1573);  // round(201344 / 128)
  EXPECT_EQ(grid.cells[1].tokens_per_step, 256);
  EXPECT_EQ(grid.cells[1].steps, 787);  // round(201344 / 256)
  EXPECT_EQ(custom.steps, 5195);        // round(664896 / 128)
}

TEST(SweepGrid, AbsoluteTokensAndNamedModels) {
  const Grid grid = parse_grid(kTrain + R"([grid]
models = [{name = "wide", preset = "nano", hidden_size = 128}]
methods = ["sparseloco"]
tokens = [1280, 2.56e3]
)", "grid.toml");
  ASSERT_EQ(grid.cells.size(), 2u);
  EXPECT_EQ(grid.cells[0].name, "wide-sparseloco-r1-h50-d1.28k");  // H from the train default, 50
  EXPECT_EQ(grid.cells[1].name, "wide-sparseloco-r1-h50-d2.56k");
  EXPECT_EQ(grid.cells[0].method, "sparseloco");
  EXPECT_EQ(grid.cells[0].steps, 10);
  EXPECT_EQ(grid.cells[1].steps, 20);
  EXPECT_EQ(grid.cells[0].dimensions.hidden_size, 128);
  EXPECT_EQ(grid.cells[0].dimensions.num_layers, 2);  // the rest from the preset
}

TEST(SweepGrid, BadGridsNameTheKey) {
  const std::string grid = "[grid]\nmodels = [\"nano\"]\nmethods = [\"ddp\"]\ntokens = [1e4]\n";
  struct Case {
    std::string text, expected;
  };
  const std::vector<Case> cases = {
      {"[train]\ndata = \"d\"\nwarmup_step = 3\n" + grid, "grid.toml: [train]: unknown key 'warmup_step' (did you mean 'warmup_steps'?)"},
      {"[train]\ndata = \"d\"\nsteps = 3\n" + grid, "grid.toml: [train]: 'steps' is set by [grid] tokens or tokens_per_param"},
      {"[train]\ndata = \"d\"\nlr = \"fast\"\n" + grid, "grid.toml: [train]: key 'lr' must be a number"},
      {"[train]\ndata = \"d\"\nlr = [1]\n" + grid, "grid.toml: [train]: key 'lr' has a table, array or date value"},
      {grid, "grid.toml: [train] needs data"},
      {kTrain + "[grid]\nmodel = [\"nano\"]\n", "grid.toml: [grid]: unknown key 'model' (did you mean 'models'?)"},
      {kTrain + "[grdi]\n", "grid.toml: unknown key 'grdi' (did you mean 'grid'?)"},
      {kTrain + "[grid]\nmodels = [\"nanoo\"]\nmethods = [\"ddp\"]\ntokens = [1e4]\n",
       "grid.toml: [grid] models[0]: unknown preset \"nanoo\" (did you mean 'nano'?)"},
      {kTrain + "[grid]\nmodels = [{hidden_size = 96, num_layer = 3}]\nmethods = [\"ddp\"]\ntokens = [1e4]\n",
       "grid.toml: [grid] models[0]: unknown key 'num_layer' (did you mean 'num_layers'?)"},
      {kTrain + "[grid]\nmodels = [{hidden_size = 90, num_heads = 4}]\nmethods = [\"ddp\"]\ntokens = [1e4]\n",
       "grid.toml: [grid] models[0]: invalid model configuration: hidden_size 90 is not divisible by num_heads 4"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"dilcoo\"]\ntokens = [1e4]\n",
       "grid.toml: [grid] methods[0]: unknown method 'dilcoo' (did you mean 'diloco'?)"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [{method = \"diloco\", topkk = 3}]\ntokens = [1e4]\n",
       "grid.toml: [grid] methods (diloco): unknown key 'topkk' (did you mean 'topk'?)"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [{method = \"diloco\", sync_every = 3}]\ntokens = [1e4]\n",
       "grid.toml: [grid] methods (diloco): 'sync_every' is set by [grid] sync_every"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"diloco\", \"diloco\"]\ntokens = [1e4]\n",
       "two methods are labelled 'diloco'"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"ddp\"]\ntokens = [1e4]\ntokens_per_param = [20]\n",
       "grid.toml: [grid] needs exactly one of tokens"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"ddp\"]\n", "grid.toml: [grid] needs exactly one of tokens"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"ddp\"]\nreplicas = [0]\ntokens = [1e4]\n",
       "grid.toml: [grid] replicas must hold integers >= 1"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [\"ddp\"]\ntokens = [-5]\n",
       "grid.toml: [grid] tokens must hold numbers > 0"},
      {kTrain + "[grid]\nmodels = [\"nano\", \"nano\"]\nmethods = [\"ddp\"]\ntokens = [1e4]\n",
       "grid.toml: cell nano-ddp-r1-d10k: two cells have this name"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [{method = \"ddp\", fragments = 2}]\ntokens = [1e4]\n",
       "grid.toml: cell nano-ddp-r1-d10k: invalid configuration: fragments, overlap_steps and fragment_mix are "
       "streaming DiLoCo's"},
      {kTrain + "[grid]\nmodels = [\"nano\"]\nmethods = [{method = \"ddp\", label = \"a/b\"}]\ntokens = [1e4]\n",
       "grid.toml: [grid] methods[0] label: 'a/b' may hold only letters"},
      {kTrain + "[grid\n", "grid.toml:5:"},
  };
  for (const auto& c : cases) {
    const std::string message = grid_error(c.text);
    EXPECT_NE(message.find(c.expected), std::string::npos) << "grid:\n" << c.text << "\nmessage: " << message;
  }
}

TEST(SweepGrid, CompactNumbers) {
  EXPECT_EQ(compact_number(20), "20");
  EXPECT_EQ(compact_number(1280), "1.28k");
  EXPECT_EQ(compact_number(332448), "332k");
  EXPECT_EQ(compact_number(2e6), "2M");
  EXPECT_EQ(compact_number(999.7), "1k");
  EXPECT_EQ(compact_number(0.5), "0.5");
}

}  // namespace
}  // namespace strait::sweep
