// Dimensions of a Llama-style decoder, the presets, and the Hugging Face config.json mapping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace strait {

struct TrainConfig;

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t hidden_size = 128;        // C
  int64_t intermediate_size = 352;  // F, the SwiGLU width
  int64_t num_layers = 4;           // L
  int64_t num_heads = 4;            // H; head dimension D = C / H
  int64_t context_length = 128;     // maximum sequence length T
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t num_parameters() const;
  // Parameters outside the embedding and LM head (what scaling laws count).
  int64_t num_non_embedding_parameters() const;
  // Throws strait::Error naming the dimension that is out of range or inconsistent.
  void validate() const;
};

// nano ~0.1M (tests), micro ~1M, small ~5M, base ~25M parameters at the byte vocabulary.
ModelConfig model_preset(const std::string& name, int64_t vocab_size);
std::vector<std::string> model_preset_names();

// The preset named in the training config with its explicit dimensions applied.
ModelConfig model_config_for(const TrainConfig& config, int64_t vocab_size);

// Hugging Face LlamaConfig keys (config.json), and back. The reader checks every field it needs.
nlohmann::json to_hf_config(const ModelConfig& config, const std::string& torch_dtype = "float32");
ModelConfig from_hf_config(const nlohmann::json& json, const std::string& source);

}  // namespace strait
