// Catching the error an action raises, for tests of error messages.
#pragma once

#include <functional>
#include <string>

#include "strait/core/error.h"

namespace strait::testing {

// The message of the strait::Error that `action` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace strait::testing
