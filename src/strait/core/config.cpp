#include "strait/core/config.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/core/suggest.h"
#include "strait/core/toml_values.h"

namespace strait {

namespace {

template <typename T>
using Field = T TrainConfig::*;

const std::vector<OptionSpec> kOptions = {
    {"data", "prepared data directory (from `strait prepare`)", &TrainConfig::data},
    {"out", "run directory for metrics, checkpoints and the model config", &TrainConfig::out},
    {"preset", "model preset: nano, micro, small or base", &TrainConfig::preset},
    {"hidden_size", "model width (overrides the preset)", &TrainConfig::hidden_size},
    {"intermediate_size", "SwiGLU hidden width (overrides the preset)", &TrainConfig::intermediate_size},
    {"num_layers", "decoder layers (overrides the preset)", &TrainConfig::num_layers},
    {"num_heads", "attention heads (overrides the preset)", &TrainConfig::num_heads},
    {"context_length", "maximum sequence length (overrides the preset)", &TrainConfig::context_length},
    {"tie_embeddings", "share the token embedding with the LM head", &TrainConfig::tie_embeddings},
    {"batch_size", "sequences per micro-step", &TrainConfig::batch_size},
    {"seq_len", "tokens per sequence (0 = the model's context length)", &TrainConfig::seq_len},
    {"grad_accum", "micro-steps accumulated per optimizer step", &TrainConfig::grad_accum},
    {"optimizer", "inner optimizer: adamw, or sgd (plain, no momentum)", &TrainConfig::optimizer},
    {"steps", "optimizer steps to train for", &TrainConfig::steps},
    {"lr", "peak learning rate", &TrainConfig::lr},
    {"min_lr_ratio", "final learning rate as a fraction of the peak", &TrainConfig::min_lr_ratio},
    {"warmup_steps", "linear warmup steps", &TrainConfig::warmup_steps},
    {"weight_decay", "weight decay (matrices only; AdamW: decoupled, SGD: added to the gradient)",
     &TrainConfig::weight_decay},
    {"beta1", "AdamW beta1", &TrainConfig::beta1},
    {"beta2", "AdamW beta2", &TrainConfig::beta2},
    {"adam_eps", "AdamW epsilon", &TrainConfig::adam_eps},
    {"grad_clip", "global gradient-norm clip (0 disables)", &TrainConfig::grad_clip},
    {"precision", "auto, fp32 or bf16-mixed (bf16 matrix products, fp32 weights and optimizer)",
     &TrainConfig::precision},
    {"eval_every", "validate every N steps (0 disables)", &TrainConfig::eval_every},
    {"eval_batches", "validation batches per evaluation", &TrainConfig::eval_batches},
    {"checkpoint_every", "checkpoint every N steps (0: final only)", &TrainConfig::checkpoint_every},
    {"keep_checkpoints", "checkpoints kept on disk (0 keeps all)", &TrainConfig::keep_checkpoints},
    {"log_every", "progress line every N steps", &TrainConfig::log_every},
    {"seed", "random seed for weight initialisation", &TrainConfig::seed},
    {"threads", "LibTorch threads (0 = all cores of this process's share)", &TrainConfig::threads},
    {"strategy",
     "auto (one process: single; several: ddp), ddp, zero3, or an outer method: local-sgd, diloco, sparseloco",
     &TrainConfig::strategy},
    {"inner", "method inside each replica of an outer method: auto, single, ddp or zero3", &TrainConfig::inner},
    {"replica_ranks", "ranks per replica of an outer method: a number, node, or auto (1)", &TrainConfig::replica_ranks},
    {"sync_every", "outer methods: inner steps between outer synchronisations (H)", &TrainConfig::sync_every},
    {"sync_every_seconds",
     "local-sgd, diloco: time-box each inner phase to S seconds instead of H steps (0: H steps); the outer average "
     "weights each replica by the tokens it trained",
     &TrainConfig::sync_every_seconds},
    {"throttle", "tests and benchmarks: R:F[,R:F...] makes replica R F times slower (each step it sleeps F - 1 times its fastest "
                 "step)",
     &TrainConfig::throttle},
    {"outer_lr", "diloco, sparseloco: outer SGD learning rate (0: the method's, 0.7 and 1)", &TrainConfig::outer_lr},
    {"outer_momentum", "diloco, sparseloco: outer SGD momentum (-1: the method's, 0.9 and 0)",
     &TrainConfig::outer_momentum},
    {"outer_nesterov", "diloco, sparseloco: Nesterov momentum in the outer SGD", &TrainConfig::outer_nesterov},
    {"outer_dtype", "local-sgd, diloco: wire dtype of the dense exchange (fp32, bf16, int8, int4)",
     &TrainConfig::outer_dtype},
    {"fragments",
     "diloco, sparseloco: streaming fragments P (strided layer groups, each synced on its own step of the H window)",
     &TrainConfig::fragments},
    {"overlap_steps", "diloco: inner steps tau a fragment's exchange runs in the background (< sync_every)",
     &TrainConfig::overlap_steps},
    {"fragment_mix",
     "diloco, sparseloco: alpha in [0, 1): a fragment becomes alpha * local + (1 - alpha) * global after its sync",
     &TrainConfig::fragment_mix},
    {"topk", "sparseloco: values kept per 4096 elements of a chunk (scaled for smaller chunks, at least 1)",
     &TrainConfig::topk},
    {"quant_bins", "sparseloco: quantization bins of the kept values (2 bits on the wire: 1 to 4)",
     &TrainConfig::quant_bins},
    {"error_decay", "sparseloco: beta in [0, 1], the error buffer's decay (e = beta e + delta)",
     &TrainConfig::error_decay},
    {"aggregate", "sparseloco: mean (over the replicas that kept a value) or sum (divided by the replicas)",
     &TrainConfig::aggregate},
    {"index_coding", "sparseloco: how positions travel: fixed (ceil(log2 C) bits), rice, bitmap, or auto (the smallest)",
     &TrainConfig::index_coding},
    {"bucket_mb", "DDP gradient bucket size in MiB", &TrainConfig::bucket_mb},
    {"zero_wire_dtype", "zero3: dtype of the weight gathers and gradient reduce-scatters (fp32, bf16)",
     &TrainConfig::zero_wire_dtype},
    {"zero_quantized_weights", "zero3 (ZeRO++ qwZ): gather the weight shards as block-quantized int8",
     &TrainConfig::zero_quantized_weights},
    {"zero_hpz_partition_size",
     "zero3 (ZeRO++ hpZ): 1 (off) or the ranks per node k: keep a 1/k secondary copy of gathered weights per node",
     &TrainConfig::zero_hpz_partition_size},
    {"zero_quantized_gradients",
     "zero3 (ZeRO++ qgZ): reduce gradients with a hierarchical int4 all-to-all (several nodes)",
     &TrainConfig::zero_quantized_gradients},
    {"comm_timeout_s", "seconds before a missing peer or stuck collective fails the run", &TrainConfig::comm_timeout_s},
    {"checkpoint_timeout_s", "seconds ranks wait for the slowest checkpoint writer", &TrainConfig::checkpoint_timeout_s},
    {"gloo_interface", "network interface for Gloo across machines (e.g. eth0; default $GLOO_SOCKET_IFNAME)",
     &TrainConfig::gloo_interface},
    {"stop_after", "end this process after step N with a checkpoint (e.g. a scheduler's time slot)",
     &TrainConfig::stop_after},
    {"resume", "continue from the newest checkpoint in the run directory", &TrainConfig::resume},
    {"overwrite", "replace an existing run directory", &TrainConfig::overwrite},
    {"resume_from", "continue from RUN/checkpoints/step-N (step-N or N) instead of the newest; later checkpoints "
                    "are removed",
     &TrainConfig::resume_from},
};

const OptionSpec* find_option(const std::string& key) {
  for (const auto& option : kOptions) {
    if (option.key == key) return &option;
  }
  return nullptr;
}

std::string unknown_key_message(const std::string& key, const std::string& source) {
  std::string message = source + ": unknown key '" + key + "'";
  std::vector<std::string> keys;
  for (const auto& option : kOptions) keys.push_back(option.key);
  const std::string closest = closest_match(key, keys);
  if (!closest.empty()) message += " (did you mean '" + closest + "'?)";
  return message;
}

std::string type_name(const OptionSpec& option) {
  switch (option.field.index()) {
    case 0: return "a string";
    case 1: return "an integer";
    case 2: return "a number";
    default: return "a boolean";
  }
}

// Stores a JSON value into the option's field, rejecting anything of another type
// (e.g. "steps": "200" or "lr": true).
void set_from_json(TrainConfig& config, const OptionSpec& option, const nlohmann::json& value,
                   const std::string& source) {
  auto mismatch = [&]() {
    return Error(source + ": key '" + option.key + "' must be " + type_name(option) + ", got " +
                 value.dump());
  };
  std::visit(
      [&](auto field) {
        using T = std::decay_t<decltype(config.*field)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!value.is_string()) throw mismatch();
          config.*field = value.get<std::string>();
        } else if constexpr (std::is_same_v<T, int64_t>) {
          if (!value.is_number_integer()) throw mismatch();
          config.*field = value.get<int64_t>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!value.is_number() || value.is_boolean()) throw mismatch();
          config.*field = value.get<double>();
        } else {
          if (!value.is_boolean()) throw mismatch();
          config.*field = value.get<bool>();
        }
      },
      option.field);
}

}  // namespace

