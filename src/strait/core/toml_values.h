// TOML as strait's config readers take it: parse errors as strait::Error with file, line and
// column; plain values (strings, numbers, booleans) as JSON, the form the option table checks.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

namespace strait {

// Throws strait::Error("<source>:<line>:<column>: invalid TOML: <what>").
toml::table parse_toml(const std::string& text, const std::string& source);

// A string, integer, float or boolean as JSON; anything else (a table, array or date) throws
// strait::Error("<what> has a table, array or date value; strait options are plain values").
nlohmann::json plain_toml_value(const toml::node& node, const std::string& what);

}  // namespace strait
