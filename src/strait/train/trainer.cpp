#include "strait/train/trainer.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <thread>

#include "strait/core/clock.h"
#include "strait/core/error.h"
#include "strait/core/file_lock.h"
#include "strait/core/fileio.h"
#include "strait/core/memory.h"
#include "strait/core/metrics.h"
#include "strait/core/stop_signal.h"
#include "strait/core/threads.h"
#include "strait/data/identity.h"
#include "strait/data/loader.h"
#include "strait/data/shard.h"
#include "strait/data/tokenizer.h"
#include "strait/launch/rank_environment.h"
#include "strait/strategy/strategy.h"
#include "strait/train/checkpoint.h"
#include "strait/train/efficiency.h"
#include "strait/train/evaluate.h"

namespace strait {

namespace fs = std::filesystem;

namespace {

std::string format_duration(double seconds) {
  const auto total = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  if (total >= 3600) std::snprintf(text, sizeof(text), "%lldh%02lldm", total / 3600, total / 60 % 60);
  else std::snprintf(text, sizeof(text), "%lldm%02llds", total / 60, total % 60);
  return text;
}

// Files a run writes; --overwrite removes exactly these, nothing else the user put there.
const char* const kRunFiles[] = {"metrics.jsonl", "summary.json", "config.json", "train_config.json", "checkpoints"};

bool holds_a_run(const fs::path& run_dir) {
  for (const char* name : kRunFiles) {
    if (fs::exists(run_dir / name)) return true;
  }
  return false;
}

// Rank 0, the run directory's writer, takes the directory's lock before it changes anything in
// it and holds it until the run ends, so that a second trainer on the same directory (--resume
// or --overwrite) stops at once instead of interleaving its metrics with ours and pruning our
// checkpoints.
FileLock prepare_run_dir(const TrainConfig& config) {
  const fs::path run_dir = config.out;
  if (fs::exists(run_dir) && !fs::is_directory(run_dir)) {
    throw Error("run directory " + run_dir.string() + " exists and is not a directory");
  }
  fs::create_directories(run_dir);
  FileLock lock(run_dir / ".lock", "run directory " + run_dir.string());
  if (holds_a_run(run_dir) && !config.resume) {
    if (!config.overwrite) {
      throw Error("run directory " + run_dir.string() +
                  " already holds a run; pass --resume to continue it or --overwrite to replace it");
    }
    for (const char* name : kRunFiles) fs::remove_all(run_dir / name);
  }
  return lock;
}

// The model configuration of a resumed run must be the one its checkpoint was trained with; the
// message names the keys that differ (e.g. "hidden_size 64 in the checkpoint vs 32 configured").
void check_resume_compatible(const CheckpointState& state, const ModelConfig& model, const fs::path& dir) {
  const nlohmann::json saved = to_hf_config(state.model_config), configured = to_hf_config(model);
  if (saved == configured) return;
  const std::string differences = describe_differences(saved, "in the checkpoint", configured, "configured");
  throw Error("cannot resume from " + dir.string() + ": it holds a different model than the one configured: " +
              differences + " (resume with the checkpoint's model options, or start a new run with --overwrite)");
}

// Fault injection for tests: STRAIT_TEST_SLOW_CHECKPOINT_MS=N makes rank 0's every checkpoint
// write N ms slower, as a slow or remote file system would, so a test can show that the other
// ranks wait for it (checkpoint_timeout_s) instead of failing at comm_timeout_s.
void simulate_slow_storage() {
  if (const char* delay = std::getenv("STRAIT_TEST_SLOW_CHECKPOINT_MS")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(delay)));
  }
}

struct StepResult {
  double loss = 0.0;       // mean over the step's micro-batches
  double lr = 0.0;
  double grad_norm = 0.0;  // before clipping
  // Where the step's time went: forward passes, backward passes (communication that overlaps
  // them included), and the strategy's step (waiting for reductions, clipping, the update).
  double forward_seconds = 0.0;
  double backward_seconds = 0.0;
  double update_seconds = 0.0;
  double throttle_seconds = 0.0;  // --throttle: the sleep that makes this replica slower
};

