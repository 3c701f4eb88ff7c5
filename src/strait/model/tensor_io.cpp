#include "strait/model/tensor_io.h"

#include <cstring>

#include "strait/core/error.h"

namespace strait {

namespace {

torch::ScalarType scalar_type_of(DType dtype) {
  switch (dtype) {
    case DType::F64: return torch::kFloat64;
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::Bool: return torch::kBool;
    case DType::U16: break;
  }
  throw Error("safetensors dtype " + dtype_name(dtype) + " has no LibTorch equivalent");
}

DType dtype_of(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64: return DType::F64;
    case torch::kFloat32: return DType::F32;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kInt16: return DType::I16;
    case torch::kInt8: return DType::I8;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::Bool;
    default: throw Error(std::string("cannot store a tensor of type ") + c10::toString(type) + " in safetensors");
  }
}

std::string shape_text(torch::IntArrayRef shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

void save_tensors(const std::filesystem::path& path, const NamedTensors& tensors,
                  const std::map<std::string, std::string>& metadata, DType float_dtype) {
  std::vector<torch::Tensor> keep_alive;  // the writer stores pointers until write()
  SafetensorsWriter writer;
  for (const auto& [name, tensor] : tensors) {
    auto stored = tensor.detach();
    if (stored.is_floating_point()) stored = stored.to(scalar_type_of(float_dtype));
    stored = stored.contiguous();
    keep_alive.push_back(stored);
    writer.add(name, dtype_of(stored.scalar_type()), stored.sizes().vec(), stored.data_ptr(),
               stored.numel() * stored.element_size());
  }
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
}

torch::Tensor tensor_from_file(const SafetensorsFile& file, const std::string& name) {
  const TensorInfo& info = file.info(name);
  auto tensor = torch::empty(info.shape, scalar_type_of(info.dtype));
  if (info.nbytes > 0) std::memcpy(tensor.data_ptr(), file.data(name), info.nbytes);
  return tensor;
}

std::vector<std::string> names_of(const NamedTensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors) names.push_back(name);
  return names;
}

void load_into(const SafetensorsFile& file, const std::vector<std::pair<std::string, torch::Tensor>>& destinations,
               const std::string& prefix) {
  torch::NoGradGuard no_grad;
  // Check everything before copying anything, so a bad file leaves the destinations untouched.
  for (const auto& [name, destination] : destinations) {
    const TensorInfo& info = file.info(prefix + name);
    if (torch::IntArrayRef(info.shape) != destination.sizes()) {
      throw Error(file.path().string() + ": tensor '" + prefix + name + "' has shape " + shape_text(info.shape) +
                  ", expected " + shape_text(destination.sizes()));
    }
    const bool is_float = info.dtype == DType::F32 || info.dtype == DType::BF16 || info.dtype == DType::F16 ||
                          info.dtype == DType::F64;
    if (destination.is_floating_point() != is_float) {
      throw Error(file.path().string() + ": tensor '" + prefix + name + "' has dtype " + dtype_name(info.dtype) +
                  ", expected a " + (destination.is_floating_point() ? "floating-point" : "integer") + " type");
    }
  }
  for (const auto& [name, destination] : destinations) {
    destination.copy_(tensor_from_file(file, prefix + name));
  }
}

}  // namespace strait
