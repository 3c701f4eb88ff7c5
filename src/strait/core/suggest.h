// "Did you mean ...?" for mistyped names: config keys, commands, flags.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace strait {

// Levenshtein distance (insertions, deletions, substitutions).
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word` if it is a near miss (fewer than 4 edits), else "".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace strait
