#include "strait/train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <regex>

#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/model/tensor_io.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "strait-checkpoint";
constexpr int kVersion = 3;  // 2 added placement, world_size and rank directories; 3 manifest_xxh64
constexpr const char* kManifestKey = "manifest_xxh64";
constexpr int kOldestReadable = 1;
const char* const kTokenizerFiles[] = {"tokenizer.json", "tokenizer.model"};
constexpr const char* kStrategyFile = "strategy.safetensors";
// The tensor of optimizer.safetensors that holds the CPU generator state.
constexpr const char* kRngTensor = "rng.cpu";

NamedTensors named_tensors(const std::vector<NamedParameter>& parameters) {
  NamedTensors tensors;
  for (const auto& parameter : parameters) tensors.emplace_back(parameter.name, parameter.tensor);
  return tensors;
}

NamedTensors model_tensors(const LlamaModel& model) { return named_tensors(model.parameters()); }

// AdamW's moments; nothing for SGD, which keeps no state.
NamedTensors optimizer_tensors(const Optimizer& optimizer) {
  NamedTensors tensors;
  const auto& parameters = optimizer.parameters();
  for (size_t i = 0; i < optimizer.exp_avg().size(); ++i) {
    tensors.emplace_back("exp_avg." + parameters[i].name, optimizer.exp_avg()[i]);
    tensors.emplace_back("exp_avg_sq." + parameters[i].name, optimizer.exp_avg_sq()[i]);
  }
  return tensors;
}

std::optional<int64_t> step_of(const fs::path& dir) {
  static const std::regex pattern(R"(step-(\d+))");
  std::smatch match;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, match, pattern)) return std::nullopt;
  return std::stoll(match[1]);
}

std::string rank_dir_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof(name), "rank-%05d", rank);
  return name;
}

fs::path per_rank_staging_dir(const fs::path& run_dir, int64_t step) {
  const fs::path final_dir = checkpoint_dir(run_dir, step);
  return final_dir.parent_path() / ("." + final_dir.filename().string() + ".ranks");
}

// model.safetensors (the weights the optimizer updates: the model's, or a rank's shard of them)
// and optimizer.safetensors (moments and the RNG state) into `dir`.
void write_model_and_optimizer(const fs::path& dir, const Optimizer& optimizer) {
  save_tensors(dir / "model.safetensors", named_tensors(optimizer.parameters()), {{"format", "pt"}});
  NamedTensors optimizer_state = optimizer_tensors(optimizer);
  optimizer_state.emplace_back(kRngTensor, at::detail::getDefaultCPUGenerator().get_state());
  save_tensors(dir / "optimizer.safetensors", optimizer_state);
}

// Every regular file under `dir`, by its path relative to `dir`, with its checksum.
nlohmann::json checksums_of(const fs::path& dir) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files[fs::relative(entry.path(), dir).generic_string()] = xxh64_file_hex(entry.path());
  }
  return files;
}

// NaN or infinite weights load without complaint and surface later as a null loss or garbage
// tokens; refuse them on load instead, naming the tensor. Checked on the file, before any
// destination changes.
void require_finite(const torch::Tensor& weights, const std::string& source, const std::string& name) {
  const int64_t bad = torch::isfinite(weights).logical_not().sum().item<int64_t>();
  if (bad > 0) {
    throw Error(source + ": tensor '" + name + "' holds " + std::to_string(bad) + " non-finite value" +
                (bad == 1 ? "" : "s") + " (NaN or infinity); refusing to load these weights");
  }
}

void check_finite_weights(const SafetensorsFile& file, const NamedTensors& parameters) {
  for (const auto& [name, parameter] : parameters) {
    if (!file.contains(name)) continue;  // load_into names the missing tensor
    require_finite(tensor_from_file(file, name), file.path().string(), name);
  }
}

// The model's weights from `file`, checked first.
void load_weights(const SafetensorsFile& file, const LlamaModel& model) {
  const NamedTensors parameters = model_tensors(model);
  check_finite_weights(file, parameters);
  load_into(file, parameters);
}

