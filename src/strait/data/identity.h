// Which data a run trains on: the size and xxh64 of every shard and tokenizer file of a data
// directory. prepare records them in prepare.json ("files"); train checks the directory against
// that record at start-up and keeps the hashes in every checkpoint, so --resume refuses another
// directory or a changed shard, naming the file; eval compares a shard's tokenizer with the
// checkpoint's. xxh64 runs at several GB/s, and train reads every shard at start-up anyway (to
// check its token ids), so hashing adds little to start-up.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace strait::data {

// Every train_*.bin and val_*.bin shard and tokenizer file (tokenizer.json, tokenizer.model) of
// `dir`, by name: {"bytes": N, "xxh64": "16 hex digits"}.
nlohmann::json hash_data_files(const std::filesystem::path& dir);

// hash_data_files(dir), checked against what prepare recorded in dir/prepare.json: throws
// strait::Error naming every file that changed, is missing or was never recorded. A directory
// without such a record (prepared by an older strait, or not by prepare) is not checked, and
// `note` gets one line saying so.
nlohmann::json verified_data_files(const std::filesystem::path& dir,
                                   const std::function<void(const std::string&)>& note);

// "" when `now` lists the same files with the same content as `recorded`, else each difference,
// e.g. "train_000000.bin has xxh64 0123.. (4096 bytes) where <recorded_by> recorded 4567..
// (4096 bytes); val_000001.bin is missing", joined by "; ".
std::string data_differences(const nlohmann::json& recorded, const nlohmann::json& now, const std::string& recorded_by);

}  // namespace strait::data