const std::vector<OptionSpec>& train_options() { return kOptions; }

double outer_lr_of(const TrainConfig& config) {
  if (config.outer_lr > 0) return config.outer_lr;
  return config.strategy == "sparseloco" ? 1.0 : 0.7;
}

double outer_momentum_of(const TrainConfig& config) {
  if (config.outer_momentum >= 0) return config.outer_momentum;
  return config.strategy == "sparseloco" ? 0.0 : 0.9;
}

bool has_outer_method(const TrainConfig& config) {
  return config.strategy == "local-sgd" || config.strategy == "diloco" || config.strategy == "sparseloco";
}

std::map<int64_t, double> parse_throttle(const std::string& text) {
  std::map<int64_t, double> factors;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string entry = text.substr(start, end - start);
    const size_t colon = entry.find(':');
    int64_t replica = -1;
    double factor = 0;
    size_t replica_used = 0, factor_used = 0;
    try {
      if (colon != std::string::npos) {
        replica = std::stoll(entry.substr(0, colon), &replica_used);
        factor = std::stod(entry.substr(colon + 1), &factor_used);
      }
    } catch (const std::exception&) {
      replica = -1;
    }
    const bool well_formed = colon != std::string::npos && replica_used == colon && colon > 0 &&
                             factor_used == entry.size() - colon - 1 && replica >= 0;
    if (!well_formed || !std::isfinite(factor) || factor < 1) {
      throw Error("invalid configuration: throttle entry '" + entry +
                  "' must be REPLICA:FACTOR with a replica index >= 0 and a factor >= 1, e.g. 3:2");
    }
    if (!factors.emplace(replica, factor).second) {
      throw Error("invalid configuration: throttle names replica " + std::to_string(replica) + " twice");
    }
    start = end + 1;
  }
  return factors;
}

