// Every kind of bad input gets a clear error naming the problem, exit status 1, and leaves
// every file already on disk exactly as it was.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "strait/core/checksum.h"
#include "strait/model/tensor_io.h"
#include "strait/train/checkpoint.h"
#include "test_support.h"
#include "train/fixtures.h"

namespace strait {
namespace {

namespace fs = std::filesystem;

using testing::quoted;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::make_byte_dataset(data_dir(), 6000, 3000);
    // A finished run whose files must survive every failure below.
    auto result = testing::run_strait("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                                      "' --preset nano --context-length 32 --batch-size 2 --steps 4 --threads 1 "
                                      "--eval-every 0 --eval-batches 1 --checkpoint-every 2");
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }

  fs::path data_dir() const { return scratch_ / "data"; }
  fs::path run_dir() const { return scratch_ / "run"; }
  fs::path checkpoint() const { return run_dir() / "checkpoints" / "step-000004"; }

  // Runs strait with `arguments`, expects `exit_code` (1; 2 for usage errors) with `message` in its
  // output, and checks that nothing under the scratch directory changed.
  void expect_rejected(const std::string& arguments, const std::string& message, int exit_code = 1) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait(arguments);
    EXPECT_EQ(result.exit_code, exit_code) << result.output;
    EXPECT_NE(result.output.find("strait: error: "), std::string::npos) << result.output;
    EXPECT_NE(result.output.find(message), std::string::npos) << "expected '" << message << "' in:\n" << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed after: " << arguments;
  }

  // Records the checksums of `checkpoint`'s files, as edited by a test, in its state.json, so that
  // the check under test, not the checksum, is what refuses them.
  static void reseal(const fs::path& checkpoint) {
    auto state = nlohmann::json::parse(testing::read_file(checkpoint / "state.json"));
    for (auto& [name, checksum] : state["files"].items()) checksum = xxh64_file_hex(checkpoint / name);
    state["manifest_xxh64"] = manifest_checksum(state);
    testing::write_file(checkpoint / "state.json", state.dump(2));
  }

  std::string train_args(const fs::path& data) const {
    return "--quiet train --data '" + data.string() + "' --out '" + (scratch_ / "new-run").string() +
           "' --preset nano --context-length 32 --batch-size 2 --steps 2 --threads 1";
  }

  testing::ScratchDir scratch_;
};

TEST_F(BadInput, UnknownConfigKeySuggestsTheRightOne) {
  testing::write_file(scratch_ / "run.toml", "preset = \"nano\"\nwarmup_step = 10\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "' --data '" + data_dir().string() + "'",
                  "run.toml: unknown key 'warmup_step' (did you mean 'warmup_steps'?)");
}

TEST_F(BadInput, IllTypedConfigValues) {
  testing::write_file(scratch_ / "run.toml", "steps = \"many\"\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "'", "key 'steps' must be an integer, got \"many\"");
  testing::write_file(scratch_ / "run.json", R"({"lr": true})");
  expect_rejected("train --config '" + (scratch_ / "run.json").string() + "'", "key 'lr' must be a number, got true");
  expect_rejected(train_args(data_dir()) + " --grad-accum two", "--grad-accum must be an integer, got 'two'");
}

TEST_F(BadInput, MalformedConfigFile) {
  testing::write_file(scratch_ / "run.toml", "steps = = 3\n");
  expect_rejected("train --config '" + (scratch_ / "run.toml").string() + "'", "run.toml:1");
  expect_rejected("train --config '" + (scratch_ / "missing.toml").string() + "'", "missing.toml");
}

TEST_F(BadInput, MissingDataDirectory) {
  expect_rejected(train_args(scratch_ / "no-such-data"), "no-such-data");
}

TEST_F(BadInput, TruncatedShard) {
  fs::copy(data_dir(), scratch_ / "truncated");
  fs::resize_file(scratch_ / "truncated" / "train_000000.bin", 1024 + 2 * 1000 - 1);
  expect_rejected(train_args(scratch_ / "truncated"), "train_000000.bin");
}

TEST_F(BadInput, ShardWithWrongMagic) {
  fs::copy(data_dir(), scratch_ / "bad-magic");
  std::string bytes = testing::read_file(scratch_ / "bad-magic" / "train_000000.bin");
  bytes[0] = 0x7f;
  testing::write_file(scratch_ / "bad-magic" / "train_000000.bin", bytes);
  expect_rejected(train_args(scratch_ / "bad-magic"), "magic");
}

TEST_F(BadInput, TokenOutsideTheVocabulary) {
  fs::create_directories(scratch_ / "big-ids");
  std::vector<uint16_t> tokens(5000, 65);
  tokens[1234] = 300;
  data::write_shard(scratch_ / "big-ids" / "train_000000.bin", tokens);
  fs::copy_file(data_dir() / "val_000000.bin", scratch_ / "big-ids" / "val_000000.bin");
  fs::copy_file(data_dir() / "tokenizer.json", scratch_ / "big-ids" / "tokenizer.json");
  expect_rejected(train_args(scratch_ / "big-ids"), "300");
}

TEST_F(BadInput, SequenceLongerThanTheContext) {
  expect_rejected(train_args(data_dir()) + " --seq-len 64", "seq_len 64 exceeds the model's context length 32");
  expect_rejected("generate --checkpoint '" + checkpoint().string() + "' --prompt hello --max-tokens 40",
                  "exceeds the model's context length 32");
}

TEST_F(BadInput, ExistingRunIsNeverClobbered) {
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --steps 2",
                  "already holds a run; pass --resume to continue it or --overwrite to replace it");
}

