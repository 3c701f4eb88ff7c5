// strait's run configuration: one typed table of options that drives the config file reader
// (TOML or JSON), the command-line overrides and the resolved-config printout, so an option is
// declared exactly once.
//
// Precedence, lowest to highest: built-in defaults < config file (--config) < command-line flags.
// Every key is checked: an unknown key or a value of the wrong type is an error that names the
// key, the file and what was expected, before anything is written.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace strait {

struct TrainConfig {
  // Where things are.
  std::string data;              // prepared data directory (strait prepare)
  std::string out = "runs/default";  // run directory: metrics.jsonl, checkpoints/, config.json
  // Model: a preset, optionally with explicit dimensions overriding it (0 = keep the preset's).
  std::string preset = "micro";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t context_length = 0;
  bool tie_embeddings = false;
  // Batch: batch_size sequences of seq_len tokens per micro-step, grad_accum micro-steps per step.
  int64_t batch_size = 8;
  int64_t seq_len = 0;  // 0 = the model's context length
  int64_t grad_accum = 1;
  // Optimisation: AdamW (or plain SGD), linear warmup then cosine decay to min_lr_ratio * lr,
  // global-norm clipping.
  std::string optimizer = "adamw";  // adamw, sgd
  int64_t steps = 1000;
  double lr = 3e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;  // 0 disables clipping
  // Numerics: "auto" = bf16-mixed where the CPU has native bf16 dot products, else fp32.
  std::string precision = "auto";
  // Bookkeeping.
  int64_t eval_every = 100;  // 0 disables periodic validation
  int64_t eval_batches = 20;
  int64_t checkpoint_every = 500;  // 0: only the final checkpoint
  int64_t keep_checkpoints = 3;    // older step-N directories are removed; 0 keeps all
  int64_t log_every = 10;
  int64_t seed = 1337;
  int64_t threads = 0;  // 0 = all cores of this process's share
  // Several processes (strait launch, torchrun, mpirun). A replica is a group of ranks that
  // synchronises every step with the inner method; an outer method synchronises the replicas
  // after optimizer steps (see strategy/strategy.h).
  std::string strategy = "auto";       // auto (single process or ddp), ddp, zero3, local-sgd, diloco, sparseloco
  std::string inner = "auto";          // auto, single (one-rank replicas), ddp, zero3
  std::string replica_ranks = "auto";  // ranks per replica: a number, "node", or auto (1 for outer methods)
  int64_t sync_every = 50;             // outer methods: inner steps between outer synchronisations (H)
  // local-sgd, diloco: time-box each inner phase to S seconds instead of H steps (0: H steps).
  // Replicas of unequal speed then each run as many steps as fit, and the outer average weights
  // each replica by the tokens it trained (see strategy/outer_sgd.h).
  double sync_every_seconds = 0;
  // Tests and benchmarks: "R:F[,R:F...]" makes replica R F times slower (after each step its
  // ranks sleep F - 1 times their fastest step's compute time), as a weaker machine would be.
  std::string throttle;
  // DiLoCo's and SparseLoCo's outer optimizer (SGD, with Nesterov momentum, on the averaged
  // pseudo-gradient) and the dtype dense outer exchanges travel in (fp32, bf16, int8 or int4
  // with one scale per block). outer_lr 0 and outer_momentum -1 mean the method's own default
  // (outer_lr_of, outer_momentum_of).
  double outer_lr = 0;
  double outer_momentum = -1;
  bool outer_nesterov = true;
  std::string outer_dtype = "fp32";
  // Streaming DiLoCo: P fragments (strided layer groups) on their own offsets in the H window,
  // each exchange overlapping τ inner steps, merged as α·local + (1 − α)·global.
  int64_t fragments = 1;
  int64_t overlap_steps = 0;
  double fragment_mix = 0.0;
  // SparseLoCo's compressor: kept values per 4096 of a chunk, 2-bit quantization bins, the
  // error buffer's decay β, how payloads are combined (mean over the replicas that kept a
  // coordinate, or sum / R), and how positions are coded.
  int64_t topk = 64;
  int64_t quant_bins = 4;
  double error_decay = 0.95;
  std::string aggregate = "mean";
  std::string index_coding = "auto";  // positions on the wire: fixed, rice, bitmap, or auto (the smallest)
  double bucket_mb = 25.0;        // DDP gradient bucket size
  std::string zero_wire_dtype = "fp32";  // zero3: what the gathers and reduce-scatters carry (fp32, bf16)
  // ZeRO++ (zero3 only), under DeepSpeed's names so that its settings carry over: int8 weight
  // gathers (qwZ), a per-node secondary copy of gathered weights for the gathers after the first
  // (hpZ: 1 off, or the ranks per node), an int4 hierarchical gradient all-to-all (qgZ).
  bool zero_quantized_weights = false;
  int64_t zero_hpz_partition_size = 1;
  bool zero_quantized_gradients = false;
  double comm_timeout_s = 300.0;  // rendezvous and every collective; a lost peer fails within it
  double checkpoint_timeout_s = 3600.0;  // how long ranks wait for a checkpoint's slowest writer
  // Network interface for Gloo (empty: $GLOO_SOCKET_IFNAME, else MASTER_ADDR's, fine on one machine).
  std::string gloo_interface;
  int64_t stop_after = 0;  // end this process after this step, with a checkpoint (0: run to `steps`)
  bool resume = false;     // continue from the newest valid checkpoint in `out`
  bool overwrite = false;  // replace an existing run directory
  std::string resume_from;  // "step-N" or "N": resume from that checkpoint, not the newest (implies resume)
};

