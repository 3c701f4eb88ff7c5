// Helpers shared by the strait_data tests.
#pragma once

#include <functional>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "strait/core/error.h"
#include "error_of.h"

namespace strait::testing {


// Error messages must name the thing at fault and the values involved.
inline void expect_mentions(const std::string& message, std::initializer_list<std::string> words) {
  for (const std::string& word : words) {
    EXPECT_NE(message.find(word), std::string::npos) << "message \"" << message << "\" does not mention \"" << word << "\"";
  }
}

}  // namespace strait::testing
