// The whole user workflow through the command line: prepare -> train (config file + overrides)
// -> eval -> export -> generate, and what each step leaves behind.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "strait/core/metrics.h"
#include "strait/core/safetensors.h"
#include "test_support.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

std::string brown_document(int seed) {
  std::string text;
  for (int paragraph = 0; paragraph < 40; ++paragraph) {
    text += "\n\n\tThe/at jury/nn said/vbd ./.\n\tIt/pps found/vbd " + std::to_string(seed) +
            "/cd reasons/nns ,/, ``/`` all/abn good/jj ''/'' ./.";
  }
  return text;
}

nlohmann::json last_json_line(const std::string& output) {
  auto end = output.find_last_not_of('\n');
  auto start = output.rfind('\n', end);
  return nlohmann::json::parse(output.substr(start == std::string::npos ? 0 : start + 1, end - start));
}

TEST(Workflow, PrepareTrainEvalExportGenerate) {
  testing::ScratchDir scratch;
  for (const char* name : {"ca01", "ca02", "cb01", "cb02"}) testing::write_file(scratch / "corpus" / name, brown_document(name[3]));
  testing::write_file(scratch / "corpus" / "README", "not part of the corpus");
  auto result = testing::run_strait("-q prepare '" + (scratch / "corpus").string() + "' --out '" + (scratch / "data").string() +
                                    "' --val-fraction 0.25");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(last_json_line(result.output).at("documents_val"), 1);

  // The file says 50 steps; the command line overrides it, and of two flags the last one wins.
  testing::write_file(scratch / "run.toml",
                      "preset = \"nano\"\ncontext_length = 32\nbatch_size = 2\nsteps = 50\nthreads = 1\n"
                      "eval_every = 3\neval_batches = 1\ncheckpoint_every = 3\n");
  result = testing::run_strait("train --config '" + (scratch / "run.toml").string() + "' --data '" +
                               (scratch / "data").string() + "' --out '" + (scratch / "run").string() + "' --steps 9 --steps 6");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("step 6/6 | loss "), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(" tok/s | "), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ETA"), std::string::npos) << result.output;
  auto metrics = read_metrics(scratch / "run" / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  EXPECT_TRUE(metrics[2].contains("val_loss"));
  EXPECT_FALSE(metrics[3].contains("val_loss"));
  for (const char* key : {"loss", "lr", "grad_norm", "tokens", "step_ms", "tokens_per_s"}) {
    EXPECT_TRUE(metrics[0].contains(key)) << key;
  }
  const fs::path checkpoint = scratch / "run" / "checkpoints" / "step-000006";
  ASSERT_TRUE(fs::exists(checkpoint / "state.json"));

  result = testing::run_strait("eval --checkpoint '" + checkpoint.string() + "' --data '" +
                               (scratch / "data" / "val_000000.bin").string() + "' --max-windows 3 --threads 1");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto evaluation = last_json_line(result.output);
  EXPECT_EQ(evaluation.at("windows"), 3);
  EXPECT_EQ(evaluation.at("tokens"), 96);
  EXPECT_GT(evaluation.at("loss").get<double>(), 0.0);

  result = testing::run_strait("export --checkpoint '" + checkpoint.string() + "' --out '" + (scratch / "hf").string() +
                               "' --dtype bfloat16");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto config = nlohmann::json::parse(testing::read_file(scratch / "hf" / "config.json"));
  EXPECT_EQ(config.at("num_hidden_layers"), 2);
  EXPECT_EQ(config.at("max_position_embeddings"), 32);
  EXPECT_EQ(config.at("torch_dtype"), "bfloat16");
  auto weights = SafetensorsFile::load(scratch / "hf" / "model.safetensors");
  EXPECT_EQ(weights.info("model.layers.1.mlp.down_proj.weight").dtype, DType::BF16);
  EXPECT_TRUE(weights.contains("lm_head.weight"));
  EXPECT_TRUE(fs::exists(scratch / "hf" / "tokenizer.json"));

  result = testing::run_strait("generate --checkpoint '" + checkpoint.string() +
                               "' --prompt 'The jury' --max-tokens 12 --temperature 0 --threads 1");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.rfind("The jury", 0), 0u) << result.output;
  EXPECT_GE(result.output.size(), std::string("The jury").size() + 12 + 1);  // 12 byte tokens + newline
}

}  // namespace
}  // namespace strait