TEST_F(BadInput, CorruptCheckpointIsDetectedOnResumeEvalAndExport) {
  std::string bytes = testing::read_file(checkpoint() / "model.safetensors");
  bytes[bytes.size() - 3] ^= 0x20;
  testing::write_file(checkpoint() / "model.safetensors", bytes);
  const std::string corrupt = "model.safetensors is corrupt: checksum";
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  corrupt);
  expect_rejected("eval --checkpoint '" + checkpoint().string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  corrupt);
  expect_rejected("export --checkpoint '" + checkpoint().string() + "' --out '" + (scratch_ / "hf").string() + "'", corrupt);
  fs::remove(checkpoint() / "state.json");
  expect_rejected("eval --checkpoint '" + checkpoint().string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  "state.json");
}

TEST_F(BadInput, ResumingAFinishedRunSaysSoAndChangesNothing) {
  // The run holds step 4; --steps 4 (finished) and --steps 3 (fewer) have nothing to train.
  for (const char* steps : {"4", "3"}) {
    const auto before = testing::snapshot_tree(scratch_.path());
    const auto result = testing::run_strait("--quiet train --data '" + data_dir().string() + "' --out '" +
                                            run_dir().string() + "' --preset nano --context-length 32 --batch-size 2 "
                                            "--threads 1 --eval-every 0 --eval-batches 1 --resume --steps " + steps);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("is finished: its newest checkpoint is at step 4 and --steps is " + std::string(steps) +
                                 "; nothing to do"),
              std::string::npos)
        << result.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch_.path())) << "files changed with --steps " << steps;
  }
}