class Trainer {
 public:
  Trainer(const TrainConfig& config, const TrainOptions& options, const launch::RankEnvironment& environment)
      : config_(config),
        options_(options),
        environment_(environment),
        run_dir_(config.out),
        tokenizer_(data::load_tokenizer(config.data)),
        model_(model_config_for(config, tokenizer_->vocab_size())),
        seq_len_(config.seq_len > 0 ? config.seq_len : model_.config().context_length),
        train_loader_(make_loader("train")),
        val_loader_(make_loader("val")),
        precision_(resolve_precision(config.precision)) {
    data_files_ = data::verified_data_files(config.data, [this](const std::string& line) {
      if (prints()) std::cerr << "strait: note: " << line << "\n";
    });
    check_all_tokens();
    model_.init_weights(static_cast<uint64_t>(config.seed));
    model_.set_compute_dtype(precision_ == "bf16-mixed" ? torch::kBFloat16 : torch::kFloat32);
  }

  nlohmann::json run(Strategy& strategy);

 private:
  // Rank 0 alone writes the run directory and prints progress; every rank trains.
  bool is_writer() const { return environment_.rank == 0; }
  bool prints() const { return options_.progress && is_writer(); }
  data::TokenLoader make_loader(const std::string& split) const;
  void check_all_tokens() const;
  int64_t restore();
  fs::path named_checkpoint() const;
  [[noreturn]] void refuse_checkpoint(const fs::path& checkpoint, const Error& error) const;
  void remove_checkpoints_after(int64_t step) const;
  void check_same_data(const CheckpointState& state, const fs::path& checkpoint) const;
  StepResult train_step(int64_t step, int64_t schedule_step);
  double validation_loss();
  void save(int64_t step);
  void log_progress(int64_t step, int64_t position, const StepResult& result, double tokens_per_s, double elapsed);
  void print_configuration(int64_t first_step) const;
  nlohmann::json finished_run(int64_t checkpoint_step) const;
  void notice_stop_signal(int64_t step);
  void remove_abandoned_staging() const;

  TrainConfig config_;
  TrainOptions options_;
  launch::RankEnvironment environment_;
  Strategy* strategy_ = nullptr;  // set by run()
  fs::path run_dir_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  LlamaModel model_;
  std::optional<Optimizer> optimizer_;  // over what the strategy has this rank update; made by run()
  int64_t seq_len_;
  data::TokenLoader train_loader_;
  data::TokenLoader val_loader_;
  std::vector<int64_t> inputs_, targets_;  // batch buffers, reused every micro-step
  std::string precision_;  // "fp32" or "bf16-mixed"
  MatmulRates matmul_rates_;
  int64_t first_step_ = 1;
  nlohmann::json data_files_;  // what --data holds (data::verified_data_files), kept in checkpoints
  bool stop_noticed_ = false;  // a stop signal was seen and passed to the strategy
  double throttle_ = 1.0;      // --throttle: how many times slower this rank's replica runs
  double fastest_step_seconds_ = std::numeric_limits<double>::infinity();  // --throttle's measure
};

data::TokenLoader Trainer::make_loader(const std::string& split) const {
  // Checked here, before any loader reads a shard, so the message is about the configuration.
  if (seq_len_ > model_.config().context_length) {
    throw Error("seq_len " + std::to_string(seq_len_) + " exceeds the model's context length " +
                std::to_string(model_.config().context_length));
  }
  return data::TokenLoader(data::list_shards(config_.data, split), static_cast<int>(tokenizer_->vocab_size()),
                           static_cast<size_t>(config_.batch_size), static_cast<size_t>(seq_len_),
                           environment_.rank, environment_.world_size);
}

// The loaders check each shard's tokens when they first read it; checking every shard now means
// a bad token id is reported before the run directory is touched, not hours into a run.
void Trainer::check_all_tokens() const {
  for (const char* split : {"train", "val"}) {
    for (const auto& shard : data::list_shards(config_.data, split)) {
      data::check_token_range(data::read_shard(shard), tokenizer_->vocab_size(), shard.string());
    }
  }
}

// The checkpoint --resume-from names (step-N or N), which must exist.
fs::path Trainer::named_checkpoint() const {
  const std::string& name = config_.resume_from;
  const std::string digits = name.rfind("step-", 0) == 0 ? name.substr(5) : name;
  if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) {
    throw Error("--resume-from '" + name + "': expected step-N or N, e.g. step-000400");
  }
  const fs::path dir = checkpoint_dir(run_dir_, std::stoll(digits));
  if (fs::is_directory(dir)) return dir;
  std::string present;
  for (const auto& [step, path] : list_checkpoints(run_dir_)) present += " " + path.filename().string();
  throw Error("--resume-from " + name + ": " + dir.string() + " does not exist; the run's checkpoints are:" +
              (present.empty() ? " none" : present));
}

