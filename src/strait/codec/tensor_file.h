// `strait codec`: what SparseLoCo would send for a user's own tensors. One compression round
// (codec/sparse_codec.h) with an empty error buffer over every floating-point tensor of a
// safetensors file, or of the difference of two (a pseudo-gradient: A − B, B being the later
// weights), through the real wire format; the decoded tensors are written as float32 under the
// same names and shapes, and the report gives, per tensor and in total, the payload bytes (a
// tensor's part of the one payload of all tensors, in the coding that payload uses), bits per
// index and per kept value, the ratio to dense float32 and bfloat16, and the relative error
// ‖decoded − input‖ / ‖input‖.
#pragma once

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "strait/codec/sparse_codec.h"

namespace strait::codec {

struct TensorFileOptions {
  SparseOptions sparse;
  bool overwrite = false;  // replace an earlier `strait codec` output (never anything else)
};

// Reads `input` (and `base`), writes `output` atomically and returns the report. Tensors that
// are not floating point (F64, F32, F16, BF16) are left out and listed under "skipped". Throws
// strait::Error, writing nothing, on an unreadable file, a tensor of `input` missing from `base`
// or shaped differently, a non-finite value (naming the tensor), an `output` that is one of the
// inputs, or an existing `output` without `overwrite` or not written by `strait codec`.
nlohmann::json compress_tensor_file(const std::filesystem::path& input, const std::optional<std::filesystem::path>& base,
                                    const std::filesystem::path& output, const TensorFileOptions& options);

}  // namespace strait::codec