TEST_F(BadInput, ResumeWithADifferentModelIsRefused) {
  expect_rejected("--quiet train --data '" + data_dir().string() + "' --out '" + run_dir().string() +
                      "' --preset nano --context-length 32 --hidden-size 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  "holds a different model");
}

// The value in "key=value" within `text` (up to a space or newline), "" if absent.
std::string value_of(const std::string& text, const std::string& key) {
  const auto at = text.find(key + "=");
  if (at == std::string::npos) return "";
  const auto start = at + key.size() + 1;
  return text.substr(start, text.find_first_of(" \n", start) - start);
}

TEST_F(BadInput, ExportOverwriteReplacesNothingButAnEarlierExport) {
  const std::string export_over = "export --checkpoint " + quoted(checkpoint()) + " --overwrite --out ";
  // Its own input: the checkpoint, the run holding it, a directory inside it.
  expect_rejected(export_over + quoted(checkpoint()),
                  "export: " + checkpoint().string() + " is the checkpoint being exported; choose another output directory");
  expect_rejected(export_over + quoted(run_dir()),
                  "export: " + run_dir().string() + " contains the checkpoint being exported (" + checkpoint().string() + ")");
  expect_rejected(export_over + quoted(checkpoint() / "hf"),
                  "export: " + (checkpoint() / "hf").string() + " is inside the checkpoint being exported");
  // What another command made, or the user did.
  fs::copy(run_dir(), scratch_ / "other-run", fs::copy_options::recursive);
  testing::write_file(scratch_ / "notes.txt", "mine");
  testing::write_file(scratch_ / "home" / "thesis" / "chapter1.tex", "years of work");
  for (const fs::path& other : {scratch_ / "other-run", data_dir(), scratch_ / "home"}) {
    expect_rejected(export_over + quoted(other), "export: " + other.string() +
                                                     " does not look like a directory written by strait export "
                                                     "(no strait_export.json); refusing to replace it");
  }
  expect_rejected(export_over + quoted(scratch_ / "notes.txt"),
                  "export: " + (scratch_ / "notes.txt").string() + " exists and is not a directory; refusing to replace it");
  // Without --overwrite the answer is the same: --overwrite would not help.
  expect_rejected("export --checkpoint " + quoted(checkpoint()) + " --out " + quoted(scratch_ / "home"),
                  "does not look like a directory written by strait export");
  expect_rejected(export_over + "''", "--out: got an empty path, expected a directory", 2);
}

TEST_F(BadInput, ExportOverwriteReplacesAnEarlierExport) {
  const fs::path hf = scratch_ / "hf";
  auto result = testing::run_strait("export --checkpoint " + quoted(checkpoint()) + " --out " + quoted(hf));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(hf / "strait_export.json")).at("dtype"), "float32");
  expect_rejected("export --checkpoint " + quoted(checkpoint()) + " --out " + quoted(hf),
                  "export: " + hf.string() + " already exists; pass --overwrite to replace it");

  // A trailing separator names the same directory.
  const auto float32_size = fs::file_size(hf / "model.safetensors");
  result = testing::run_strait("export --checkpoint " + quoted(checkpoint()) + " --dtype bfloat16 --overwrite --out '" +
                               hf.string() + "/'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(hf / "strait_export.json")).at("dtype"), "bfloat16");
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(hf / "config.json")).at("torch_dtype"), "bfloat16");
  EXPECT_LT(fs::file_size(hf / "model.safetensors"), float32_size);
  std::set<std::string> entries;
  for (const auto& entry : fs::directory_iterator(scratch_.path())) entries.insert(entry.path().filename().string());
  EXPECT_EQ(entries, (std::set<std::string>{"data", "hf", "run"})) << "no staging or replaced copy is left behind";
}

TEST_F(BadInput, MissingCheckpoint) {
  expect_rejected("eval --checkpoint '" + (scratch_ / "nope").string() + "' --data '" + (data_dir() / "val_000000.bin").string() + "'",
                  "does not exist");
}