// The strategy state file in `dir` holding every tensor of `state`, checked; none when `state` is
// empty.
std::optional<SafetensorsFile> strategy_state_file(const fs::path& dir, const NamedTensors& state) {
  if (state.empty()) return std::nullopt;
  if (!fs::exists(dir / kStrategyFile)) {
    throw Error("checkpoint " + dir.string() + " holds no " + kStrategyFile +
                " (the outer method's state); it was written by a strategy without one");
  }
  SafetensorsFile file = SafetensorsFile::load(dir / kStrategyFile, names_of(state));
  for (const auto& [name, tensor] : state) file.info(name);
  return file;
}

template <typename T>
T required(const nlohmann::json& json, const char* key, const fs::path& source) {
  if (!json.contains(key)) throw Error(source.string() + ": missing '" + key + "'");
  try {
    return json.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(source.string() + ": '" + key + "' has the wrong type");
  }
}

}  // namespace

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return found;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (auto step = step_of(entry.path()); step && entry.is_directory()) found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

fs::path checkpoint_dir(const fs::path& run_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%06lld", static_cast<long long>(step));
  return run_dir / "checkpoints" / name;
}

void save_rank_state(const fs::path& run_dir, int64_t step, int rank, const Optimizer& optimizer,
                     const NamedTensors& rank_strategy_state) {
  const fs::path dir = per_rank_staging_dir(run_dir, step) / rank_dir_name(rank);
  fs::create_directories(dir);
  write_model_and_optimizer(dir, optimizer);
  if (!rank_strategy_state.empty()) save_tensors(dir / kStrategyFile, rank_strategy_state);
}

void save_checkpoint(const fs::path& run_dir, const CheckpointState& state, const Optimizer& optimizer,
                     const fs::path& data_dir, const NamedTensors& strategy_state) {
  const fs::path final_dir = checkpoint_dir(run_dir, state.step);
  fs::create_directories(final_dir.parent_path());
  StagedDirectory staged(final_dir);
  const fs::path& dir = staged.staging_path();

  // Sharded: no rank holds the whole model; load_model assembles it from the rank directories.
  if (state.placement != Placement::Sharded) write_model_and_optimizer(dir, optimizer);
  if (!strategy_state.empty()) save_tensors(dir / kStrategyFile, strategy_state);
  for (const char* name : kTokenizerFiles) {
    if (fs::exists(data_dir / name)) {
      atomic_write_file(dir / name, read_whole_file(data_dir / name));
    }
  }
  const fs::path ranks_dir = per_rank_staging_dir(run_dir, state.step);
  if (state.placement != Placement::Replicated) {
    for (int rank = 0; rank < state.world_size; ++rank) {
      const fs::path written = ranks_dir / rank_dir_name(rank);
      if (!fs::is_directory(written)) {
        throw Error("checkpoint of step " + std::to_string(state.step) + ": rank " + std::to_string(rank) +
                    " wrote no state to " + written.string());
      }
      fs::rename(written, dir / rank_dir_name(rank));
    }
  }
  const nlohmann::json files = checksums_of(dir);
  nlohmann::json json = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", state.step},
      {"optimizer_steps", state.optimizer_steps},
      {"cursor", data::cursor_to_json(state.cursor)},
      {"train_config", to_json(state.train_config)},
      {"model_config", to_hf_config(state.model_config)},
      {"placement", to_string(state.placement)},
      {"world_size", state.world_size},
      {"files", files},
  };
  if (!state.data_files.is_null()) json["data_files"] = state.data_files;
  if (state.placement == Placement::Sharded) json["shard_ranks"] = state.shard_ranks;
  json[kManifestKey] = manifest_checksum(json);
  atomic_write_file(dir / "state.json", json.dump(2) + "\n");
  // If a previous attempt at this step was interrupted after publishing (impossible to tell
  // apart from a finished one), the existing directory is valid and must not be clobbered.
  if (fs::exists(final_dir)) throw Error("checkpoint " + final_dir.string() + " already exists");
  staged.commit();
  fs::remove_all(ranks_dir);  // emptied by the moves above (or never made)
}

std::string manifest_checksum(nlohmann::json state) {
  state.erase(kManifestKey);
  const std::string canonical = state.dump();
  return xxh64_hex(canonical.data(), canonical.size());
}