// DeepSpeed keeps its ZeRO settings in a "zero_optimization" section; strait reads the ones it
// shares with DeepSpeed from there, so a DeepSpeed config's section carries over as it is:
// "stage": 3 selects zero3, and the ZeRO++ keys keep their names. Any other key of the section is
// refused by name, rather than ignored: a user must not believe a DeepSpeed knob took effect.
namespace {

constexpr const char* kDeepSpeedZeroSection = "zero_optimization";

void lift_deepspeed_zero_section(nlohmann::json& entries, const std::string& source) {
  if (!entries.contains(kDeepSpeedZeroSection)) return;
  const nlohmann::json section = entries.at(kDeepSpeedZeroSection);
  entries.erase(kDeepSpeedZeroSection);
  const std::string where = source + ": " + kDeepSpeedZeroSection;
  if (!section.is_object()) throw Error(where + " must be a table of DeepSpeed ZeRO settings");
  const std::vector<std::string> shared = {"zero_hpz_partition_size", "zero_quantized_weights",
                                           "zero_quantized_gradients"};
  for (const auto& [key, value] : section.items()) {
    if (key == "stage") {
      if (value != 3) throw Error(where + ".stage must be 3 (strait implements ZeRO stage 3), got " + value.dump());
      entries["strategy"] = "zero3";
    } else if (std::find(shared.begin(), shared.end(), key) != shared.end()) {
      entries[key] = value;
    } else {
      throw Error(where + "." + key + " is not a setting strait reads (from this section it reads stage, " +
                  "zero_hpz_partition_size, zero_quantized_weights and zero_quantized_gradients)");
    }
  }
}

}  // namespace

