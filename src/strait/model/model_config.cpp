#include "strait/model/model_config.h"

#include "strait/core/config.h"
#include "strait/core/error.h"

namespace strait {

namespace {

struct Preset {
  const char* name;
  int64_t hidden_size, intermediate_size, num_layers, num_heads, context_length;
};

// Widths are multiples of 8 and the SwiGLU width is ~8/3 of the model width, as in Llama.
constexpr Preset kPresets[] = {
    {"nano", 64, 176, 2, 4, 64},
    {"micro", 128, 352, 4, 4, 128},
    {"small", 256, 688, 6, 8, 256},
    {"base", 512, 1376, 8, 8, 512},
};

}  // namespace

int64_t ModelConfig::num_non_embedding_parameters() const {
  const int64_t C = hidden_size, F = intermediate_size;
  const int64_t per_layer = 4 * C * C + 3 * C * F + 2 * C;
  return num_layers * per_layer + C;  // + final norm
}

int64_t ModelConfig::num_parameters() const {
  const int64_t embeddings = vocab_size * hidden_size;
  return num_non_embedding_parameters() + embeddings * (tie_embeddings ? 1 : 2);
}

void ModelConfig::validate() const {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw Error("invalid model configuration: " + message);
  };
  require(vocab_size >= 2 && vocab_size <= 65536, "vocab_size must be in [2, 65536] (uint16 tokens), got " +
                                                      std::to_string(vocab_size));
  require(hidden_size >= 1, "hidden_size must be >= 1");
  require(intermediate_size >= 1, "intermediate_size must be >= 1");
  require(num_layers >= 1, "num_layers must be >= 1");
  require(num_heads >= 1, "num_heads must be >= 1");
  require(hidden_size % num_heads == 0, "hidden_size " + std::to_string(hidden_size) +
                                            " is not divisible by num_heads " + std::to_string(num_heads));
  require(head_dim() % 2 == 0, "the head dimension hidden_size/num_heads = " + std::to_string(head_dim()) +
                                   " must be even for rotary embeddings");
  require(context_length >= 1, "context_length must be >= 1");
  require(rope_theta > 0, "rope_theta must be > 0");
  require(rms_norm_eps > 0, "rms_norm_eps must be > 0");
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& preset : kPresets) names.emplace_back(preset.name);
  return names;
}

ModelConfig model_preset(const std::string& name, int64_t vocab_size) {
  for (const auto& preset : kPresets) {
    if (name != preset.name) continue;
    ModelConfig config;
    config.vocab_size = vocab_size;
    config.hidden_size = preset.hidden_size;
    config.intermediate_size = preset.intermediate_size;
    config.num_layers = preset.num_layers;
    config.num_heads = preset.num_heads;
    config.context_length = preset.context_length;
    return config;
  }
  std::string known;
  for (const auto& preset : kPresets) known += std::string(known.empty() ? "" : ", ") + preset.name;
  throw Error("unknown model preset '" + name + "' (known: " + known + ")");
}

ModelConfig model_config_for(const TrainConfig& config, int64_t vocab_size) {
  ModelConfig model = model_preset(config.preset, vocab_size);
  if (config.hidden_size > 0) model.hidden_size = config.hidden_size;
  if (config.intermediate_size > 0) model.intermediate_size = config.intermediate_size;
  if (config.num_layers > 0) model.num_layers = config.num_layers;
  if (config.num_heads > 0) model.num_heads = config.num_heads;
  if (config.context_length > 0) model.context_length = config.context_length;
  model.tie_embeddings = config.tie_embeddings;
  model.validate();
  return model;
}

nlohmann::json to_hf_config(const ModelConfig& config, const std::string& torch_dtype) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_hidden_layers", config.num_layers},
      {"num_attention_heads", config.num_heads},
      {"num_key_value_heads", config.num_heads},
      {"vocab_size", config.vocab_size},
      {"max_position_embeddings", config.context_length},
      {"rms_norm_eps", config.rms_norm_eps},
      {"rope_theta", config.rope_theta},
      {"tie_word_embeddings", config.tie_embeddings},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"initializer_range", 0.02},
      {"torch_dtype", torch_dtype},
  };
}

ModelConfig from_hf_config(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) throw Error(source + ": model config must be a JSON object");
  auto integer = [&](const char* key) {
    if (!json.contains(key) || !json[key].is_number_integer()) {
      throw Error(source + ": model config needs an integer '" + std::string(key) + "'");
    }
    return json[key].get<int64_t>();
  };
  auto number = [&](const char* key) {
    if (!json.contains(key) || !json[key].is_number()) {
      throw Error(source + ": model config needs a number '" + std::string(key) + "'");
    }
    return json[key].get<double>();
  };
  ModelConfig config;
  config.vocab_size = integer("vocab_size");
  config.hidden_size = integer("hidden_size");
  config.intermediate_size = integer("intermediate_size");
  config.num_layers = integer("num_hidden_layers");
  config.num_heads = integer("num_attention_heads");
  config.context_length = integer("max_position_embeddings");
  config.rms_norm_eps = number("rms_norm_eps");
  config.rope_theta = number("rope_theta");
  if (json.contains("num_key_value_heads") && json["num_key_value_heads"] != json["num_attention_heads"]) {
    throw Error(source + ": grouped-query attention (num_key_value_heads != num_attention_heads) is not supported");
  }
  if (!json.contains("tie_word_embeddings") || !json["tie_word_embeddings"].is_boolean()) {
    throw Error(source + ": model config needs a boolean 'tie_word_embeddings'");
  }
  config.tie_embeddings = json["tie_word_embeddings"].get<bool>();
  try {
    config.validate();
  } catch (const Error& error) {
    throw Error(source + ": " + error.what());
  }
  return config;
}

}  // namespace strait
