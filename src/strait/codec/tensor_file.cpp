#include "strait/codec/tensor_file.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "strait/core/error.h"
#include "strait/core/safetensors.h"

namespace strait::codec {

namespace fs = std::filesystem;

namespace {

const char* kFormatKey = "format";
const char* kFormat = "strait codec decoded";

float from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu, mantissa = half & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa x 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return from_bits(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  return from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

bool is_floating(DType dtype) {
  return dtype == DType::F64 || dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

std::vector<float> as_floats(const SafetensorsFile& file, const TensorInfo& info) {
  const size_t n = info.nbytes / dtype_size(info.dtype);
  const uint8_t* data = file.data(info.name);
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) {
    switch (info.dtype) {
      case DType::F64: {
        double v;
        std::memcpy(&v, data + 8 * i, 8);
        values[i] = static_cast<float>(v);
        break;
      }
      case DType::F32: std::memcpy(&values[i], data + 4 * i, 4); break;
      case DType::F16: {
        uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        values[i] = half_to_float(h);
        break;
      }
      default: {  // BF16: the upper half of a float32
        uint16_t b;
        std::memcpy(&b, data + 2 * i, 2);
        values[i] = from_bits(static_cast<uint32_t>(b) << 16);
      }
    }
  }
  return values;
}

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code error;
  return fs::exists(a) && fs::exists(b) && fs::equivalent(a, b, error);
}

void check_output(const fs::path& output, const fs::path& input, const std::optional<fs::path>& base, bool overwrite) {
  if (same_file(output, input) || (base && same_file(output, *base))) {
    throw Error("codec: --out " + output.string() + " is one of the inputs; choose another file");
  }
  if (!fs::exists(output)) return;
  if (!overwrite) throw Error("codec: " + output.string() + " exists (pass --overwrite to replace an earlier output)");
  bool ours = false;
  try {
    const SafetensorsFile existing = SafetensorsFile::load(output);
    const auto format = existing.metadata().find(kFormatKey);
    ours = format != existing.metadata().end() && format->second == kFormat;
  } catch (const Error&) {
  }
  if (!ours) {
    throw Error("codec: " + output.string() + " was not written by strait codec; refusing to replace it");
  }
}

double norm(const std::vector<float>& values) {
  double squares = 0;
  for (float v : values) squares += static_cast<double>(v) * v;
  return std::sqrt(squares);
}

}  // namespace

nlohmann::json compress_tensor_file(const fs::path& input, const std::optional<fs::path>& base, const fs::path& output,
                                    const TensorFileOptions& options) {
  check_output(output, input, base, options.overwrite);
  const SafetensorsFile file = SafetensorsFile::load(input);
  std::optional<SafetensorsFile> base_file;
  if (base) base_file = SafetensorsFile::load(*base);
  nlohmann::json report = {{"input", input.string()}, {"topk", options.sparse.topk},
                           {"quant_bins", options.sparse.quant_bins},
                           {"index_coding", to_string(options.sparse.index_coding)},
                           {"tensors", nlohmann::json::array()}, {"skipped", nlohmann::json::array()}};
  if (base) report["delta_from"] = base->string();
  // The tensor's values, or for --delta its A − B (B being the later weights).
  auto values_of = [&](const TensorInfo& info) {
    std::vector<float> values = as_floats(file, info);
    if (!base_file) return values;
    if (!base_file->contains(info.name)) {
      throw Error("codec: " + base->string() + " has no tensor '" + info.name + "' (it is in " + input.string() + ")");
    }
    const TensorInfo& other = base_file->info(info.name);
    if (other.shape != info.shape || !is_floating(other.dtype)) {
      throw Error("codec: tensor '" + info.name + "' differs in shape or dtype between " + input.string() + " and " +
                  base->string());
    }
    const std::vector<float> later = as_floats(*base_file, other);
    for (size_t i = 0; i < values.size(); ++i) values[i] -= later[i];
    return values;
  };
  std::vector<const TensorInfo*> written;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<SparseTensor> sent;
  for (const TensorInfo& info : file.tensors()) {
    if (!is_floating(info.dtype)) {
      report["skipped"].push_back(info.name);
      continue;
    }
    const std::vector<float> values = values_of(info);
    shapes.push_back(info.shape.empty() ? std::vector<int64_t>{1} : info.shape);
    try {
      sent.push_back(compress(values.data(), shapes.back(), options.sparse));
    } catch (const Error& error) {
      throw Error("codec: tensor '" + info.name + "': " + error.what());
    }
    written.push_back(&info);
  }
  // Through the wire in one payload, as a peer would receive it (with auto, the payload's coding
  // depends on every tensor).
  const std::vector<uint8_t> payload = pack(sent, options.sparse);
  const std::vector<SparseTensor> received = unpack(payload.data(), payload.size(), shapes, options.sparse);
  const PayloadStats stats = payload_stats(sent, options.sparse);
  report["payload_coding"] = to_string(stats.coding);
  std::vector<std::vector<float>> decoded;
  double total_elements = 0;
  for (size_t t = 0; t < written.size(); ++t) {
    const std::vector<float> values = values_of(*written[t]);
    std::vector<float> out(values.size(), 0.0f);
    add_decoded(received[t], out.data());
    double error_squares = 0;
    for (size_t i = 0; i < values.size(); ++i) error_squares += std::pow(static_cast<double>(out[i]) - values[i], 2);
    const double elements = static_cast<double>(values.size());
    const TensorWireStats& wire = stats.tensors[t];
    const double bytes = static_cast<double>(wire.bytes);
    const double input_norm = norm(values);
    report["tensors"].push_back({{"name", written[t]->name},
                                 {"shape", written[t]->shape},
                                 {"elements", values.size()},
                                 {"kept", wire.kept},
                                 {"payload_bytes", bytes},
                                 {"bits_per_index", static_cast<double>(wire.index_bits) / wire.kept},
                                 {"ratio_fp32", 4 * elements / bytes},
                                 {"ratio_bf16", 2 * elements / bytes},
                                 {"relative_error", input_norm > 0 ? std::sqrt(error_squares) / input_norm : 0.0}});
    total_elements += elements;
    decoded.push_back(std::move(out));
  }
  const double total_bytes = static_cast<double>(payload.size());
  const double total_kept = static_cast<double>(stats.kept);
  report["total"] = {{"elements", total_elements},
                     {"kept", stats.kept},
                     {"payload_bytes", total_bytes},
                     {"bits_per_index", stats.bits_per_index()},
                     {"bits_per_kept_value", total_kept > 0 ? 8 * total_bytes / total_kept : 0.0},
                     {"ratio_fp32", total_bytes > 0 ? 4 * total_elements / total_bytes : 0.0},
                     {"ratio_bf16", total_bytes > 0 ? 2 * total_elements / total_bytes : 0.0}};
  SafetensorsWriter writer;
  for (size_t t = 0; t < written.size(); ++t) {
    writer.add(written[t]->name, DType::F32, written[t]->shape, decoded[t].data(), decoded[t].size() * sizeof(float));
  }
  writer.set_metadata(kFormatKey, kFormat);
  writer.write(output);
  report["output"] = output.string();
  return report;
}

}  // namespace strait::codec
