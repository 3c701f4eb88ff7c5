#include "strait/train/export.h"

#include <iostream>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/model/tensor_io.h"
#include "strait/train/checkpoint.h"

namespace strait {

namespace fs = std::filesystem;

void export_hf(const fs::path& checkpoint, const fs::path& out_dir, const ExportOptions& options) {
  DType dtype;
  if (options.dtype == "float32") dtype = DType::F32;
  else if (options.dtype == "bfloat16") dtype = DType::BF16;
  else throw Error("unknown export dtype '" + options.dtype + "' (expected float32 or bfloat16)");
  if (fs::exists(out_dir) && !options.overwrite) {
    throw Error("output directory " + out_dir.string() + " already exists; pass --overwrite to replace it");
  }
  const LlamaModel model = load_model(checkpoint);
  if (!out_dir.parent_path().empty()) fs::create_directories(out_dir.parent_path());

  StagedDirectory staged(out_dir);
  NamedTensors tensors;
  for (const auto& parameter : model.parameters()) tensors.emplace_back(parameter.name, parameter.tensor);
  save_tensors(staged.staging_path() / "model.safetensors", tensors, {{"format", "pt"}}, dtype);
  atomic_write_file(staged.staging_path() / "config.json",
                    to_hf_config(model.config(), options.dtype).dump(2) + "\n");
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (fs::exists(checkpoint / name)) atomic_write_file(staged.staging_path() / name, read_whole_file(checkpoint / name));
  }
  // Swap only now that the new directory is complete: the old one survives any earlier failure.
  const std::string warning = staged.commit_replacing();
  if (!warning.empty()) std::cerr << "strait export: warning: " << warning << "\n";
}

}  // namespace strait