// The newest checkpoint cannot be used (`error`): the message names the older ones that verify
// and how to continue from one of them.
void Trainer::refuse_checkpoint(const fs::path& checkpoint, const Error& error) const {
  if (!config_.resume_from.empty()) throw error;  // the user chose this one
  std::vector<std::string> valid;  // newest first
  for (const auto& [step, dir] : list_checkpoints(run_dir_)) {
    if (dir == checkpoint) continue;
    try {
      read_checkpoint_state(dir);
      valid.insert(valid.begin(), dir.filename().string());
    } catch (const Error&) {
    }
  }
  if (valid.empty()) throw Error(std::string(error.what()) + "; no other checkpoint of this run verifies either");
  std::string names;
  for (const auto& name : valid) names += (names.empty() ? "" : ", ") + name;
  throw Error(std::string(error.what()) + "; older checkpoints that verify: " + names + "; pass --resume-from " +
              valid.front() + " to continue from the newest of them (the checkpoints after it are then removed)");
}

// --resume-from continues from an older checkpoint: the ones after it belong to the abandoned
// continuation (and would collide with the steps about to be saved again).
void Trainer::remove_checkpoints_after(int64_t step) const {
  for (const auto& [later, dir] : list_checkpoints(run_dir_)) {
    if (later <= step) continue;
    fs::remove_all(dir);
    std::fprintf(stderr, "strait: removed %s: --resume-from continues from step %lld\n", dir.c_str(),
                 static_cast<long long>(step));
  }
}

int64_t Trainer::restore() {
  if (!config_.resume) return 0;
  const auto latest =
      config_.resume_from.empty() ? latest_checkpoint(run_dir_) : std::optional<fs::path>(named_checkpoint());
  std::optional<CheckpointState> state;
  try {
    if (latest) state = read_checkpoint_state(*latest);
  } catch (const Error& error) {
    refuse_checkpoint(*latest, error);
  }
  // Rank 0 decides which step the job resumes from; every other rank must have found the same
  // one in its run directory, or all stop here with one message.
  try {
    strategy_->require_same_everywhere("resume_step", state ? state->step : 0);
  } catch (const Error& disagreement) {
    throw Error(std::string("cannot resume: ranks would resume from different checkpoints: ") + disagreement.what() +
                " (each rank resumes from the newest checkpoint in its --out directory; give every rank the same "
                "checkpoints, e.g. a shared run directory)");
  }
  if (!latest) {
    if (prints()) std::cerr << "strait: no checkpoint in " << run_dir_.string() << "; starting from step 0\n";
    return 0;
  }
  check_resume_compatible(*state, model_.config(), *latest);
  check_same_data(*state, *latest);
  if ((state->placement == Placement::Sharded) != (strategy_->model_placement() == Placement::Sharded)) {
    throw Error("cannot resume from " + latest->string() + ": it holds " + to_string(state->placement) +
                " model state and " + strategy_->name() + " keeps " + to_string(strategy_->model_placement()) +
                " state (resume with the strategy that wrote it)");
  }
  if (state->placement != Placement::Replicated && state->world_size != strategy_->world_size()) {
    throw Error("cannot resume from " + latest->string() + ": it holds the per-rank state of " +
                std::to_string(state->world_size) + " ranks, and this job has " +
                std::to_string(strategy_->world_size()));
  }
  if (state->placement == Placement::Sharded && state->shard_ranks != strategy_->replica_ranks()) {
    throw Error("cannot resume from " + latest->string() + ": its model is sharded over " +
                std::to_string(state->shard_ranks) + " ranks, and this job's replicas have " +
                std::to_string(strategy_->replica_ranks()));
  }
  try {
    load_checkpoint(*latest, model_, &*optimizer_, strategy_->rank(), strategy_->replicated_state(),
                    strategy_->rank_state());
  } catch (const Error& error) {
    refuse_checkpoint(*latest, error);
  }
  train_loader_.seek(state->cursor);
  if (prints()) std::cerr << "strait: resumed from " << latest->string() << " (step " << state->step << ")\n";
  return state->step;
}

