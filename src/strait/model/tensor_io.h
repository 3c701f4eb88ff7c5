// LibTorch tensors to and from safetensors files (strait/core/safetensors.h knows only bytes).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "strait/core/safetensors.h"

namespace strait {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes the tensors (converted to `dtype`: F32 or BF16 for floating point; integer tensors keep
// their own type) atomically.
void save_tensors(const std::filesystem::path& path, const NamedTensors& tensors,
                  const std::map<std::string, std::string>& metadata = {}, DType float_dtype = DType::F32);

// The names, in order: what SafetensorsFile::load(path, expected) takes.
std::vector<std::string> names_of(const NamedTensors& tensors);

// A copy of one tensor of a loaded file as a LibTorch tensor of its stored dtype.
torch::Tensor tensor_from_file(const SafetensorsFile& file, const std::string& name);

// Copies file[prefix + name] into each destination tensor (in place, no autograd), checking that
// every tensor exists with the destination's shape; floating-point data of another dtype
// (e.g. BF16) is converted. Errors name the file, the tensor and both shapes.
void load_into(const SafetensorsFile& file, const std::vector<std::pair<std::string, torch::Tensor>>& destinations,
               const std::string& prefix = "");

}  // namespace strait
