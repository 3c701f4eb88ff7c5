// Parity with an independent PyTorch implementation (reference/llama_ref.py, Hugging Face's
// LlamaForCausalLM conventions): strait exports a checkpoint, the reference loads the exported
// safetensors and must reproduce strait's loss (1e-5 relative), logits (1e-5) and every
// gradient (1e-4).
#include <gtest/gtest.h>

#include "strait/model/tensor_io.h"
#include "strait/train/checkpoint.h"
#include "strait/train/export.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

void check_parity_with_pytorch(bool tie_embeddings) {
  testing::ScratchDir scratch;
  testing::make_byte_dataset(scratch / "data", 2000, 2000);
  ModelConfig config = model_preset("nano", 256);
  config.context_length = 24;
  config.tie_embeddings = tie_embeddings;
  LlamaModel model(config);
  model.init_weights(21);
  Optimizer optimizer(model.parameters(), {});

  // Export through the user-facing path: checkpoint, then `strait export`.
  CheckpointState state;
  state.model_config = config;
  state.train_config = testing::tiny_train_config(scratch / "data", scratch / "run");
  save_checkpoint(scratch / "run", state, optimizer, scratch / "data");
  export_hf(checkpoint_dir(scratch / "run", 0), scratch / "parity" / "model", {});

  auto generator = at::make_generator<at::CPUGeneratorImpl>(99);
  auto tokens = torch::randint(256, {3, 25}, generator, torch::kInt64);
  auto inputs = tokens.narrow(1, 0, 24).contiguous(), targets = tokens.narrow(1, 1, 24).contiguous();
  auto logits = model.forward(inputs);
  auto loss = torch::cross_entropy_loss(logits.view({-1, 256}), targets.view({-1}));
  loss.backward();

  NamedTensors expected = {{"loss", loss.detach()}, {"logits", logits.detach()}};
  for (const auto& parameter : model.parameters()) expected.emplace_back("grad." + parameter.name, parameter.tensor.grad());
  save_tensors(scratch / "parity" / "batch.safetensors", {{"inputs", inputs}, {"targets", targets}});
  save_tensors(scratch / "parity" / "expected.safetensors", expected);

  auto result = testing::run_command("/usr/bin/python3 '" STRAIT_SOURCE_DIR "/reference/check_parity.py' '" +
                                     (scratch / "parity").string() + "'");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("PARITY OK"), std::string::npos) << result.output;
}

TEST(Parity, LossLogitsAndGradientsMatchPyTorchUntied) { check_parity_with_pytorch(false); }
TEST(Parity, LossLogitsAndGradientsMatchPyTorchTied) { check_parity_with_pytorch(true); }

}  // namespace
}  // namespace strait
