#include "strait/core/checksum.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>
#include <xxhash.h>

#include "strait/core/error.h"

namespace strait {

namespace {

std::string to_hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

struct StateDeleter {
  void operator()(XXH64_state_t* state) const { XXH64_freeState(state); }
};

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

}  // namespace

uint64_t xxh64(const void* data, size_t size, uint64_t seed) { return XXH64(data, size, seed); }

std::string xxh64_hex(const void* data, size_t size) { return to_hex(xxh64(data, size)); }

std::string xxh64_file_hex(const std::filesystem::path& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error("cannot read " + path.string() + " to checksum it: " + std::strerror(errno));
  std::unique_ptr<XXH64_state_t, StateDeleter> state(XXH64_createState());
  if (!state || XXH64_reset(state.get(), 0) != XXH_OK) throw Error("cannot checksum " + path.string() + ": out of memory");

  std::vector<char> buffer(1 << 20);
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) XXH64_update(state.get(), buffer.data(), n);
  if (std::ferror(file.get())) throw Error("cannot read " + path.string() + " to checksum it: " + std::strerror(errno));
  return to_hex(XXH64_digest(state.get()));
}

}  // namespace strait