TEST_F(BadInput, ASecondTrainerOnARunDirectoryInUseStopsAtOnce) {
  // The first trainer takes 4 s for each of its two checkpoints; while it runs, a second one
  // with --resume and one with --overwrite must fail at once and change nothing.
  const fs::path busy = scratch_ / "busy";
  const std::string train = "'" STRAIT_BINARY "' --quiet train --data " + quoted(data_dir()) + " --out " + quoted(busy) +
                            " --preset nano --context-length 32 --batch-size 2 --threads 1 --eval-every 0 "
                            "--eval-batches 1 --checkpoint-every 2";
  const std::string script =
      "cd " + quoted(scratch_.path()) + "\n"
      "STRAIT_TEST_SLOW_CHECKPOINT_MS=4000 " + train + " --steps 4 > first.log 2>&1 &\n"
      "first=$!\n"
      "for i in $(seq 600); do [ -s " + quoted(busy / "metrics.jsonl") + " ] && break; sleep 0.05; done\n"
      "echo \"first=$first\"\n"
      "for mode in resume overwrite; do\n"
      "  start=$(date +%s%N)\n"
      "  " + train + " --steps 8 --$mode > second-$mode.log 2>&1\n"
      "  echo \"$mode-exit=$? $mode-ms=$(( ($(date +%s%N) - start) / 1000000 ))\"\n"
      "done\n"
      "wait $first; echo \"first-exit=$?\"\n";
  testing::write_file(scratch_ / "lock.sh", script);
  const auto others = testing::snapshot_tree(run_dir());
  const auto result = testing::run_command("bash " + quoted(scratch_ / "lock.sh"));
  const std::string first_pid = value_of(result.output, "first");
  ASSERT_FALSE(first_pid.empty()) << result.output;
  for (const std::string mode : {"resume", "overwrite"}) {
    const std::string log = testing::read_file(scratch_ / ("second-" + mode + ".log"));
    EXPECT_EQ(value_of(result.output, mode + "-exit"), "1") << result.output << log;
    EXPECT_NE(log.find("strait: error: run directory " + busy.string() + " is in use by process " + first_pid +
                       " (it holds " + (busy / ".lock").string() + ")"),
              std::string::npos)
        << log;
    const std::string milliseconds = value_of(result.output, mode + "-ms");
    ASSERT_FALSE(milliseconds.empty()) << result.output;
    EXPECT_LT(std::stoi(milliseconds), 4000) << "it must not wait for the first trainer";
  }
  EXPECT_EQ(value_of(result.output, "first-exit"), "0") << result.output << testing::read_file(scratch_ / "first.log");
  EXPECT_TRUE(others == testing::snapshot_tree(run_dir())) << "the other run changed";
  // The first run is whole and alone: its configuration, every step once, both checkpoints.
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(busy / "train_config.json")).at("steps"), 4);
  std::vector<int64_t> steps;
  for (const auto& line : read_metrics(busy / "metrics.jsonl")) steps.push_back(line.at("step").get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(fs::exists(checkpoint_dir(busy, 2)) && fs::exists(checkpoint_dir(busy, 4)));
  EXPECT_FALSE(fs::exists(busy / ".lock")) << "a finished run releases its lock";
}

