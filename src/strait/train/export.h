// `strait export`: a checkpoint as a Hugging Face Llama directory (config.json +
// model.safetensors with HF names, plus strait's tokenizer files), loadable by
// transformers' LlamaForCausalLM.from_pretrained.
#pragma once

#include <filesystem>
#include <string>

namespace strait {

struct ExportOptions {
  std::string dtype = "float32";  // "float32" or "bfloat16"
  bool overwrite = false;         // replace an existing output directory
};

// Writes out_dir atomically (staged, then renamed); an existing out_dir is an error unless
// overwrite, and is replaced only once the new directory is complete.
void export_hf(const std::filesystem::path& checkpoint, const std::filesystem::path& out_dir,
               const ExportOptions& options);

}  // namespace strait
