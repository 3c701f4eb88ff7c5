#include "strait/train/export.h"

#include <algorithm>
#include <iostream>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/model/tensor_io.h"
#include "strait/train/checkpoint.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

constexpr OutputKind kExport{"export", "strait_export.json", "a directory written by strait export"};

// Absolute, symlinks resolved as far as the path exists, no trailing separator: two spellings
// of one directory compare equal.
fs::path resolved(const fs::path& path) {
  const fs::path result = fs::weakly_canonical(fs::absolute(path));
  return result.has_filename() ? result : result.parent_path();
}

// Whether `inner` is `outer` or lies below it.
bool is_within(const fs::path& inner, const fs::path& outer) {
  return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
}

// The checkpoint is the export's input: replacing it, a directory holding it, or writing into it
// would destroy or alter the very thing being exported.
void check_not_the_input(const fs::path& out_dir, const fs::path& checkpoint) {
  const fs::path out = resolved(out_dir), input = resolved(checkpoint);
  const std::string where = "export: " + out_dir.string();
  if (out == input) throw Error(where + " is the checkpoint being exported; choose another output directory");
  if (is_within(input, out)) {
    throw Error(where + " contains the checkpoint being exported (" + checkpoint.string() +
                "); choose another output directory");
  }
  if (is_within(out, input)) {
    throw Error(where + " is inside the checkpoint being exported (" + checkpoint.string() +
                "); choose an output directory outside it");
  }
}

}  // namespace

void export_hf(const fs::path& checkpoint, const fs::path& out_dir, const ExportOptions& options) {
  DType dtype;
  if (options.dtype == "float32") dtype = DType::F32;
  else if (options.dtype == "bfloat16") dtype = DType::BF16;
  else throw Error("unknown export dtype '" + options.dtype + "' (expected float32 or bfloat16)");
  check_not_the_input(out_dir, checkpoint);
  check_replaceable_output(out_dir, options.overwrite, kExport);
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
  const nlohmann::json record = {{"checkpoint", resolved(checkpoint).string()}, {"dtype", options.dtype}};
  atomic_write_file(staged.staging_path() / kExport.marker, record.dump(2) + "\n");
  // Swap only now that the new directory is complete: the old one survives any earlier failure.
  const std::string warning = staged.commit_replacing();
  if (!warning.empty()) std::cerr << "strait export: warning: " << warning << "\n";
}

}  // namespace strait
