#include "strait/sweep/grid.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "strait/core/error.h"
#include "strait/core/fileio.h"
#include "strait/core/suggest.h"
#include "strait/core/toml_values.h"
#include "strait/model/model_config.h"

namespace strait::sweep {

namespace {

using nlohmann::json;

const std::vector<std::string> kMethods = {"ddp", "local-sgd", "diloco", "sparseloco"};
const std::vector<std::string> kModelKeys = {"name", "preset", "hidden_size", "intermediate_size", "num_layers",
                                             "num_heads", "context_length", "tie_embeddings"};

// Train options the grid decides per cell, and where they come from instead.
const std::map<std::string, std::string> kSetByGrid = {
    {"steps", "[grid] tokens or tokens_per_param"},
    {"strategy", "[grid] methods"},
    {"sync_every", "[grid] sync_every"},
    {"preset", "[grid] models"},
    {"hidden_size", "[grid] models"},
    {"intermediate_size", "[grid] models"},
    {"num_layers", "[grid] models"},
    {"num_heads", "[grid] models"},
    {"out", "strait sweep --out (each cell runs in DIR/cells/<cell>)"},
    {"resume", "strait sweep (it resumes every unfinished cell)"},
    {"resume_from", "strait sweep (it resumes every unfinished cell)"},
    {"overwrite", "strait sweep (it never replaces a cell)"},
    {"stop_after", "strait sweep (a cell runs to its last step)"},
};

[[noreturn]] void unknown_key(const std::string& where, const std::string& key, const std::vector<std::string>& known) {
  std::string message = where + ": unknown key '" + key + "'";
  const std::string closest = closest_match(key, known);
  if (!closest.empty()) message += " (did you mean '" + closest + "'?)";
  std::string list;
  for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
  throw Error(message + "; the keys are " + list);
}

json plain_table(const toml::table& table, const std::string& where) {
  json entries = json::object();
  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    entries[name] = plain_toml_value(node, where + ": key '" + name + "'");
  }
  return entries;
}

// `entries` (train option keys) applied on top of `config`; checked like a --config file. Keys
// the grid sets are refused unless `own_keys` holds them (a model entry's dimensions).
void apply_options(TrainConfig& config, const json& entries, const std::string& where,
                   const std::vector<std::string>& own_keys = {}) {
  json merged = to_json(config);
  for (const auto& [key, value] : entries.items()) {
    const bool own = std::find(own_keys.begin(), own_keys.end(), key) != own_keys.end();
    if (auto found = kSetByGrid.find(key); found != kSetByGrid.end() && !own) {
      throw Error(where + ": '" + key + "' is set by " + found->second + ", not here");
    }
    merged[key] = value;
  }
  config = train_config_from_json(merged, where);
}

// A [grid] list: an array, or one value standing for a list of one.
std::vector<const toml::node*> list_of(const toml::table& grid, const std::string& key, const std::string& source) {
  const toml::node* node = grid.get(key);
  std::vector<const toml::node*> items;
  if (node == nullptr) return items;
  if (const toml::array* array = node->as_array()) {
    for (const toml::node& item : *array) items.push_back(&item);
    if (items.empty()) throw Error(source + ": [grid] " + key + " is empty");
  } else {
    items.push_back(node);
  }
  return items;
}

std::vector<int64_t> positive_integers(const toml::table& grid, const std::string& key, const std::string& source) {
  std::vector<int64_t> values;
  for (const toml::node* item : list_of(grid, key, source)) {
    const auto value = item->value<int64_t>();
    if (!item->is_integer() || !value || *value < 1) {
      throw Error(source + ": [grid] " + key + " must hold integers >= 1, e.g. " + key + " = [1, 4]");
    }
    values.push_back(*value);
  }
  return values;
}

std::vector<double> positive_numbers(const toml::table& grid, const std::string& key, const std::string& source) {
  std::vector<double> values;
  for (const toml::node* item : list_of(grid, key, source)) {
    const auto value = item->value<double>();
    if (!item->is_number() || !value || !std::isfinite(*value) || *value <= 0) {
      throw Error(source + ": [grid] " + key + " must hold numbers > 0, e.g. " + key + " = [1e6, 4e6]");
    }
    values.push_back(*value);
  }
  return values;
}

// Names become directory names and parts of cell names.
void check_name(const std::string& name, const std::string& where) {
  bool safe = !name.empty() && name[0] != '.';
  for (char c : name) safe = safe && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
  if (!safe) throw Error(where + ": '" + name + "' may hold only letters, digits, '-', '_' and '.'");
}

struct ModelEntry {
  std::string name;
  json options;  // train option keys: preset and dimensions
};

ModelEntry model_entry(const toml::node& node, size_t index, const std::string& source) {
  const std::string where = source + ": [grid] models[" + std::to_string(index) + "]";
  ModelEntry entry;
  if (auto preset = node.value<std::string>(); preset && node.is_string()) {
    entry.options = {{"preset", *preset}};
  } else if (const toml::table* table = node.as_table()) {
    entry.options = plain_table(*table, where);
    if (entry.options.contains("name")) {
      if (!entry.options["name"].is_string()) throw Error(where + ": name must be a string");
      entry.name = entry.options["name"].get<std::string>();
      entry.options.erase("name");
    }
    for (const auto& [key, value] : entry.options.items()) {
      if (std::find(kModelKeys.begin(), kModelKeys.end(), key) == kModelKeys.end()) unknown_key(where, key, kModelKeys);
    }
  } else {
    throw Error(where + " must be a preset name or a table of dimensions, e.g. "
                        "{hidden_size = 96, num_layers = 3, intermediate_size = 256, num_heads = 4}");
  }
  if (entry.options.contains("preset")) {
    const auto& preset = entry.options["preset"];
    const auto presets = model_preset_names();
    if (!preset.is_string() || std::find(presets.begin(), presets.end(), preset.get<std::string>()) == presets.end()) {
      std::string message = where + ": unknown preset " + preset.dump();
      const std::string closest = preset.is_string() ? closest_match(preset.get<std::string>(), presets) : "";
      if (!closest.empty()) message += " (did you mean '" + closest + "'?)";
      std::string list;
      for (const auto& name : presets) list += (list.empty() ? "" : ", ") + name;
      throw Error(message + "; the presets are " + list);
    }
    // Only a bare preset is named after itself; explicit dimensions get n<N> below.
    if (entry.name.empty() && entry.options.size() == 1) entry.name = preset.get<std::string>();
  }
  if (!entry.name.empty()) check_name(entry.name, where + " name");
  return entry;
}

struct MethodEntry {
  std::string method, label;
  json options;  // train option keys for this method (outer_lr, topk, ...)
};

MethodEntry method_entry(const toml::node& node, size_t index, const std::string& source) {
  const std::string where = source + ": [grid] methods[" + std::to_string(index) + "]";
  MethodEntry entry;
  if (auto name = node.value<std::string>(); name && node.is_string()) {
    entry.method = *name;
  } else if (const toml::table* table = node.as_table()) {
    entry.options = plain_table(*table, where);
    for (const char* key : {"method", "label"}) {
      if (!entry.options.contains(key)) continue;
      if (!entry.options[key].is_string()) throw Error(where + ": " + key + " must be a string");
      (std::string(key) == "method" ? entry.method : entry.label) = entry.options[key].get<std::string>();
      entry.options.erase(key);
    }
    if (entry.method.empty()) throw Error(where + ": needs method = \"ddp\", \"local-sgd\", \"diloco\" or \"sparseloco\"");
  } else {
    throw Error(where + " must be a method name or a table such as {method = \"diloco\", outer_lr = 0.5}");
  }
  if (std::find(kMethods.begin(), kMethods.end(), entry.method) == kMethods.end()) {
    const std::string closest = closest_match(entry.method, kMethods);
    throw Error(where + ": unknown method '" + entry.method + "'" +
                (closest.empty() ? "" : " (did you mean '" + closest + "'?)") +
                "; the methods are ddp, local-sgd, diloco, sparseloco");
  }
  if (entry.label.empty()) entry.label = entry.method;
  check_name(entry.label, where + " label");
  return entry;
}

// D as given: absolute tokens, or tokens per non-embedding parameter.
struct TokenBudget {
  double value = 0;
  bool per_param = false;
  double tokens_for(int64_t params) const { return per_param ? value * static_cast<double>(params) : value; }
  std::string tag() const { return "d" + compact_number(value) + (per_param ? "n" : ""); }
};

}  // namespace

