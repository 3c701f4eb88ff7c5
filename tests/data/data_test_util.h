// Helpers shared by the strait_data tests.
#pragma once

#include <functional>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "strait/core/error.h"

namespace strait::testing {

// The message of the strait::Error that `action` throws; fails the test if it throws none.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const strait::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a strait::Error";
  return "";
}

// Error messages must name the thing at fault and the values involved.
inline void expect_mentions(const std::string& message, std::initializer_list<std::string> words) {
  for (const std::string& word : words) {
    EXPECT_NE(message.find(word), std::string::npos) << "message \"" << message << "\" does not mention \"" << word << "\"";
  }
}

}  // namespace strait::testing