// One entry of the option table.
struct OptionSpec {
  std::string key;   // snake_case, as in config files; the flag is --key-with-dashes
  std::string help;
  std::variant<std::string TrainConfig::*, int64_t TrainConfig::*, double TrainConfig::*, bool TrainConfig::*> field;
};

const std::vector<OptionSpec>& train_options();

// Reads a .toml or .json file into `config`, on top of what it already holds.
void load_config_file(const std::filesystem::path& path, TrainConfig& config);

// Sets one option from its command-line text (e.g. key "steps", text "200"); the error names
// the flag and the expected type.
void set_option_from_text(TrainConfig& config, const OptionSpec& option, const std::string& text);

// Whether the configuration asks for an outer method (replicas that synchronise every
// sync_every steps): local-sgd, diloco or sparseloco.
bool has_outer_method(const TrainConfig& config);

// The slow-down factor per replica index that `throttle` ("R:F[,R:F...]") names; replicas it
// does not name have 1. Throws strait::Error naming the malformed entry.
std::map<int64_t, double> parse_throttle(const std::string& text);

// The outer learning rate and momentum in effect: the configured ones, or the method's
// defaults (DiLoCo: 0.7 with momentum 0.9; SparseLoCo: 1 without momentum, its error buffer
// standing in for it).
double outer_lr_of(const TrainConfig& config);
double outer_momentum_of(const TrainConfig& config);

// Checks ranges and combinations that do not depend on the data or the model.
void validate(const TrainConfig& config);

nlohmann::json to_json(const TrainConfig& config);
// The options every rank of a job must agree on: to_json without the per-machine ones (paths,
// network interface, thread count), which legitimately differ between hosts.
nlohmann::json shared_settings(const TrainConfig& config);

// The keys whose values differ between two JSON objects, each as
// "key <first value> <first_where> vs <second value> <second_where>" (a missing key reads
// "none"), joined by ", "; empty when they are equal. E.g. "hidden_size 64 in the checkpoint vs
// 32 configured".
std::string describe_differences(const nlohmann::json& first, const std::string& first_where,
                                 const nlohmann::json& second, const std::string& second_where);
// Strict inverse of to_json (used for checkpoints): unknown keys and wrong types are errors.
TrainConfig train_config_from_json(const nlohmann::json& json, const std::string& source);

}  // namespace strait