CheckpointState read_checkpoint_state(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw Error("checkpoint " + dir.string() + " does not exist or is not a directory");
  const fs::path state_path = dir / "state.json";
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_whole_file(state_path));
  } catch (const nlohmann::json::parse_error& error) {
    throw Error(state_path.string() + ": corrupt checkpoint state (invalid JSON: " + error.what() + ")");
  }
  if (!json.is_object() || json.value("format", "") != kFormat) {
    throw Error(state_path.string() + ": not a strait checkpoint (missing \"format\": \"" + kFormat + "\")");
  }
  const int version = required<int>(json, "version", state_path);
  if (version < kOldestReadable || version > kVersion) {
    throw Error(state_path.string() + ": checkpoint version " + json["version"].dump() + " is not supported (this strait reads versions " +
                std::to_string(kOldestReadable) + " to " + std::to_string(kVersion) + ")");
  }
  if (version >= 3) {
    const auto recorded = required<std::string>(json, kManifestKey, state_path);
    const std::string actual = manifest_checksum(json);
    if (actual != recorded) {
      throw Error(state_path.string() + " was edited or is corrupt: its content has checksum " + actual + ", not the " +
                  recorded + " recorded in it (state.json must not be edited by hand)");
    }
  }
  const int64_t step = required<int64_t>(json, "step", state_path);
  if (const std::optional<int64_t> named = step_of(dir); named && *named != step) {
    throw Error(state_path.string() + " records step " + std::to_string(step) + " but its directory is named " +
                dir.filename().string());
  }
  const auto files = required<nlohmann::json>(json, "files", state_path);
  for (const auto& [name, expected] : files.items()) {
    const fs::path file = dir / name;
    if (!fs::exists(file)) throw Error("checkpoint " + dir.string() + " is incomplete: " + name + " is missing");
    const std::string actual = xxh64_file_hex(file);
    if (!expected.is_string() || actual != expected.get<std::string>()) {
      throw Error("checkpoint file " + file.string() + " is corrupt: checksum " + actual + " does not match " +
                  expected.dump() + " recorded in state.json");
    }
  }
  CheckpointState state;
  state.step = step;
  state.optimizer_steps = required<int64_t>(json, "optimizer_steps", state_path);
  if (json.contains("data_files")) state.data_files = json.at("data_files");
  state.cursor = data::cursor_from_json(required<nlohmann::json>(json, "cursor", state_path));
  state.train_config = train_config_from_json(required<nlohmann::json>(json, "train_config", state_path),
                                              state_path.string() + " train_config");
  state.model_config = from_hf_config(required<nlohmann::json>(json, "model_config", state_path),
                                      state_path.string() + " model_config");
  if (version >= 2) {
    const auto placement = required<std::string>(json, "placement", state_path);
    bool known = false;
    for (Placement candidate : {Placement::Replicated, Placement::PerRank, Placement::Sharded}) {
      if (placement == to_string(candidate)) state.placement = candidate, known = true;
    }
    if (!known) {
      throw Error(state_path.string() + ": placement '" + placement + "' is none of replicated, per_rank, sharded");
    }
    state.world_size = required<int64_t>(json, "world_size", state_path);
    if (state.world_size < 1) throw Error(state_path.string() + ": world_size must be >= 1");
    // Written since ZeRO-3 runs inside replicas; before, a sharded checkpoint was one model.
    state.shard_ranks = json.contains("shard_ranks") ? required<int64_t>(json, "shard_ranks", state_path) : state.world_size;
    if (state.shard_ranks < 1 || state.world_size % state.shard_ranks != 0) {
      throw Error(state_path.string() + ": shard_ranks " + std::to_string(state.shard_ranks) +
                  " does not divide world_size " + std::to_string(state.world_size));
    }
  }
  std::vector<std::string> needed;
  if (state.placement != Placement::Sharded) needed = {"model.safetensors", "optimizer.safetensors"};
  for (int rank = 0; state.placement != Placement::Replicated && rank < state.world_size; ++rank) {
    needed.push_back(rank_dir_name(rank) + "/model.safetensors");
    needed.push_back(rank_dir_name(rank) + "/optimizer.safetensors");
  }
  for (const auto& name : needed) {
    if (!files.contains(name)) throw Error(state_path.string() + ": lists no checksum for " + name);
  }
  return state;
}