// A resumed run must read the data its checkpoint was trained on: the same shards and tokenizer,
// byte for byte, wherever --data points on this machine.
void Trainer::check_same_data(const CheckpointState& state, const fs::path& checkpoint) const {
  if (state.data_files.is_null()) {
    if (prints()) {
      std::cerr << "strait: note: " << checkpoint.string() << " records no data hashes (an older strait wrote it): "
                << "the data is not checked against it\n";
    }
    return;
  }
  const std::string differences = data::data_differences(state.data_files, data_files_, "the checkpoint");
  if (!differences.empty()) {
    throw Error("cannot resume from " + checkpoint.string() + ": --data " + config_.data +
                " is not the data it was trained on: " + differences +
                " (resume with that data, or start a new run with --overwrite)");
  }
}

// `schedule_step` is where the learning-rate schedule is: `step`, or in a time-boxed run the
// run's progress (Strategy::synced_progress) plus this replica's steps since the last sync.
StepResult Trainer::train_step(int64_t step, int64_t schedule_step) {
  StepResult result;
  result.lr = learning_rate(schedule_step - 1, config_.steps, config_.warmup_steps, config_.lr, config_.min_lr_ratio);
  optimizer_->zero_grad();
  for (int64_t micro = 0; micro < config_.grad_accum; ++micro) {
    train_loader_.next_batch(inputs_, targets_);
    auto inputs = torch::from_blob(inputs_.data(), {config_.batch_size, seq_len_}, torch::kInt64);
    auto targets = torch::from_blob(targets_.data(), {config_.batch_size, seq_len_}, torch::kInt64);
    // Dividing each micro-batch's mean loss makes the accumulated gradient that of the mean
    // over the whole step's batch.
    const MicroBatchResult micro_batch = strategy_->forward_backward(
        model_, inputs, targets, static_cast<double>(config_.grad_accum), micro + 1 == config_.grad_accum);
    result.forward_seconds += micro_batch.forward_seconds;
    result.backward_seconds += micro_batch.backward_seconds;
    result.loss += micro_batch.loss;
  }
  const auto update_start = Clock::now();
  result.grad_norm = strategy_->step(model_, *optimizer_, result.lr, config_.grad_clip);
  result.update_seconds = seconds_since(update_start);
  if (throttle_ > 1) {  // before the mean, which carries a time box's end to the replica's ranks
    // The fastest step so far stands for the machine's speed: a step slowed by other processes
    // on the same cores does not lengthen the sleep as well.
    fastest_step_seconds_ = std::min(fastest_step_seconds_,
                                     result.forward_seconds + result.backward_seconds + result.update_seconds);
    result.throttle_seconds = (throttle_ - 1) * fastest_step_seconds_;
    std::this_thread::sleep_for(std::chrono::duration<double>(result.throttle_seconds));
  }
  notice_stop_signal(step);  // before the mean, which carries the request to the replica's ranks
  result.loss = strategy_->mean_over_replica(result.loss);
  return result;
}

double Trainer::validation_loss() {
  val_loader_.reset();
  const auto batch_loss = [this](const torch::Tensor& inputs, const torch::Tensor& targets) {
    return strategy_->batch_loss(model_, inputs, targets);
  };
  return strategy_->mean_over_all(mean_loss(val_loader_, config_.eval_batches, batch_loss));
}

// Every rank calls it. Per-rank state is written by each rank first; rank 0 then writes the
// replicated state and commits the checkpoint; nobody goes on until the commit is done. The
// waits use checkpoint_timeout_s: a slow write must not trip the others' comm_timeout_s.
void Trainer::save(int64_t step) {
  const std::string what = "checkpoint of step " + std::to_string(step);
  CheckpointState state;
  state.step = step;
  state.optimizer_steps = optimizer_->step_count();
  state.cursor = train_loader_.cursor();
  state.train_config = config_;
  state.model_config = model_.config();
  state.placement = strategy_->model_placement();
  state.world_size = strategy_->world_size();
  state.shard_ranks = strategy_->replica_ranks();
  state.data_files = data_files_;
  if (state.placement != Placement::Replicated) {
    save_rank_state(run_dir_, step, strategy_->rank(), *optimizer_, strategy_->rank_state());
    strategy_->wait_for_every_rank(what + ": every rank's files written");
  }
  if (is_writer()) {
    simulate_slow_storage();
    save_checkpoint(run_dir_, state, *optimizer_, config_.data, strategy_->replicated_state());
    prune_checkpoints(run_dir_, config_.keep_checkpoints);
  }
  strategy_->wait_for_every_rank(what + ": committed");
}

