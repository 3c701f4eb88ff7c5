#include "strait/data/identity.h"

#include "strait/core/checksum.h"
#include "strait/core/error.h"
#include "strait/core/fileio.h"

namespace strait::data {

namespace fs = std::filesystem;

namespace {

bool is_data_file(const std::string& name) {
  if (name == "tokenizer.json" || name == "tokenizer.model") return true;
  const bool shard = name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0;
  return shard && name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0;
}

std::string describe(const nlohmann::json& entry) {
  return entry.at("xxh64").get<std::string>() + " (" + std::to_string(entry.at("bytes").get<int64_t>()) + " bytes)";
}

}  // namespace

nlohmann::json hash_data_files(const fs::path& dir) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !is_data_file(name)) continue;
    files[name] = {{"bytes", static_cast<int64_t>(entry.file_size())}, {"xxh64", xxh64_file_hex(entry.path())}};
  }
  return files;
}

std::string data_differences(const nlohmann::json& recorded, const nlohmann::json& now, const std::string& recorded_by) {
  std::string differences;
  auto add = [&differences](const std::string& text) { differences += (differences.empty() ? "" : "; ") + text; };
  for (const auto& [name, entry] : recorded.items()) {
    if (!now.contains(name)) {
      add(name + " is missing (" + recorded_by + " recorded " + describe(entry) + ")");
    } else if (now.at(name) != entry) {
      add(name + " has xxh64 " + describe(now.at(name)) + " where " + recorded_by + " recorded " + describe(entry));
    }
  }
  for (const auto& [name, entry] : now.items()) {
    if (!recorded.contains(name)) add(name + " is not in what " + recorded_by + " recorded");
  }
  return differences;
}

nlohmann::json verified_data_files(const fs::path& dir, const std::function<void(const std::string&)>& note) {
  nlohmann::json files = hash_data_files(dir);
  const fs::path record_path = dir / "prepare.json";
  nlohmann::json record;
  if (fs::exists(record_path)) {
    try {
      record = nlohmann::json::parse(read_whole_file(record_path));
    } catch (const nlohmann::json::exception& error) {
      throw Error(record_path.string() + " is not valid JSON: " + error.what());
    }
  }
  if (!record.is_object() || !record.contains("files")) {
    if (note) {
      note(fs::exists(record_path)
               ? record_path.string() + " records no file hashes (an older strait prepared it): the shards are not "
                                        "checked against it; prepare the data again to have them checked"
               : dir.string() + " has no prepare.json: its shards are not checked against a record of prepare");
    }
    return files;
  }
  const std::string differences = data_differences(record.at("files"), files, "prepare.json");
  if (!differences.empty()) {
    throw Error("data directory " + dir.string() + " changed after prepare: " + differences +
                "; prepare the data again (or restore the files)");
  }
  return files;
}

}  // namespace strait::data
