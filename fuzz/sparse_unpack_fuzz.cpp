// libFuzzer target for the SparseLoCo wire format: arbitrary bytes from a peer go to unpack for
// every case of sparse_fuzz_cases.h. unpack must throw strait::Error or return tensors that
// pack to the very same bytes (the format is canonical); anything else (another exception, a
// crash, an out-of-bounds read, undefined behaviour under ASan/UBSan) is a finding. Built and run
// by CMake when clang with libFuzzer is there (see CMakeLists.txt, "Fuzzing").
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "sparse_fuzz_cases.h"
#include "strait/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strait::codec;
  static const std::vector<fuzz::FuzzCase> cases = fuzz::fuzz_cases();
  if (size == 0) return 0;
  const fuzz::FuzzCase& c = cases[(data[0] & ~fuzz::kResealBit) % cases.size()];
  std::vector<uint8_t> payload(data + 1, data + size);
  if (data[0] & fuzz::kResealBit) fuzz::reseal(payload);
  std::vector<SparseTensor> tensors;
  try {
    tensors = unpack(payload.data(), payload.size(), c.shapes, c.options);
  } catch (const strait::Error&) {
    return 0;  // refused with a message: what unpack must do with bad bytes
  }
  if (pack(tensors, c.options) != payload) {
    std::fprintf(stderr, "sparse_unpack_fuzz: an accepted payload of %zu bytes packs to other bytes\n", payload.size());
    std::abort();
  }
  // Decoding what was accepted must stay inside each tensor (ASan checks the writes).
  for (const SparseTensor& tensor : tensors) {
    const int64_t n = std::accumulate(tensor.shape.begin(), tensor.shape.end(), int64_t{1}, std::multiplies<int64_t>());
    std::vector<float> out(static_cast<size_t>(n), 0.0f);
    add_decoded(tensor, out.data());
  }
  return 0;
}