void load_checkpoint(const fs::path& dir, LlamaModel& model, Optimizer* optimizer, int rank,
                     const NamedTensors& strategy_state, const NamedTensors& rank_strategy_state) {
  const CheckpointState state = read_checkpoint_state(dir);
  if (state.placement != Placement::Replicated && (rank < 0 || rank >= state.world_size)) {
    throw Error("checkpoint " + dir.string() + " holds the state of ranks 0.." + std::to_string(state.world_size - 1) +
                ", not of rank " + std::to_string(rank));
  }
  const fs::path files = state.placement != Placement::Replicated ? dir / rank_dir_name(rank) : dir;
  if (state.placement == Placement::Sharded && optimizer == nullptr) {
    throw Error("checkpoint " + dir.string() + " is sharded: each rank holds part of the weights (load it with load_model)");
  }
  // Where the weights go: the model, or for a sharded checkpoint this rank's shard, which is
  // what its optimizer updates.
  const NamedTensors destination = optimizer != nullptr ? named_tensors(optimizer->parameters()) : model_tensors(model);
  const auto weights = SafetensorsFile::load(files / "model.safetensors", names_of(destination));
  check_finite_weights(weights, destination);
  if (optimizer == nullptr) {
    load_into(weights, destination);
    return;
  }
  // Validate both files completely before changing any state.
  NamedTensors moments = optimizer_tensors(*optimizer);
  std::vector<std::string> optimizer_names = names_of(moments);
  optimizer_names.push_back(kRngTensor);
  const auto optimizer_file = SafetensorsFile::load(files / "optimizer.safetensors", optimizer_names);
  const std::optional<SafetensorsFile> strategy_file = strategy_state_file(dir, strategy_state);
  const std::optional<SafetensorsFile> rank_strategy_file = strategy_state_file(files, rank_strategy_state);
  auto rng_state = tensor_from_file(optimizer_file, kRngTensor);
  for (const auto& [name, tensor] : moments) optimizer_file.info(name);
  load_into(weights, destination);
  load_into(optimizer_file, moments);
  if (strategy_file) load_into(*strategy_file, strategy_state);
  if (rank_strategy_file) load_into(*rank_strategy_file, rank_strategy_state);
  optimizer->set_step_count(state.optimizer_steps);
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
  generator.set_state(rng_state);
}

LlamaModel load_model(const fs::path& dir) {
  const CheckpointState state = read_checkpoint_state(dir);
  LlamaModel model(state.model_config);
  if (state.placement != Placement::Sharded) {
    load_weights(SafetensorsFile::load(dir / "model.safetensors", names_of(model_tensors(model))), model);
    return model;
  }
  // Each rank's file holds, under the parameter's name, the contiguous part of it that lies in
  // the rank's shard (none if it lies elsewhere), in rank order: a parameter is the
  // concatenation of its parts.
  std::vector<SafetensorsFile> shards;
  for (int rank = 0; rank < state.shard_ranks; ++rank) {
    shards.push_back(SafetensorsFile::load(dir / rank_dir_name(rank) / "model.safetensors"));
  }
  torch::NoGradGuard no_grad;
  for (const auto& parameter : model.parameters()) {
    std::vector<torch::Tensor> parts;
    for (const auto& shard : shards) {
      if (shard.contains(parameter.name)) parts.push_back(tensor_from_file(shard, parameter.name).reshape({-1}));
    }
    const int64_t found = parts.empty() ? 0 : torch::cat(parts).numel();
    if (found != parameter.tensor.numel()) {
      throw Error("sharded checkpoint " + dir.string() + ": the ranks' parts of '" + parameter.name + "' hold " +
                  std::to_string(found) + " values, not its " + std::to_string(parameter.tensor.numel()));
    }
    const torch::Tensor whole = torch::cat(parts).view(parameter.tensor.sizes());
    require_finite(whole, "sharded checkpoint " + dir.string(), parameter.name);
    parameter.tensor.copy_(whole);
  }
  return model;
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  auto found = list_checkpoints(run_dir);
  if (found.empty()) return std::nullopt;
  return found.back().second;
}

void prune_checkpoints(const fs::path& run_dir, int64_t keep) {
  if (keep <= 0) return;
  auto found = list_checkpoints(run_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove_all(found[i].second);
}

}  // namespace strait
