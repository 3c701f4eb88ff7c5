#include "strait/fit/cells.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"

namespace strait::fit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A numeric field of `object`, finite and > 0; `where` is "FILE:LINE".
double positive_field(const json& object, const char* key, const std::string& where) {
  if (!object.contains(key)) throw Error(where + ": missing '" + key + "'");
  const json& value = object.at(key);
  // nlohmann writes NaN and infinity as null, so a diverged cell shows up here as "is null".
  const double number = value.is_number() ? value.get<double>() : std::nan("");
  if (!std::isfinite(number) || number <= 0) {
    throw Error(where + ": '" + key + "' is " + value.dump() + ", expected a finite number > 0");
  }
  return number;
}

}  // namespace

CellFile read_cells(const fs::path& dir_or_file) {
  CellFile file;
  file.path = fs::is_directory(dir_or_file) ? dir_or_file / kCellsFileName : dir_or_file;
  std::ifstream in(file.path);
  if (!in) {
    throw Error("fit: cannot read " + file.path.string() + " (expected a sweep directory with " + kCellsFileName +
                " or such a file)");
  }
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file.path.string() + ":" + std::to_string(line);
    json object;
    try {
      object = json::parse(text);
    } catch (const json::parse_error& error) {
      throw Error(where + ": not valid JSON (" + error.what() + ")");
    }
    if (!object.is_object()) throw Error(where + ": expected a JSON object, got " + object.dump());
    Cell cell;
    cell.line = line;
    if (!object.contains("method")) throw Error(where + ": missing 'method'");
    if (!object.at("method").is_string() || object.at("method").get<std::string>().empty()) {
      throw Error(where + ": 'method' is " + object.at("method").dump() + ", expected a non-empty string");
    }
    cell.method = object.at("method").get<std::string>();
    cell.params = positive_field(object, "non_embedding_params", where);
    cell.tokens = positive_field(object, "tokens", where);
    cell.loss = positive_field(object, "final_val_loss", where);
    file.cells.push_back(std::move(cell));
  }
  if (in.bad()) throw Error("fit: error reading " + file.path.string());
  if (file.cells.empty()) throw Error("fit: " + file.path.string() + " holds no cells");
  return file;
}

}  // namespace strait::fit
