// `strait export`: a checkpoint as a Hugging Face Llama directory (config.json +
// model.safetensors with HF names, plus strait's tokenizer files), loadable by
// transformers' LlamaForCausalLM.from_pretrained, and strait_export.json (the checkpoint and
// dtype), which marks the directory as an export that a later --overwrite may replace.
#pragma once

#include <filesystem>
#include <string>

namespace strait {

struct ExportOptions {
  std::string dtype = "float32";  // "float32" or "bfloat16"
  bool overwrite = false;         // replace an earlier export at the output directory
};

// Writes out_dir atomically (staged, then renamed). An existing out_dir is an error unless
// overwrite and it is an earlier export (or empty); it is replaced only once the new directory
// is complete. out_dir may not be the checkpoint, inside it, or hold it.
void export_hf(const std::filesystem::path& checkpoint, const std::filesystem::path& out_dir,
               const ExportOptions& options);

}  // namespace strait