TEST_F(BadInput, OutOfRangeEvalAndGenerateArguments) {
  const std::string generate = "generate --checkpoint " + quoted(checkpoint()) + " --prompt hello --max-tokens 5 ";
  const std::string eval = "eval --checkpoint " + quoted(checkpoint()) + " --data " + quoted(data_dir() / "val_000000.bin") + " ";
  for (const char* temperature : {"nan", "inf", "-1"}) {
    expect_rejected(generate + "--temperature " + temperature,
                    "--temperature: got '" + std::string(temperature) + "', expected a finite number >= 0", 2);
  }
  expect_rejected(generate + "--top-k -1", "--top-k: got '-1', expected an integer >= 0", 2);
  expect_rejected(generate + "--max-tokens -1", "--max-tokens: got '-1', expected an integer >= 0", 2);
  expect_rejected(generate + "--threads -1", "--threads: got '-1', expected an integer >= 0", 2);
  expect_rejected(eval + "--max-windows -1", "--max-windows: got '-1', expected an integer >= 0", 2);
  expect_rejected(eval + "--threads -3", "--threads: got '-3', expected an integer >= 0", 2);
  expect_rejected(eval + "--batch-size 0", "--batch-size: got '0', expected an integer >= 1", 2);
  // The bounds themselves are valid: greedy decoding over the whole vocabulary.
  const auto result = testing::run_strait(generate + "--temperature 0 --top-k 0 --threads 1");
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST_F(BadInput, NonFiniteWeightsAreRefusedOnLoad) {
  // A copy of the run whose newest checkpoint has one NaN weight, resealed.
  const fs::path run = scratch_ / "diverged";
  fs::copy(run_dir(), run, fs::copy_options::recursive);
  const fs::path weights = checkpoint_dir(run, 4) / "model.safetensors";
  const std::string poisoned = "model.layers.0.mlp.down_proj.weight";
  {
    const auto file = SafetensorsFile::load(weights);
    NamedTensors tensors;
    for (const auto& info : file.tensors()) tensors.emplace_back(info.name, tensor_from_file(file, info.name));
    bool found = false;
    for (auto& [name, tensor] : tensors) {
      if (name == poisoned) tensor.view(-1)[3] = std::nan(""), found = true;
    }
    ASSERT_TRUE(found) << poisoned;
    save_tensors(weights, tensors, file.metadata());
  }
  reseal(checkpoint_dir(run, 4));

  const std::string message = weights.string() + ": tensor '" + poisoned +
                              "' holds 1 non-finite value (NaN or infinity); refusing to load these weights";
  expect_rejected("eval --checkpoint " + quoted(checkpoint_dir(run, 4)) + " --data " + quoted(data_dir() / "val_000000.bin"),
                  message);
  expect_rejected("generate --checkpoint " + quoted(checkpoint_dir(run, 4)) + " --prompt hello --max-tokens 5", message);
  expect_rejected("export --checkpoint " + quoted(checkpoint_dir(run, 4)) + " --out " + quoted(scratch_ / "hf"), message);
  expect_rejected("--quiet train --data " + quoted(data_dir()) + " --out " + quoted(run) +
                      " --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  message);
}

TEST_F(BadInput, ATensorWhoseHeaderEntryWasDeletedIsNamedOnLoad) {
  // A copy of the run whose newest model.safetensors lost one header entry (its bytes stay, now
  // described by no tensor), resealed: the loader must name the tensor, not only the bytes.
  const fs::path run = scratch_ / "edited-header";
  fs::copy(run_dir(), run, fs::copy_options::recursive);
  const fs::path weights = checkpoint_dir(run, 4) / "model.safetensors";
  const std::string deleted = "model.layers.0.mlp.down_proj.weight";
  {
    const std::string bytes = testing::read_file(weights);
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = length << 8 | static_cast<uint8_t>(bytes[i]);
    auto header = nlohmann::json::parse(bytes.substr(8, length));
    ASSERT_EQ(header.erase(deleted), 1u);
    const std::string text = header.dump();
    std::string edited;
    for (int i = 0; i < 8; ++i) edited.push_back(static_cast<char>((uint64_t{text.size()} >> (8 * i)) & 0xff));
    testing::write_file(weights, edited + text + bytes.substr(8 + length));
  }
  reseal(checkpoint_dir(run, 4));

  const std::string message =
      weights.string() + ": the header lacks '" + deleted + "', so part of the data buffer belongs to no tensor (";
  expect_rejected("eval --checkpoint " + quoted(checkpoint_dir(run, 4)) + " --data " + quoted(data_dir() / "val_000000.bin"),
                  message);
  expect_rejected("--quiet train --data " + quoted(data_dir()) + " --out " + quoted(run) +
                      " --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  message);
}

TEST_F(BadInput, EditedCheckpointStateAndMisnamedStepsAreRefused) {
  // A valid-JSON edit of state.json (where the data cursor stands) would change the run silently.
  const fs::path edited = scratch_ / "edited";
  fs::copy(run_dir(), edited, fs::copy_options::recursive);
  const fs::path state_path = checkpoint_dir(edited, 4) / "state.json";
  auto state = nlohmann::json::parse(testing::read_file(state_path));
  state["step"] = 3;
  testing::write_file(state_path, state.dump(2));
  const std::string val = quoted(data_dir() / "val_000000.bin");
  expect_rejected("eval --checkpoint " + quoted(checkpoint_dir(edited, 4)) + " --data " + val,
                  state_path.string() + " was edited or is corrupt: its content has checksum ");
  expect_rejected("--quiet train --data " + quoted(data_dir()) + " --out " + quoted(edited) +
                      " --preset nano --context-length 32 --batch-size 2 --steps 6 --threads 1 --resume",
                  "(state.json must not be edited by hand)");
  // A checkpoint directory renamed to another step.
  const fs::path renamed = scratch_ / "renamed";
  fs::copy(run_dir(), renamed, fs::copy_options::recursive);
  fs::rename(checkpoint_dir(renamed, 4), checkpoint_dir(renamed, 6));
  expect_rejected("eval --checkpoint " + quoted(checkpoint_dir(renamed, 6)) + " --data " + val,
                  (checkpoint_dir(renamed, 6) / "state.json").string() + " records step 4 but its directory is named step-000006");
}

TEST_F(BadInput, UsageErrorsExitWithStatus2) {
  auto result = testing::run_strait("train --no-such-flag");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  result = testing::run_strait("");
  EXPECT_EQ(result.exit_code, 2) << result.output;
}

}  // namespace
}  // namespace strait
