// What this process's memory use has been, for run summaries and memory benchmarks.
#pragma once

#include <cstdint>

namespace strait {

// The most physical memory this process has held at once so far (its peak resident set size).
uint64_t peak_resident_bytes();

}  // namespace strait