std::string compact_number(double value) {
  const char* units[] = {"", "k", "M", "G", "T"};
  int unit = 0;
  while (std::fabs(value) >= 999.5 && unit < 4) {
    value /= 1000;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g%s", value, units[unit]);
  return text;
}

Grid parse_grid(const std::string& text, const std::string& source) {
  const toml::table root = parse_toml(text, source);
  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    if (name != "train" && name != "grid") unknown_key(source, name, {"train", "grid"});
    if (!node.is_table()) throw Error(source + ": '" + name + "' must be a table ([" + name + "])");
  }
  const toml::table* grid = root["grid"].as_table();
  if (grid == nullptr) throw Error(source + ": no [grid] table (models, methods, replicas, sync_every, tokens)");
  const std::vector<std::string> grid_keys = {"models", "methods", "replicas", "sync_every", "tokens", "tokens_per_param"};
  for (const auto& [key, node] : *grid) {
    if (std::find(grid_keys.begin(), grid_keys.end(), std::string(key.str())) == grid_keys.end()) {
      unknown_key(source + ": [grid]", std::string(key.str()), grid_keys);
    }
  }

  TrainConfig shared;
  if (const toml::table* train = root["train"].as_table()) {
    apply_options(shared, plain_table(*train, source + ": [train]"), source + ": [train]");
  }
  if (shared.data.empty()) throw Error(source + ": [train] needs data = \"DIR\" (a directory made by `strait prepare`)");

  std::vector<ModelEntry> models;
  for (const toml::node* node : list_of(*grid, "models", source)) models.push_back(model_entry(*node, models.size(), source));
  std::vector<MethodEntry> methods;
  for (const toml::node* node : list_of(*grid, "methods", source)) methods.push_back(method_entry(*node, methods.size(), source));
  if (models.empty()) throw Error(source + ": [grid] needs models, e.g. models = [\"nano\", \"micro\"]");
  if (methods.empty()) throw Error(source + ": [grid] needs methods, e.g. methods = [\"ddp\", \"diloco\"]");
  std::set<std::string> labels;
  for (const auto& method : methods) {
    if (!labels.insert(method.label).second) {
      throw Error(source + ": [grid] methods: two methods are labelled '" + method.label +
                  "' (strait fit would mix their cells); give one a label = \"...\"");
    }
  }
  std::vector<int64_t> replicas = positive_integers(*grid, "replicas", source);
  if (replicas.empty()) replicas = {1};
  std::vector<int64_t> sync_every = positive_integers(*grid, "sync_every", source);
  if (sync_every.empty()) sync_every = {shared.sync_every};
  const bool has_tokens = grid->contains("tokens"), has_ratio = grid->contains("tokens_per_param");
  if (has_tokens == has_ratio) {
    throw Error(source + ": [grid] needs exactly one of tokens (e.g. tokens = [1e6, 4e6]) and tokens_per_param "
                         "(e.g. tokens_per_param = [20]: equal tokens per parameter)");
  }
  std::vector<TokenBudget> budgets;
  for (double value : positive_numbers(*grid, has_tokens ? "tokens" : "tokens_per_param", source)) {
    budgets.push_back({value, has_ratio});
  }

  Grid result;
  result.source = source;
  std::set<std::string> names;
  for (size_t m = 0; m < models.size(); ++m) {
    TrainConfig model_config = shared;
    apply_options(model_config, models[m].options, source + ": [grid] models[" + std::to_string(m) + "]", kModelKeys);
    ModelConfig dimensions;
    try {
      dimensions = model_config_for(model_config, 256);  // N does not depend on the vocabulary
    } catch (const Error& error) {
      throw Error(source + ": [grid] models[" + std::to_string(m) + "]: " + error.what());
    }
    const int64_t params = dimensions.num_non_embedding_parameters();
    const std::string model_name = models[m].name.empty() ? "n" + compact_number(static_cast<double>(params)) : models[m].name;
    const int64_t seq_len = model_config.seq_len > 0 ? model_config.seq_len : dimensions.context_length;
    for (const auto& method : methods) {
      const bool outer = method.method != "ddp";
      for (int64_t r : replicas) {
        for (int64_t h : outer ? sync_every : std::vector<int64_t>{0}) {
          for (const auto& budget : budgets) {
            Cell cell;
            cell.label = method.label;
            cell.model = model_name;
            cell.replicas = static_cast<int>(r);
            cell.sync_every = h;
            cell.dimensions = dimensions;
            cell.non_embedding_params = params;
            cell.method = method.label + (replicas.size() > 1 ? "-r" + std::to_string(r) : "") +
                          (outer && sync_every.size() > 1 ? "-h" + std::to_string(h) : "");
            cell.name = model_name + "-" + method.label + "-r" + std::to_string(r) +
                        (outer ? "-h" + std::to_string(h) : "") + "-" + budget.tag();
            const std::string where = source + ": cell " + cell.name;
            cell.config = model_config;
            // DDP with one process is the single-process baseline ("auto").
            cell.config.strategy = outer ? method.method : (r > 1 ? "ddp" : "auto");
            if (outer) cell.config.sync_every = h;
            apply_options(cell.config, method.options, source + ": [grid] methods (" + method.label + ")");
            cell.tokens_per_step = cell.config.batch_size * seq_len * cell.config.grad_accum * r;
            const double tokens = budget.tokens_for(params);
            cell.steps = std::max<int64_t>(1, std::llround(tokens / static_cast<double>(cell.tokens_per_step)));
            cell.config.steps = cell.steps;
            try {
              validate(cell.config);
            } catch (const Error& error) {
              throw Error(where + ": " + error.what());
            }
            if (!names.insert(cell.name).second) {
              throw Error(where + ": two cells have this name (give the models distinct name = \"...\")");
            }
            result.cells.push_back(std::move(cell));
          }
        }
      }
    }
  }
  return result;
}

Grid read_grid(const std::filesystem::path& path) { return parse_grid(read_whole_file(path), path.string()); }

}  // namespace strait::sweep
