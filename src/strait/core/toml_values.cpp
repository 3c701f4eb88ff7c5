#include "strait/core/toml_values.h"

#include "strait/core/error.h"

namespace strait {

toml::table parse_toml(const std::string& text, const std::string& source) {
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& error) {
    const auto& where = error.source().begin;
    throw Error(source + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
                ": invalid TOML: " + std::string(error.description()));
  }
}

nlohmann::json plain_toml_value(const toml::node& node, const std::string& what) {
  if (auto v = node.as_string()) return v->get();
  if (auto v = node.as_integer()) return v->get();
  if (auto v = node.as_floating_point()) return v->get();
  if (auto v = node.as_boolean()) return v->get();
  throw Error(what + " has a table, array or date value; strait options are plain values");
}

}  // namespace strait
