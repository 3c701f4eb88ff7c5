#include "strait/data/brown.h"

#include <algorithm>
#include <array>
#include <sstream>
#include <vector>

namespace strait::data {

namespace {

bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }

// Brown tags are lowercase (nn, np-tl, vbd) except for punctuation, which is tagged with
// itself (",/,", "``/``").
bool looks_tagged(const std::string& token) {
  size_t slash = token.rfind('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == token.size()) return false;
  std::string tag = token.substr(slash + 1);
  if (tag == token.substr(0, slash)) return true;
  return is_lower(tag[0]) && std::none_of(tag.begin(), tag.end(), is_upper);
}

std::string strip_tag(const std::string& token) {
  size_t slash = token.rfind('/');
  return slash == std::string::npos || slash == 0 ? token : token.substr(0, slash);
}

bool attaches_to_previous(const std::string& word) {
  static const std::array<const char*, 8> kClosing = {",", ".", ";", ":", "?", "!", ")", "''"};
  return std::any_of(kClosing.begin(), kClosing.end(), [&](const char* closing) { return word == closing; });
}

bool attaches_to_next(const std::string& word) { return word == "``" || word == "("; }

std::string join_words(const std::vector<std::string>& words) {
  std::string line;
  bool glue = true;  // no space before the first word
  for (const std::string& word : words) {
    if (!glue && !attaches_to_previous(word)) line += ' ';
    line += word == "``" || word == "''" ? "\"" : word;
    glue = attaches_to_next(word);
  }
  return line;
}

}  // namespace

bool is_brown_file_name(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' && is_digit(name[2]) && is_digit(name[3]);
}

bool looks_like_brown(const std::string& text) {
  std::istringstream tokens(text);
  size_t total = 0;
  size_t tagged = 0;
  for (std::string token; tokens >> token; ++total) tagged += looks_tagged(token);
  return total > 0 && 2 * tagged > total;
}

std::string detag_brown(const std::string& text) {
  std::istringstream lines(text);
  std::vector<std::string> paragraph;
  std::string out;
  auto end_paragraph = [&] {
    if (paragraph.empty()) return;
    if (!out.empty()) out += '\n';
    out += join_words(paragraph);
    paragraph.clear();
  };
  for (std::string line; std::getline(lines, line);) {
    std::istringstream tokens(line);
    size_t before = paragraph.size();
    for (std::string token; tokens >> token;) paragraph.push_back(strip_tag(token));
    if (paragraph.size() == before) end_paragraph();
  }
  end_paragraph();
  return out;
}

}  // namespace strait::data