void load_config_file(const std::filesystem::path& path, TrainConfig& config) {
  const std::string source = path.string();
  const std::string text = read_whole_file(path);
  nlohmann::json entries = nlohmann::json::object();
  const std::string extension = path.extension().string();
  if (extension == ".toml") {
    for (const auto& [key, node] : parse_toml(text, source)) {
      const std::string name(key.str());
      if (name == kDeepSpeedZeroSection && node.is_table()) {  // [zero_optimization], as DeepSpeed nests it
        entries[name] = nlohmann::json::object();
        for (const auto& [inner_key, inner_node] : *node.as_table()) {
          const std::string inner(inner_key.str());
          entries[name][inner] = plain_toml_value(inner_node, source + ": key '" + name + "." + inner + "'");
        }
        continue;
      }
      entries[name] = plain_toml_value(node, source + ": key '" + name + "'");
    }
  } else if (extension == ".json") {
    try {
      entries = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& error) {
      throw Error(source + ": invalid JSON: " + error.what());
    }
    if (!entries.is_object()) throw Error(source + ": the config must be a JSON object of option keys");
  } else {
    throw Error(source + ": unknown config format '" + extension + "' (expected .toml or .json)");
  }
  lift_deepspeed_zero_section(entries, source);
  // Check every key before applying any, so a bad file changes nothing.
  TrainConfig updated = config;
  for (const auto& [key, value] : entries.items()) {
    const OptionSpec* option = find_option(key);
    if (option == nullptr) throw Error(unknown_key_message(key, source));
    set_from_json(updated, *option, value, source);
  }
  config = updated;
}

void set_option_from_text(TrainConfig& config, const OptionSpec& option, const std::string& text) {
  std::string flag = "--" + option.key;
  for (char& c : flag) c = (c == '_') ? '-' : c;
  auto mismatch = [&]() { return Error(flag + " must be " + type_name(option) + ", got '" + text + "'"); };
  std::visit(
      [&](auto field) {
        using T = std::decay_t<decltype(config.*field)>;
        if constexpr (std::is_same_v<T, std::string>) {
          config.*field = text;
        } else if constexpr (std::is_same_v<T, int64_t>) {
          size_t used = 0;
          try {
            config.*field = std::stoll(text, &used);
          } catch (const std::exception&) {
            throw mismatch();
          }
          if (used != text.size()) throw mismatch();
        } else if constexpr (std::is_same_v<T, double>) {
          size_t used = 0;
          try {
            config.*field = std::stod(text, &used);
          } catch (const std::exception&) {
            throw mismatch();
          }
          if (used != text.size()) throw mismatch();
        } else {
          if (text == "true" || text == "1") config.*field = true;
          else if (text == "false" || text == "0") config.*field = false;
          else throw mismatch();
        }
      },
      option.field);
}

