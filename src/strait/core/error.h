// strait's one error type. Every failure a user can cause (bad config, missing or corrupt
// files, bad peers) is reported by throwing strait::Error with a message that names the
// thing at fault, the value found and what was expected, e.g.
//   "shard data/train_000000.bin: bad magic 12345 (expected 20240520); is this an llm.c shard?"
// The command line catches it, prints "strait: error: <message>" and exits 1.
#pragma once

#include <stdexcept>
#include <string>

namespace strait {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace strait