// A resumed run whose checkpoint is already at (or past) --steps: nothing to train, and nothing
// on disk may change, its summary least of all. Every rank gets here (they agreed on the step).
nlohmann::json Trainer::finished_run(int64_t checkpoint_step) const {
  if (is_writer()) {  // even with --quiet: it is the command's whole outcome
    std::fprintf(stderr, "strait: the run in %s is finished: its newest checkpoint is at step %lld and --steps is %lld; "
                 "nothing to do (raise --steps to train further)\n",
                 run_dir_.c_str(), static_cast<long long>(checkpoint_step), static_cast<long long>(config_.steps));
  }
  const fs::path summary = run_dir_ / "summary.json";
  if (fs::exists(summary)) return nlohmann::json::parse(read_whole_file(summary));
  return {{"last_step", checkpoint_step}, {"steps", config_.steps}, {"run_dir", run_dir_.string()}};
}

// A signal asked this process to stop (first seen during `step`): the strategy carries the
// request to the other ranks, and the loop stops once they agree (Strategy::request_stop).
void Trainer::notice_stop_signal(int64_t step) {
  const int signal = stop_signal_received();
  if (signal == 0 || stop_noticed_) return;
  stop_noticed_ = true;
  strategy_->request_stop();
  if (!is_writer()) return;  // one line for the job, even with --quiet
  const bool at_outer_sync = strategy_->world_size() > 1 && strategy_->has_outer_method();
  std::fprintf(stderr, "strait: %s received during step %lld: stopping %s with a checkpoint (a second signal exits at "
               "once, without one)\n", signal_name(signal).c_str(), static_cast<long long>(step),
               at_outer_sync ? "at the replicas' next outer sync" : "after this step");
}

// Leftovers of a trainer that was killed while it wrote a checkpoint: its staging directory
// (.step-N.staging-PID-X, kept while that process still runs) and per-rank staging
// (.step-N.ranks). The caller holds the run directory's lock, so no other trainer writes here.
void Trainer::remove_abandoned_staging() const {
  const fs::path checkpoints = run_dir_ / "checkpoints";
  std::vector<fs::path> removed = strait::remove_abandoned_staging(checkpoints);
  if (fs::is_directory(checkpoints)) {
    for (const auto& entry : fs::directory_iterator(checkpoints)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(".step-", 0) == 0 && name.size() > 6 && name.compare(name.size() - 6, 6, ".ranks") == 0) {
        fs::remove_all(entry.path());
        removed.push_back(entry.path());
      }
    }
  }
  for (const auto& path : removed) {
    std::fprintf(stderr, "strait: removed %s, left by an interrupted checkpoint write\n", path.c_str());
  }
}

void Trainer::print_configuration(int64_t first_step) const {
  if (!prints()) return;
  const ModelConfig& m = model_.config();
  std::fprintf(stderr,
               "strait: model %s: %lld parameters (C=%lld F=%lld L=%lld H=%lld T=%lld V=%lld%s)\n"
               "strait: batch %lld x %lld tokens x %lld accum, %lld steps from step %lld, lr %.3g, %d threads\n"
               "strait: data %s (%s tokenizer), run %s\n"
               "strait: precision %s%s; measured matmul rate %.0f GFLOP/s fp32, %.0f GFLOP/s bf16\n",
               config_.preset.c_str(), static_cast<long long>(m.num_parameters()),
               static_cast<long long>(m.hidden_size), static_cast<long long>(m.intermediate_size),
               static_cast<long long>(m.num_layers), static_cast<long long>(m.num_heads),
               static_cast<long long>(m.context_length), static_cast<long long>(m.vocab_size),
               m.tie_embeddings ? ", tied" : "", static_cast<long long>(config_.batch_size),
               static_cast<long long>(seq_len_), static_cast<long long>(config_.grad_accum),
               static_cast<long long>(config_.steps), static_cast<long long>(first_step), config_.lr,
               torch::get_num_threads(), config_.data.c_str(), tokenizer_->kind().c_str(), run_dir_.c_str(),
               precision_.c_str(), config_.precision == "auto" ? " (auto)" : "", matmul_rates_.fp32_gflops,
               matmul_rates_.bf16_gflops);
}