namespace {

bool is_one_of(const std::string& value, std::initializer_list<const char*> choices) {
  for (const char* choice : choices) {
    if (value == choice) return true;
  }
  return false;
}

// The combinations that do not depend on the number of processes (those that do are checked by
// make_strategy, still before any process connects).
void validate_strategy_choice(const TrainConfig& config) {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw Error("invalid configuration: " + message);
  };
  require(is_one_of(config.strategy, {"auto", "ddp", "zero3", "local-sgd", "diloco", "sparseloco"}),
          "strategy must be auto, ddp, zero3, local-sgd, diloco or sparseloco, got '" + config.strategy + "'");
  require(is_one_of(config.zero_wire_dtype, {"fp32", "bf16"}),
          "zero_wire_dtype must be fp32 or bf16, got '" + config.zero_wire_dtype + "'");
  require(config.zero_hpz_partition_size >= 1,
          "zero_hpz_partition_size must be >= 1 (1: off), got " + std::to_string(config.zero_hpz_partition_size));
  const bool zero_plus_plus =
      config.zero_quantized_weights || config.zero_quantized_gradients || config.zero_hpz_partition_size > 1;
  require(is_one_of(config.inner, {"auto", "single", "ddp", "zero3"}),
          "inner must be auto, single, ddp or zero3, got '" + config.inner + "'");
  require(!zero_plus_plus || config.strategy == "zero3" || config.inner == "zero3",
          "zero_quantized_weights, zero_quantized_gradients and zero_hpz_partition_size (ZeRO++) need --strategy zero3 "
          "or --inner zero3, not '" + config.strategy + "'");
  const bool outer = has_outer_method(config);
  if (!outer) {
    require(config.inner == "auto", "inner '" + config.inner +
                                        "' needs an outer method (--strategy local-sgd, diloco or sparseloco); '" +
                                        config.strategy + "' synchronises every rank every step by itself");
    require(config.replica_ranks == "auto", "replica_ranks '" + config.replica_ranks +
                                                "' needs an outer method (--strategy local-sgd, diloco or sparseloco); with '" +
                                                config.strategy + "' the whole job is one replica");
  }
  require(is_one_of(config.outer_dtype, {"fp32", "bf16", "int8", "int4"}),
          "outer_dtype must be fp32, bf16, int8 or int4, got '" + config.outer_dtype + "'");
  require(std::isfinite(config.outer_lr) && config.outer_lr >= 0,
          "outer_lr must be a positive number (or 0: the method's default)");
  require(config.outer_momentum == -1 || (config.outer_momentum >= 0 && config.outer_momentum < 1),
          "outer_momentum must be in [0, 1) (or -1: the method's default)");
  if (config.replica_ranks != "auto" && config.replica_ranks != "node") {
    size_t used = 0;
    int64_t ranks = 0;
    try {
      ranks = std::stoll(config.replica_ranks, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == config.replica_ranks.size() && ranks >= 1,
            "replica_ranks must be a positive number of ranks, node or auto, got '" + config.replica_ranks + "'");
  }
  require(config.sync_every >= 1, "sync_every must be >= 1 (inner steps between outer synchronisations), got " +
                                       std::to_string(config.sync_every));
  require(config.fragments >= 1, "fragments must be >= 1, got " + std::to_string(config.fragments));
  require(std::isfinite(config.sync_every_seconds) && config.sync_every_seconds >= 0,
          "sync_every_seconds must be >= 0 (0: sync every sync_every steps), got " +
              std::to_string(config.sync_every_seconds));
  if (config.sync_every_seconds > 0) {
    require(config.strategy == "local-sgd" || config.strategy == "diloco",
            "sync_every_seconds (a time-boxed inner phase, replicas weighted by the tokens they trained) needs the "
            "dense exchange of --strategy local-sgd or diloco, got '" + config.strategy + "'");
    require(config.fragments == 1 && config.overlap_steps == 0 && config.fragment_mix == 0,
            "sync_every_seconds syncs the whole model when the time is up; it cannot be combined with streaming "
            "DiLoCo's fragments, overlap_steps or fragment_mix");
  }
  parse_throttle(config.throttle);
  require(config.overlap_steps >= 0 && config.overlap_steps < config.sync_every,
          "overlap_steps must be in [0, sync_every) (a fragment's exchange must land before its next sync), got " +
              std::to_string(config.overlap_steps) + " with sync_every " + std::to_string(config.sync_every));
  require(config.fragment_mix >= 0 && config.fragment_mix < 1,
          "fragment_mix must be in [0, 1), got " + std::to_string(config.fragment_mix));
  const bool streaming = config.fragments > 1 || config.overlap_steps > 0 || config.fragment_mix > 0;
  require(!streaming || config.strategy == "diloco" || config.strategy == "sparseloco",
          "fragments, overlap_steps and fragment_mix are streaming DiLoCo's: they need --strategy diloco or "
          "sparseloco, got '" + config.strategy + "'");
  if (config.strategy == "sparseloco") {
    require(config.overlap_steps == 0,
            "overlap_steps needs the dense exchange of --strategy diloco (sparseloco's error buffers are updated "
            "at each sync; its fragments sync without overlap)");
    require(config.outer_dtype == "fp32", "outer_dtype '" + config.outer_dtype +
                                              "' is for the dense exchange of local-sgd and diloco; sparseloco "
                                              "sends top-k values in 2 bits (see --topk, --quant-bins)");
  }
  require(config.topk >= 1 && config.topk <= 4096,
          "topk must be in [1, 4096] (values kept per 4096 elements), got " + std::to_string(config.topk));
  require(config.quant_bins >= 1 && config.quant_bins <= 4,
          "quant_bins must be in [1, 4] (codes travel in 2 bits), got " + std::to_string(config.quant_bins));
  require(config.error_decay >= 0 && config.error_decay <= 1,
          "error_decay must be in [0, 1], got " + std::to_string(config.error_decay));
  require(is_one_of(config.aggregate, {"mean", "sum"}),
          "aggregate must be mean or sum, got '" + config.aggregate + "'");
  require(is_one_of(config.index_coding, {"fixed", "rice", "bitmap", "auto"}),
          "index_coding must be fixed, rice, bitmap or auto, got '" + config.index_coding + "'");
}

}  // namespace