// `position`: where the run is (`step`, or a time-boxed run's estimate of its progress).
void Trainer::log_progress(int64_t step, int64_t position, const StepResult& result, double tokens_per_s,
                           double elapsed) {
  if (!prints()) return;
  const double seconds_per_step = elapsed / static_cast<double>(step - first_step_ + 1);
  const double eta = seconds_per_step * static_cast<double>(config_.steps - position);
  std::fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | %s elapsed | ETA %s\n",
               static_cast<long long>(position), static_cast<long long>(config_.steps), result.loss, result.lr,
               result.grad_norm, tokens_per_s, format_duration(elapsed).c_str(), format_duration(eta).c_str());
}

nlohmann::json Trainer::run(Strategy& strategy) {
  strategy_ = &strategy;
  strategy.prepare(model_);
  TrainableParameters trainable = strategy.trainable_parameters(model_);
  optimizer_.emplace(std::move(trainable.parameters),
                     OptimizerOptions{config_.beta1, config_.beta2, config_.adam_eps, config_.weight_decay,
                                      optimizer_kind(config_.optimizer)},
                     std::move(trainable.weight_decayed));
  const int64_t start_step = restore();
  if (start_step >= config_.steps) return finished_run(start_step);
  if (is_writer() && config_.resume) {
    remove_abandoned_staging();
    if (!config_.resume_from.empty()) remove_checkpoints_after(start_step);
  }
  strategy.synchronize_weights(model_, start_step > 0);
  strategy.take_step_traffic();  // start-up traffic (the weight broadcast) is not a step's; totals keep it
  first_step_ = start_step + 1;
  std::optional<MetricsWriter> metrics;
  if (is_writer()) {
    atomic_write_file(run_dir_ / "config.json", to_hf_config(model_.config()).dump(2) + "\n");
    atomic_write_file(run_dir_ / "train_config.json", to_json(config_).dump(2) + "\n");
    // A resumed run regenerates every line after its checkpoint, so later lines are dropped.
    metrics.emplace(run_dir_ / "metrics.jsonl", start_step);
  }
  matmul_rates_ = measure_matmul_rates();
  print_configuration(first_step_);
  if (const auto factors = parse_throttle(config_.throttle); factors.count(strategy.replica_index())) {
    throttle_ = factors.at(strategy.replica_index());
  }

  // Global figures: every replica trains on its own batch_size x seq_len x grad_accum tokens.
  const int64_t tokens_per_step = config_.batch_size * seq_len_ * config_.grad_accum * strategy.world_size();
  const double flops_per_token = training_flops_per_token(model_.config(), seq_len_);
  const double peak_flops = matmul_rates_.for_precision(precision_) * 1e9 * strategy.world_size();
  const auto run_start = Clock::now();
  double timed_seconds = 0.0;  // step time after the first step of this process (warm-up)
  int64_t timed_tokens = 0;
  nlohmann::json last_line = nlohmann::json::object();
  double last_val_loss = std::nan("");
  int stopped_by_signal = 0;
  // A time-boxed run (Strategy::synced_progress) counts its progress in the replicas' mean
  // steps, agreed at each outer sync: validations, checkpoints, --stop-after and the end follow
  // it, at syncs only. Otherwise the position is the step, the same on every rank.
  const bool time_boxed = strategy.synced_progress() >= 0;
  int64_t position = start_step;  // as of the last step that had one
  int64_t steps_since_sync = 0;   // time-boxed
  for (int64_t step = first_step_;; ++step) {
    const auto step_start = Clock::now();
    const int64_t schedule_step = time_boxed ? std::min(position + steps_since_sync + 1, config_.steps) : step;
    StepResult result = train_step(step, schedule_step);
    const auto outer_start = Clock::now();
    strategy.after_step(step, model_, !time_boxed && step == config_.steps);
    result.update_seconds += seconds_since(outer_start);
    nlohmann::json outer = strategy.take_outer_sync();
    const int64_t previous_position = position;
    const bool has_position = !time_boxed || !outer.empty();
    if (time_boxed) steps_since_sync = outer.empty() ? steps_since_sync + 1 : 0;
    if (has_position) position = time_boxed ? strategy.synced_progress() : step;
    const bool last = has_position && position >= config_.steps;
    // Whether the run passed a multiple of `every` (> 0) at this step.
    auto passes_multiple = [&](int64_t every) {
      return every > 0 && has_position && position / every > previous_position / every;
    };
    const double step_seconds = seconds_since(step_start);
    if (!std::isfinite(result.loss)) {
      throw Error("loss became " + std::to_string(result.loss) + " at step " + std::to_string(step) +
                  "; try a lower --lr or more --warmup-steps");
    }
    if (step > first_step_) timed_seconds += step_seconds, timed_tokens += tokens_per_step;
    const double tokens_per_s = static_cast<double>(tokens_per_step) / step_seconds;
    nlohmann::json line = {
        {"step", step},
        {"loss", result.loss},
        {"lr", result.lr},
        {"grad_norm", result.grad_norm},
        {"tokens", tokens_per_step},
        {"step_ms", step_seconds * 1000.0},
        {"forward_ms", result.forward_seconds * 1000.0},
        {"backward_ms", result.backward_seconds * 1000.0},
        {"update_ms", result.update_seconds * 1000.0},
        {"tokens_per_s", tokens_per_s},
        {"elapsed_s", seconds_since(run_start)},
        {"mfu", flops_per_token * tokens_per_s / peak_flops},
    };
    if (auto traffic = strategy.take_step_traffic(); !traffic.empty()) {
      line["traffic"] = traffic;
      line["comm_blocked_ms"] = strategy.take_blocked_seconds() * 1000.0;
    }
    if (result.throttle_seconds > 0) line["throttle_ms"] = result.throttle_seconds * 1000.0;
    if (!outer.empty()) line["outer_sync"] = outer;
    notice_stop_signal(step);
    const bool preempted = !last && strategy.stop_agreed();
    const bool stopping = (config_.stop_after > 0 && has_position && previous_position < config_.stop_after &&
                           position >= config_.stop_after) || preempted;
    if (passes_multiple(config_.eval_every) || last) {
      last_val_loss = validation_loss();
      line["val_loss"] = last_val_loss;
    }
    if (metrics) metrics->write(line);
    last_line = line;
    if (step % config_.log_every == 0 || last || step == first_step_) {
      log_progress(step, time_boxed ? schedule_step : step, result, tokens_per_s, seconds_since(run_start));
      if (line.contains("val_loss") && prints()) {
        std::fprintf(stderr, "step %lld | val_loss %.4f\n", static_cast<long long>(position), last_val_loss);
      }
    }
    if (passes_multiple(config_.checkpoint_every) || last || stopping) save(position);
    if (preempted) {
      // Ranks that were not signalled themselves stop with the others, as if by SIGTERM.
      const int signal = stop_signal_received() ? stop_signal_received() : SIGTERM;
      stopped_by_signal = signal;
      if (is_writer()) {
        std::fprintf(stderr, "strait: stopped by %s after step %lld: checkpoint %s written; exit status %d "
                     "(strait train --resume continues from it)\n", signal_name(signal).c_str(),
                     static_cast<long long>(position), checkpoint_dir(run_dir_, position).c_str(), 128 + signal);
      }
      break;
    }
    if (stopping) {
      if (prints()) std::fprintf(stderr, "strait: stopping after step %lld as asked; --resume continues\n",
                                 static_cast<long long>(position));
      break;
    }
    if (last) break;
  }
  // Global steps: with a time-boxed run, the replicas' mean (its tokens are steps x tokens_per_step).
  const int64_t steps_done = position - start_step;
  if (time_boxed) {  // the replicas ran different step counts: the rate is the whole job's
    timed_tokens = steps_done * tokens_per_step;
    timed_seconds = seconds_since(run_start);
  }

  nlohmann::json summary = {
      {"steps", config_.steps},
      {"last_step", position},
      {"strategy", strategy.name()},
      {"world_size", strategy.world_size()},
      {"parameters", model_.config().num_parameters()},
      {"tokens_per_step", tokens_per_step},
      {"tokens_per_s", timed_seconds > 0 ? static_cast<double>(timed_tokens) / timed_seconds : 0.0},
      {"precision", precision_},
      {"optimizer", to_string(optimizer_->kind())},
      {"matmul_gflops", matmul_rates_.to_json()},
      {"model_flops_per_token", flops_per_token},
      {"mfu", timed_seconds > 0 ? flops_per_token * static_cast<double>(timed_tokens) / timed_seconds / peak_flops : 0.0},
      {"wall_time_s", seconds_since(run_start)},
      {"final_loss", last_line.value("loss", std::nan(""))},
      {"final_val_loss", last_val_loss},
      {"run_dir", run_dir_.string()},
      {"peak_resident_bytes", peak_resident_bytes()},  // this rank's (every rank's: traffic_by_rank)
  };
  if (stopped_by_signal) summary["stopped_by_signal"] = stopped_by_signal;
  const nlohmann::json report = strategy.report();
  summary.update(report);
  if (report.contains("traffic") && steps_done > 0) {
    // The mean over the ranks: in a ring only some ranks send across nodes (ZeRO-3's gathers:
    // one per node), so one rank's count would say nothing of the others'.
    double cross_node = 0;
    for (const auto& rank : report.at("traffic_by_rank")) cross_node += rank.at("cross_node").at("sent").get<double>();
    cross_node /= static_cast<double>(report.at("traffic_by_rank").size());
    summary["cross_node_bytes_sent_per_rank"] = cross_node;
    summary["cross_node_bytes_sent_per_rank_per_step"] = cross_node / static_cast<double>(steps_done);
    summary["cross_node_bytes_sent_per_rank_per_token"] =
        cross_node / static_cast<double>(steps_done * tokens_per_step);
    // Outer methods: what all replicas sent each other, per token trained.
    double cross_replica = 0;
    for (const auto& rank : report.at("traffic_by_rank")) cross_replica += rank.at("cross_replica").at("sent").get<double>();
    if (cross_replica > 0) {
      summary["cross_replica_bytes_sent"] = cross_replica;
      summary["cross_replica_bytes_per_token"] = cross_replica / static_cast<double>(steps_done * tokens_per_step);
    }
  }
  // Rank 0's last checkpoint is complete before anyone reports success.
  strategy.wait_for_every_rank("end of the run");
  if (!is_writer()) return summary;
  if (auto latest = latest_checkpoint(run_dir_)) summary["checkpoint"] = latest->string();
  atomic_write_file(run_dir_ / "summary.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace

int resolve_threads(int64_t requested, int local_world_size) {
  if (requested > 0) return static_cast<int>(requested);
  // A launcher knows how many ranks share this machine: strait launch sets STRAIT_THREADS,
  // torchrun sets OMP_NUM_THREADS. Oversubscribing the cores is catastrophic (spinning OpenMP
  // workers), so without either the cores are split evenly.
  for (const char* variable : {"STRAIT_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* value = std::getenv(variable)) {
      try {
        const int threads = std::stoi(value);
        if (threads >= 1) return threads;
      } catch (const std::exception&) {
      }
      throw Error(std::string(variable) + "='" + value + "' is not a positive integer");
    }
  }
  return std::max(1, available_cores() / std::max(1, local_world_size));
}

nlohmann::json train(const TrainConfig& given, const TrainOptions& options) {
  validate(given);
  TrainConfig config = given;
  config.resume = config.resume || !config.resume_from.empty();
  const StopSignals stop_signals;  // from here on SIGTERM/SIGINT stop the run with a checkpoint
  const launch::RankEnvironment environment = launch::read_rank_environment();
  torch::set_num_threads(resolve_threads(config.threads, environment.local_world_size));
  // Build everything that reads input (tokenizer, shards, checkpoint) before touching the run
  // directory, so a bad input leaves an existing run exactly as it was.
  Trainer trainer(config, options, environment);
  std::optional<FileLock> run_lock;
  if (environment.rank == 0) run_lock.emplace(prepare_run_dir(config));
  std::unique_ptr<Strategy> strategy = make_strategy(config, environment);
  return trainer.run(*strategy);
}

int exit_status_of(const nlohmann::json& summary) {
  return summary.contains("stopped_by_signal") ? 128 + summary.at("stopped_by_signal").get<int>() : 0;
}

}  // namespace strait