void validate(const TrainConfig& config) {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw Error("invalid configuration: " + message);
  };
  require(!config.data.empty(), "data is not set (pass --data DIR, a directory made by `strait prepare`)");
  require(!config.out.empty(), "out is not set (pass --out RUN_DIR)");
  for (auto [name, value] : {std::pair{"hidden_size", config.hidden_size}, {"intermediate_size", config.intermediate_size},
                             {"num_layers", config.num_layers}, {"num_heads", config.num_heads},
                             {"context_length", config.context_length}, {"seq_len", config.seq_len},
                             {"threads", config.threads}, {"keep_checkpoints", config.keep_checkpoints},
                             {"eval_every", config.eval_every}, {"checkpoint_every", config.checkpoint_every},
                             {"warmup_steps", config.warmup_steps}, {"stop_after", config.stop_after}}) {
    require(value >= 0, std::string(name) + " must be >= 0, got " + std::to_string(value));
  }
  for (auto [name, value] : {std::pair{"batch_size", config.batch_size}, {"grad_accum", config.grad_accum},
                             {"steps", config.steps}, {"eval_batches", config.eval_batches},
                             {"log_every", config.log_every}}) {
    require(value >= 1, std::string(name) + " must be >= 1, got " + std::to_string(value));
  }
  require(std::isfinite(config.lr) && config.lr > 0, "lr must be a positive number");
  require(config.min_lr_ratio >= 0 && config.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]");
  require(config.optimizer == "adamw" || config.optimizer == "sgd",
          "optimizer must be adamw or sgd, got '" + config.optimizer + "'");
  require(config.weight_decay >= 0, "weight_decay must be >= 0");
  require(config.beta1 >= 0 && config.beta1 < 1, "beta1 must be in [0, 1)");
  require(config.beta2 >= 0 && config.beta2 < 1, "beta2 must be in [0, 1)");
  require(config.adam_eps > 0, "adam_eps must be > 0");
  require(config.precision == "auto" || config.precision == "fp32" || config.precision == "bf16-mixed",
          "precision must be auto, fp32 or bf16-mixed, got '" + config.precision + "'");
  require(config.bucket_mb > 0, "bucket_mb must be > 0");
  require(config.comm_timeout_s > 0, "comm_timeout_s must be > 0");
  require(config.checkpoint_timeout_s > 0, "checkpoint_timeout_s must be > 0");
  validate_strategy_choice(config);
  require(config.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)");
  require(!(config.resume && config.overwrite), "resume and overwrite exclude each other");
  require(config.resume_from.empty() || !config.overwrite, "resume_from and overwrite exclude each other");
}

nlohmann::json to_json(const TrainConfig& config) {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& option : kOptions) {
    std::visit([&](auto field) { json[option.key] = config.*field; }, option.field);
  }
  return json;
}

nlohmann::json shared_settings(const TrainConfig& config) {
  nlohmann::json json = to_json(config);
  for (const char* per_machine : {"data", "out", "gloo_interface", "threads"}) json.erase(per_machine);
  return json;
}

std::string describe_differences(const nlohmann::json& first, const std::string& first_where,
                                 const nlohmann::json& second, const std::string& second_where) {
  auto value_in = [](const nlohmann::json& object, const std::string& key) {
    return object.contains(key) ? object.at(key).dump() : std::string("none");
  };
  std::string differences;
  auto compare = [&](const std::string& key) {
    const std::string a = value_in(first, key), b = value_in(second, key);
    if (a == b) return;
    differences += (differences.empty() ? "" : ", ") + key + " " + a + " " + first_where + " vs " + b + " " + second_where;
  };
  for (const auto& [key, value] : first.items()) compare(key);
  for (const auto& [key, value] : second.items()) {
    if (!first.contains(key)) compare(key);
  }
  return differences;
}

TrainConfig train_config_from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) throw Error(source + ": the training config must be a JSON object");
  TrainConfig config;
  for (const auto& [key, value] : json.items()) {
    const OptionSpec* option = find_option(key);
    if (option == nullptr) throw Error(unknown_key_message(key, source));
    set_from_json(config, *option, value, source);
  }
  return config;
}

}  // namespace strait
