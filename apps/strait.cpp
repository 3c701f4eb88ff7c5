// strait's command line: prepare, train, eval, export, generate, codec, launch, plan, fit, report, sweep.
// Every failure a user can cause ends as "strait: error: <what and where>" and exit status 1;
// usage mistakes (unknown flags, values of the wrong type or out of range) are reported by CLI11
// with the same prefix and exit status 2 (its convention is 106+, mapped to 2).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <type_traits>
#include <malloc.h>

#include "strait/codec/tensor_file.h"
#include "strait/core/config.h"
#include "strait/core/error.h"
#include "strait/core/suggest.h"
#include "strait/data/prepare.h"
#include "strait/data/tokenizer.h"
#include "strait/fit/report.h"
#include "strait/launch/launcher.h"
#include "strait/launch/rank_environment.h"
#include "strait/model/generate.h"
#include "strait/plan/plan.h"
#include "strait/report/report.h"
#include "strait/report/sync_chart.h"
#include "strait/sweep/sweep.h"
#include "strait/train/checkpoint.h"
#include "strait/train/evaluate.h"
#include "strait/train/export.h"
#include "strait/train/trainer.h"

namespace {

namespace fs = std::filesystem;

// CLI11's own Range lets NaN through and prints its bounds as "0.000000 to 1797693...", so
// numeric options are checked with this instead; CLI11 prefixes the message with the flag and
// reports it as a usage error.
template <typename T>
CLI::Validator at_least(int64_t minimum) {
  const std::string expected =
      std::string(std::is_integral_v<T> ? "an integer" : "a finite number") + " >= " + std::to_string(minimum);
  return CLI::Validator(
      [minimum, expected](std::string& input) {
        T value{};
        const bool valid = CLI::detail::lexical_cast(input, value) && std::isfinite(static_cast<double>(value)) &&
                           value >= static_cast<T>(minimum);
        return valid ? std::string() : "got '" + input + "', expected " + expected;
      },
      "");  // no text in --help, where it would read "FLOAT:>= 0=0.8"
}

// CLI11 check of a name that a strait parser turns into a value: a bad name is a usage error
// carrying the parser's message (which lists the valid names).
template <typename Parse>
CLI::Validator parsed_by(Parse parse) {
  return CLI::Validator(
      [parse](std::string& input) {
        try {
          parse(input);
        } catch (const strait::Error& error) {
          return std::string(error.what());
        }
        return std::string();
      },
      "");
}

// An empty --out would otherwise resolve to the current directory or to nothing at all.
CLI::Validator non_empty_path(const std::string& expected) {
  return CLI::Validator(
      [expected](std::string& input) { return input.empty() ? "got an empty path, expected " + expected : std::string(); },
      "");
}
const CLI::Validator kNonEmptyPath = non_empty_path("a directory");

struct Command {
  CLI::App* app;
  std::function<void()> run;
};

Command add_prepare(CLI::App& cli, bool& quiet) {
  auto options = std::make_shared<strait::data::PrepareOptions>();
  auto* app = cli.add_subcommand("prepare", "turn text files into token shards and a tokenizer");
  app->add_option("inputs,--input", options->inputs, "text files or directories")->required();
  app->add_option("--out", options->out_dir, "output data directory")->required()->check(kNonEmptyPath);
  app->add_option("--tokenizer", options->tokenizer, "byte or bpe (SentencePiece)")->capture_default_str();
  app->add_option("--vocab-size", options->vocab_size, "vocabulary size for bpe")->capture_default_str();
  app->add_option("--format", options->format, "auto, text or brown (word/TAG corpus)")->capture_default_str();
  app->add_option("--val-fraction", options->val_fraction, "fraction of documents held out")->capture_default_str();
  app->add_option("--shard-tokens", options->shard_tokens, "tokens per shard file")->capture_default_str();
  app->add_flag("--overwrite", options->overwrite, "replace an existing data directory");
  return {app, [options, &quiet] {
            auto progress = [&quiet](const std::string& line) {
              if (!quiet) std::cerr << "prepare: " << line << "\n";
            };
            const auto summary = strait::data::prepare_corpus(*options, progress);
            std::cout << nlohmann::json{{"out", options->out_dir.string()},
                                        {"documents_train", summary.documents_train},
                                        {"documents_val", summary.documents_val},
                                        {"tokens_train", summary.tokens_train},
                                        {"tokens_val", summary.tokens_val},
                                        {"vocab_size", summary.vocab_size}}
                             .dump()
                      << "\n";
          }};
}

std::string flag_of(const std::string& key) {
  std::string flag = "--" + key;
  for (char& c : flag) c = (c == '_') ? '-' : c;
  return flag;
}

Command add_train(CLI::App& cli, bool& quiet, int& exit_status) {
  auto* app = cli.add_subcommand("train", "train a model (options also come from --config run.toml/.json)");
  auto config_file = std::make_shared<std::string>();
  app->add_option("--config", *config_file, "TOML or JSON file of options; flags override it");
  // One flag per entry of the option table; values are kept as text and applied after the
  // config file, so the command line wins.
  auto texts = std::make_shared<std::map<std::string, std::string>>();
  auto flags = std::make_shared<std::map<std::string, bool>>();
  for (const auto& option : strait::train_options()) {
    if (std::holds_alternative<bool strait::TrainConfig::*>(option.field)) {
      app->add_flag(flag_of(option.key), (*flags)[option.key], option.help);
    } else {
      // The last occurrence wins, so wrappers (scripts/demo) can pass defaults the user overrides.
      app->add_option(flag_of(option.key), (*texts)[option.key], option.help)
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
  }
  return {app, [app, config_file, texts, flags, &quiet, &exit_status] {
            strait::TrainConfig config;
            if (!config_file->empty()) strait::load_config_file(*config_file, config);
            for (const auto& option : strait::train_options()) {
              if (app->count(flag_of(option.key)) == 0) continue;
              const bool is_flag = std::holds_alternative<bool strait::TrainConfig::*>(option.field);
              strait::set_option_from_text(config, option,
                                           is_flag ? ((*flags)[option.key] ? "true" : "false") : (*texts)[option.key]);
            }
            const auto summary = strait::train(config, {!quiet});
            exit_status = strait::exit_status_of(summary);  // 128 + the signal that stopped the run
            if (strait::launch::read_rank_environment().rank != 0) return;  // rank 0 reports for the job
            if (exit_status == 0) {
              std::cerr << "strait: run finished: " << config.out << " (metrics.jsonl, summary.json, checkpoints/)\n";
            }
            std::cout << summary.dump() << "\n";
          }};
}

Command add_eval(CLI::App& cli) {
  struct Args {
    std::string checkpoint, shard;
    int64_t max_windows = 0, batch_size = 8, threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand("eval", "mean next-token loss of a checkpoint on a token shard");
  app->add_option("--checkpoint", args->checkpoint, "checkpoint directory (RUN/checkpoints/step-N)")->required();
  app->add_option("--data", args->shard, "token shard (.bin)")->required();
  app->add_option("--max-windows", args->max_windows, "evaluate at most this many windows (0: all)")
      ->check(at_least<int64_t>(0));
  app->add_option("--batch-size", args->batch_size, "windows per forward pass")
      ->capture_default_str()
      ->check(at_least<int64_t>(1));
  app->add_option("--threads", args->threads, "LibTorch threads (0: all cores)")->check(at_least<int64_t>(0));
  return {app, [args] {
            torch::set_num_threads(strait::resolve_threads(args->threads));
            const auto model = strait::load_model(args->checkpoint);
            strait::check_shard_for_checkpoint(args->checkpoint, args->shard, [](const std::string& line) {
              std::cerr << "strait: note: " << line << "\n";
            });
            const auto result = strait::evaluate_shard(model, args->shard, args->max_windows, args->batch_size);
            std::cout << nlohmann::json{{"checkpoint", args->checkpoint}, {"data", args->shard},
                                        {"context_length", model.config().context_length},
                                        {"windows", result.windows}, {"tokens", result.tokens},
                                        {"loss", result.loss}}
                             .dump()
                      << "\n";
          }};
}

Command add_export(CLI::App& cli) {
  auto checkpoint = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto options = std::make_shared<strait::ExportOptions>();
  auto* app = cli.add_subcommand("export", "write a checkpoint as a Hugging Face Llama directory");
  app->add_option("--checkpoint", *checkpoint, "checkpoint directory")->required();
  app->add_option("--out", *out, "output directory (config.json + model.safetensors)")->required()->check(kNonEmptyPath);
  app->add_option("--dtype", options->dtype, "float32 or bfloat16")->capture_default_str();
  app->add_flag("--overwrite", options->overwrite, "replace an earlier export at --out");
  return {app, [checkpoint, out, options] {
            strait::export_hf(*checkpoint, *out, *options);
            std::cerr << "strait: exported " << *checkpoint << " to " << *out << "\n";
          }};
}

// Prints the per-tensor table of `strait codec` and its total.
void print_codec_report(const nlohmann::json& report) {
  std::fprintf(stderr, "%-48s %10s %8s %10s %6s %8s %8s %8s\n", "tensor", "elements", "kept", "bytes", "bits/i",
               "vs fp32", "vs bf16", "rel err");
  for (const auto& t : report.at("tensors")) {
    std::fprintf(stderr, "%-48s %10lld %8lld %10.0f %6.2f %7.1fx %7.1fx %8.4f\n", t.at("name").get<std::string>().c_str(),
                 t.at("elements").get<long long>(), t.at("kept").get<long long>(), t.at("payload_bytes").get<double>(),
                 t.at("bits_per_index").get<double>(), t.at("ratio_fp32").get<double>(), t.at("ratio_bf16").get<double>(),
                 t.at("relative_error").get<double>());
  }
  const auto& total = report.at("total");
  std::fprintf(stderr, "%-48s %10.0f %8.0f %10.0f %6.2f %7.1fx %7.1fx\n", "total (with the 32-byte header)",
               total.at("elements").get<double>(), total.at("kept").get<double>(), total.at("payload_bytes").get<double>(),
               total.at("bits_per_index").get<double>(), total.at("ratio_fp32").get<double>(),
               total.at("ratio_bf16").get<double>());
  std::fprintf(stderr, "index coding %s: the payload uses %s\n", report.at("index_coding").get<std::string>().c_str(),
               report.at("payload_coding").get<std::string>().c_str());
}

Command add_codec(CLI::App& cli, bool& quiet) {
  struct Args {
    std::string in, out, index_coding;
    std::vector<std::string> delta;
    strait::codec::TensorFileOptions options;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand(
      "codec", "one SparseLoCo compression round over a safetensors file (or the difference of two): "
               "what it would send, and the decoded tensors");
  auto* in = app->add_option("--in", args->in, "safetensors file to compress");
  auto* delta = app->add_option("--delta", args->delta, "two safetensors files A B: compress A - B")->expected(2);
  in->excludes(delta);
  app->add_option("--out", args->out, "where to write the decoded tensors (float32 safetensors)")
      ->required()
      ->check(kNonEmptyPath);
  app->add_option("--topk", args->options.sparse.topk, "values kept per 4096 elements of a chunk")
      ->capture_default_str()
      ->check(at_least<int64_t>(1));
  // Checked while parsing, so a bad name is a usage error that lists the valid ones.
  args->index_coding = strait::codec::to_string(args->options.sparse.index_coding);
  app->add_option("--index-coding", args->index_coding,
                  "how positions travel: fixed (ceil(log2 C) bits each), rice (gaps), bitmap, or auto (the smallest)")
      ->capture_default_str()
      ->check(parsed_by(strait::codec::index_coding));
  app->add_flag("--overwrite", args->options.overwrite, "replace an earlier strait codec output at --out");
  return {app, [args, &quiet] {
            if (args->in.empty() && args->delta.empty()) throw strait::Error("codec: pass --in FILE or --delta A B");
            args->options.sparse.index_coding = strait::codec::index_coding(args->index_coding);
            const bool is_delta = !args->delta.empty();
            const auto report = strait::codec::compress_tensor_file(
                is_delta ? args->delta[0] : args->in,
                is_delta ? std::optional<fs::path>(args->delta[1]) : std::nullopt, args->out, args->options);
            if (!quiet) print_codec_report(report);
            std::cout << report.dump() << "\n";
          }};
}

Command add_plan(CLI::App& cli, bool& quiet) {
  struct Args {
    strait::plan::Cluster cluster;
    strait::plan::Workload workload;
    strait::plan::MethodOptions methods;
    std::string link, measured, outer_dtype = "fp32", wire_dtype = "bf16", index_coding = "auto", inner = "ddp";
    std::vector<std::string> method_names;
    double params = 0, flops = 0, step_compute_s = 0, bucket_mb = 25, codec_ns_per_param = -1;
    int64_t batch_size = 1, seq_len = 4096, tokens_per_step = 0;
    bool json = false;
    std::vector<std::string> sync_links, chart_runs;
    std::vector<int> sync_replicas = {2, 4, 8, 16};
    std::string chart;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand("plan", "predict bytes and time per step of every method on a cluster, and recommend one");
  auto* params = app->add_option("--params", args->params, "model parameters, e.g. 7e9 (default with --measured: the run's)");
  app->add_option("--nodes", args->cluster.nodes, "nodes (one replica each for the outer methods)")
      ->capture_default_str()
      ->check(at_least<int>(1));
  app->add_option("--ranks-per-node", args->cluster.ranks_per_node, "ranks (accelerators) per node")
      ->capture_default_str()
      ->check(at_least<int>(1));
  app->add_option("--link", args->link, "each node's link rate, each way, as tc writes it: 12.5gbit, 100mbit, 20mbit")
      ->required()
      ->check(parsed_by(strait::plan::parse_link_rate));
  app->add_option("--link-efficiency", args->cluster.link_efficiency, "share of the rate TCP payload gets")
      ->capture_default_str();
  app->add_option("--flops", args->flops, "sustained FLOP/s of one rank, e.g. 300e12");
  app->add_option("--tokens-per-step", args->tokens_per_step, "tokens per rank per step (default batch x seq-len)")
      ->check(at_least<int64_t>(1));
  app->add_option("--batch-size", args->batch_size, "sequences per rank per step")->capture_default_str()->check(at_least<int64_t>(1));
  app->add_option("--seq-len", args->seq_len, "tokens per sequence")->capture_default_str()->check(at_least<int64_t>(1));
  app->add_option("--step-compute-s", args->step_compute_s, "a step's compute time in seconds, instead of --flops");
  app->add_option("--measured", args->measured,
                  "a strait run directory whose metrics give the step compute time (and a SparseLoCo run's, its codec time)");
  app->add_option("--codec-ns-per-param", args->codec_ns_per_param,
                  "SparseLoCo's codec CPU time per parameter per sync, in ns (default: --measured's, else left out)")
      ->check(at_least<double>(0));
  app->add_option("--inner", args->inner,
                  "what the outer methods' replicas (one a node) run inside: ddp, or zero3 (each rank keeps and "
                  "exchanges a shard; streaming-diloco is then left out)")
      ->capture_default_str()
      ->check(CLI::IsMember({"ddp", "zero3"}));
  app->add_option("--method", args->method_names, "methods to compare (repeat or comma-separate; default all)")
      ->delimiter(',')
      ->check(parsed_by([](const std::string& name) { strait::plan::method_named(name, {}); }));
  app->add_option("--sync-every", args->methods.sync_every, "H: outer methods sync every H steps (SparseLoCo's 512M setting)")
      ->capture_default_str()
      ->check(at_least<int>(1));
  app->add_option("--fragments", args->methods.fragments, "streaming DiLoCo's fragments P")->capture_default_str()->check(at_least<int>(1));
  app->add_option("--overlap-steps", args->methods.overlap_steps, "streaming DiLoCo's tau")->capture_default_str()->check(at_least<int>(0));
  app->add_option("--outer-dtype", args->outer_dtype, "dense outer exchange: fp32, bf16, int8, int4")
      ->capture_default_str()
      ->check(parsed_by(strait::codec::parse_wire_dtype));
  app->add_option("--wire-dtype", args->wire_dtype, "ZeRO's weights and gradients: fp32, bf16")
      ->capture_default_str()
      ->check(parsed_by(strait::codec::parse_wire_dtype));
  app->add_option("--topk", args->methods.sparse.topk, "SparseLoCo: values kept per 4096")->capture_default_str()->check(at_least<int64_t>(1));
  app->add_option("--index-coding", args->index_coding, "SparseLoCo: fixed, rice, bitmap, auto")
      ->capture_default_str()
      ->check(parsed_by(strait::codec::index_coding));
  app->add_option("--bucket-mb", args->bucket_mb, "DDP's gradient bucket size, MiB")->capture_default_str();
  app->add_flag("--json", args->json, "print one JSON object instead of the table");
  app->add_option("--min-sync-every", args->sync_links,
                  "also print the smallest H at which one outer exchange costs < 10% of H steps' compute, "
                  "for these link rates (comma list) and the --replica-counts")
      ->delimiter(',')
      ->check(parsed_by(strait::plan::parse_link_rate));
  auto* replica_counts =
      app->add_option("--replica-counts", args->sync_replicas, "replicas (one per node) for --min-sync-every")
          ->delimiter(',')
          ->capture_default_str()
          ->check(at_least<int>(1));
  auto* chart =
      app->add_option("--chart", args->chart,
                      "also draw --min-sync-every's table as a self-contained SVG file: smallest H against link rate "
                      "(log-log), a line per method x replica count")
          ->check(CLI::Validator(
              [](std::string& input) {
                const fs::path path(input);
                return path.extension() == ".svg" && !path.stem().empty()
                           ? std::string()
                           : "got '" + input + "', expected an .svg file to write";
              },
              ""));
  auto* chart_runs =
      app->add_option("--chart-runs", args->chart_runs,
                      "runs of local-sgd, diloco or sparseloco on shaped links (run or cell directories, comma list): "
                      "their measured smallest H as points on the chart")
          ->delimiter(',');
  auto* sync_links = app->get_option("--min-sync-every");
  replica_counts->needs(sync_links);
  chart->needs(sync_links);
  chart_runs->needs(chart);
  app->add_flag("--overwrite", args->overwrite, "replace an earlier chart at --chart")->needs(chart);
  return {app, [args, params, &quiet] {
            bool have_params = params->count() > 0;
            if (!args->measured.empty()) {
              const auto run = strait::plan::read_measured_run(args->measured);
              args->workload.step_compute_s = run.step_compute_s;
              args->workload.sparse_codec_s_per_param = run.sparse_codec_s_per_param;
              if (!have_params && run.params) {
                args->params = *run.params;
                args->workload.shapes = run.shapes;  // the run's own model: its tensors too
                args->workload.layer_elements = run.layer_elements;
                have_params = true;
              }
            } else if (args->step_compute_s != 0) {
              args->workload.step_compute_s = args->step_compute_s;
            } else if (args->flops == 0) {
              throw strait::Error("plan: give the compute rate: --flops (per rank), --step-compute-s or --measured RUN_DIR");
            }
            if (!have_params) throw strait::Error("plan: --params is required (e.g. --params 7e9)");
            if (args->codec_ns_per_param >= 0) args->workload.sparse_codec_s_per_param = args->codec_ns_per_param * 1e-9;
            args->workload.params = args->params;
            args->workload.flops_per_rank = args->flops;
            args->workload.tokens_per_rank_step = static_cast<double>(
                args->tokens_per_step > 0 ? args->tokens_per_step : args->batch_size * args->seq_len);
            args->cluster.link_bits_per_s = strait::plan::parse_link_rate(args->link);
            args->methods.outer_dtype = strait::codec::parse_wire_dtype(args->outer_dtype);
            args->methods.wire_dtype = strait::codec::parse_wire_dtype(args->wire_dtype);
            args->methods.sparse.index_coding = strait::codec::index_coding(args->index_coding);
            if (!(args->bucket_mb > 0)) throw strait::Error("plan: --bucket-mb must be > 0");
            args->methods.bucket_bytes = args->bucket_mb * 1024 * 1024;
            args->methods.zero3_inside = args->inner == "zero3";
            if (args->method_names.empty()) {
              args->method_names = strait::plan::method_names();
              if (args->methods.zero3_inside) {  // not modelled with ZeRO-3 inside
                auto& names = args->method_names;
                names.erase(std::remove(names.begin(), names.end(), "streaming-diloco"), names.end());
              }
            }
            std::vector<strait::plan::Prediction> predictions;
            for (const auto& name : args->method_names) {
              predictions.push_back(strait::plan::predict(args->cluster, args->workload,
                                                          strait::plan::method_named(name, args->methods)));
            }
            // Everything is computed (and the chart written) before anything is printed, so that a
            // refused chart or a bad run leaves no half output.
            nlohmann::json json = strait::plan::plan_json(args->cluster, args->workload, predictions);
            std::string out = args->json ? json.dump(2) + "\n"
                                         : strait::plan::plan_table(args->cluster, args->workload, predictions);
            if (args->sync_links.empty()) {
              std::cout << out;
              return;
            }
            // The methods asked for that wait at their outer step.
            std::vector<strait::plan::MethodSpec> blocking;
            for (const auto& prediction : predictions) {
              const auto kind = prediction.method.kind;
              if (kind == strait::plan::Kind::LocalSgd || kind == strait::plan::Kind::Diloco ||
                  kind == strait::plan::Kind::SparseLoco) {
                blocking.push_back(prediction.method);
              }
            }
            if (blocking.empty()) throw strait::Error("plan: --min-sync-every needs --method local-sgd, diloco or sparseloco");
            std::vector<double> rates;
            for (const auto& link : args->sync_links) rates.push_back(strait::plan::parse_link_rate(link));
            constexpr double kBudget = 0.1;
            const auto cells = strait::plan::sync_conditions(args->cluster, args->workload, blocking, rates,
                                                             args->sync_replicas, kBudget);
            if (args->json) {  // one JSON object: the prediction and the conditions, no tables
              json["min_sync_every"] = strait::plan::sync_conditions_json(cells);
              out = json.dump(2) + "\n";
            } else {
              out += "\n" + strait::plan::sync_condition_table(args->cluster, args->workload, blocking, rates,
                                                               args->sync_replicas, kBudget);
            }
            if (!args->chart.empty()) {
              std::vector<strait::report::MeasuredSync> runs;
              for (const auto& dir : args->chart_runs) runs.push_back(strait::report::measured_sync(dir, kBudget));
              if (!runs.empty() && !args->json) out += "\n" + strait::report::measured_sync_table(runs, kBudget);
              strait::report::write_sync_chart(
                  args->chart, strait::report::sync_chart_svg(args->cluster, args->workload, cells, runs, kBudget),
                  args->overwrite);
            }
            std::cout << out;
            if (!args->chart.empty() && !quiet) std::cerr << "strait: wrote " << args->chart << "\n";
          }};
}

Command add_generate(CLI::App& cli) {
  struct Args {
    std::string checkpoint, prompt;
    int64_t threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto sampling = std::make_shared<strait::SamplingOptions>();
  auto* app = cli.add_subcommand("generate", "sample text from a checkpoint");
  app->add_option("--checkpoint", args->checkpoint, "checkpoint directory")->required();
  app->add_option("--prompt", args->prompt, "text to continue")->required();
  app->add_option("--max-tokens", sampling->max_new_tokens, "tokens to generate")
      ->capture_default_str()
      ->check(at_least<int64_t>(0));
  app->add_option("--temperature", sampling->temperature, "0 = greedy")
      ->capture_default_str()
      ->check(at_least<double>(0));
  app->add_option("--top-k", sampling->top_k, "sample among the k likeliest (0: all)")
      ->capture_default_str()
      ->check(at_least<int64_t>(0));
  app->add_option("--seed", sampling->seed, "sampling seed")->capture_default_str();
  app->add_option("--threads", args->threads, "LibTorch threads (0: all cores)")->check(at_least<int64_t>(0));
  return {app, [args, sampling] {
            torch::set_num_threads(strait::resolve_threads(args->threads));
            const auto model = strait::load_model(args->checkpoint);
            const auto tokenizer = strait::data::load_tokenizer(args->checkpoint);
            const std::vector<int> encoded = tokenizer->encode(args->prompt);
            const auto generated =
                strait::generate(model, std::vector<int64_t>(encoded.begin(), encoded.end()), *sampling);
            std::cout << args->prompt << tokenizer->decode(std::vector<int>(generated.begin(), generated.end()))
                      << "\n";
          }};
}

// `strait fit DIR`: scaling laws per method from a sweep's cells.jsonl (src/strait/fit/cells.h
// defines the format). The report is printed even when a fit fails to converge, so the fits that
// worked are not lost; the command then fails naming the ones that did not.
Command add_fit(CLI::App& cli) {
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand(
      "fit", "fit L(N) = E + A*N^-alpha (and L(N,D) = ... + B*D^-beta where the grid allows) per method to a "
             "sweep's cells, with 95% intervals, and compare the methods' alpha");
  app->add_option("dir", args->path, "sweep directory (its cells.jsonl) or a cells .jsonl file")->required();
  app->add_flag("--json", args->json, "print the report as one JSON object");
  return {app, [args] {
            const auto report = strait::fit::fit_cells(strait::fit::read_cells(args->path));
            std::cout << (args->json ? strait::fit::report_json(report).dump() + "\n"
                                     : strait::fit::format_report(report));
            if (report.failures.empty()) return;
            std::string failed;
            for (const auto& failure : report.failures) failed += (failed.empty() ? "" : "; ") + failure;
            throw strait::Error("fit: " + std::to_string(report.failures.size()) + " fit(s) did not converge: " + failed);
          }};
}

// `strait sweep --grid grid.toml --out DIR`: runs a grid of training cells as child processes of
// this same binary, one JSON line per finished cell in DIR/cells.jsonl (strait fit's input).
Command add_sweep(CLI::App& cli, bool& quiet, int& exit_status) {
  struct Args {
    std::string grid, out;
    int parallel = 1;
    bool fail_fast = false, list = false;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand("sweep", "train a grid of models x methods x replicas x H x tokens, one cell at a "
                                          "time or several at once; resumable; results in DIR/cells.jsonl");
  app->add_option("--grid", args->grid, "TOML file: [train] shared options and [grid] lists to cross")->required();
  app->add_option("--out", args->out, "sweep directory (cells.jsonl, cells/<cell>/)")->check(kNonEmptyPath);
  app->add_option("--parallel", args->parallel, "cells run at once, splitting the cores between them")
      ->capture_default_str()
      ->check(at_least<int>(1));
  app->add_flag("--fail-fast", args->fail_fast, "stop at the first failed cell (the others checkpoint and stop)");
  app->add_flag("--list", args->list, "print the cells (name, N, steps, tokens) and run nothing");
  return {app, [args, &quiet, &exit_status] {
            const auto grid = strait::sweep::read_grid(args->grid);
            if (args->list) {
              for (const auto& cell : grid.cells) {
                std::cout << nlohmann::json{{"cell", cell.name}, {"method", cell.method},
                                            {"non_embedding_params", cell.non_embedding_params},
                                            {"replicas", cell.replicas}, {"steps", cell.steps},
                                            {"tokens", cell.steps * cell.tokens_per_step}}
                                 .dump()
                          << "\n";
              }
              return;
            }
            if (args->out.empty()) throw strait::Error("sweep: --out DIR is required (or --list)");
            strait::sweep::SweepOptions options;
            options.out = args->out;
            options.parallel = args->parallel;
            options.fail_fast = args->fail_fast;
            options.program = fs::read_symlink("/proc/self/exe").string();
            // --quiet keeps only the failures: a failed cell must not go unnoticed.
            options.progress = [&quiet](const std::string& line) {
              if (!quiet || line.find("FAILED") != std::string::npos) std::cerr << line << "\n";
            };
            exit_status = strait::sweep::run_sweep(grid, options);
          }};
}

// `strait report [RUN_DIR...] [--sweep DIR...] --out report.html`: the runs side by side and the
// sweeps' scaling laws, as a page and a table.
Command add_report(CLI::App& cli, bool& quiet) {
  struct Args {
    std::vector<std::string> runs, sweeps;
    std::string out = "report.html", title = "strait: training runs compared";
    double target_loss = 0;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  auto* app = cli.add_subcommand("report", "compare training runs and show sweeps' scaling laws: one self-contained "
                                           "HTML page with SVG charts and tables, and a table on the terminal");
  app->add_option("runs", args->runs, "run directories (or cells holding run/ and testbed.json)");
  app->add_option("--sweep", args->sweeps,
                  "a sweep directory (its cells.jsonl, as strait fit reads it): its fitted L(N) per method, "
                  "charted and tabled; repeatable")
      ->check(non_empty_path("a directory or .jsonl file"));
  app->add_option("--out", args->out, "the HTML page to write")->capture_default_str()->check(non_empty_path("a file"));
  app->add_option("--title", args->title, "the page's title (default with --sweep alone: \"strait: scaling laws\")")
      ->capture_default_str();
  app->add_option("--target-loss", args->target_loss,
                  "the loss whose time to reach is compared (default: DDP's final validation loss + 3%)")
      ->check(CLI::PositiveNumber);
  app->add_flag("--overwrite", args->overwrite, "replace an earlier report at --out");
  return {app, [args, app, &quiet] {
            if (args->runs.empty() && args->sweeps.empty()) {
              throw strait::Error("report: nothing to report: give run directories, --sweep DIR, or both");
            }
            std::vector<strait::report::RunRecord> runs;
            for (const std::string& dir : args->runs) runs.push_back(strait::report::load_run(dir));
            strait::report::label_runs(runs);
            std::optional<double> target;
            if (app->count("--target-loss") > 0) target = args->target_loss;
            auto comparison = strait::report::compare(std::move(runs), target);
            for (const std::string& dir : args->sweeps) comparison.sweeps.push_back(strait::report::load_sweep(dir));
            const std::string title =
                args->runs.empty() && app->count("--title") == 0 ? "strait: scaling laws" : args->title;
            strait::report::write_html_report(args->out, strait::report::render_html(comparison, title),
                                              args->overwrite);
            std::cout << strait::report::render_table(comparison);
            if (!quiet) std::cerr << "strait: wrote " << args->out << "\n";
          }};
}

// `strait launch [options] -- <strait arguments>`: runs strait once per local rank. Its exit
// status is the first failing rank's, which main() must return as is (not as a strait::Error).
Command add_launch(CLI::App& cli, int& exit_status) {
  auto options = std::make_shared<strait::launch::LaunchOptions>();
  auto* app = cli.add_subcommand("launch", "run `strait <args>` on every local rank (strait launch -P 2 -- train ...)");
  app->add_option("-P,--nproc-per-node", options->nproc_per_node, "ranks on this node")->capture_default_str();
  app->add_option("--nnodes", options->nnodes, "nodes in the job")->capture_default_str();
  app->add_option("--node-rank", options->node_rank, "this node's index")->capture_default_str();
  app->add_option("--master-addr", options->master_addr, "address of node 0 (rendezvous)")->capture_default_str();
  app->add_option("--master-port", options->master_port, "rendezvous port")->capture_default_str();
  app->add_option("arguments", options->arguments, "strait arguments for each rank, after --")->required();
  return {app, [options, &exit_status] {
            options->program = fs::read_symlink("/proc/self/exe").string();
            exit_status = strait::launch::run_launch(*options);
          }};
}

// What CLI11 reports as "A subcommand is required" or "arguments were not expected", said in
// terms of the mistake: an unknown command or option, with the nearest real one. "" when
// neither applies (CLI11's own message is then shown).
std::string usage_hint(const CLI::App& cli, int argc, char** argv) {
  std::vector<std::string> commands;
  for (const CLI::App* command : cli.get_subcommands({})) commands.push_back(command->get_name());
  for (const CLI::App* command : cli.get_subcommands({})) {
    if (!command->parsed()) continue;
    for (const std::string& extra : command->remaining()) {
      if (extra.rfind("--", 0) != 0 || extra.size() < 3) continue;
      const std::string flag = extra.substr(0, extra.find('='));
      std::vector<std::string> flags;
      for (const CLI::Option* option : command->get_options({})) {
        for (const std::string& name : option->get_lnames()) flags.push_back("--" + name);
      }
      const std::string closest = strait::closest_match(flag, flags);
      return command->get_name() + ": unknown option " + flag +
             (closest.empty() ? "" : " (did you mean " + closest + "?)") + "; see strait " + command->get_name() +
             " --help";
    }
    return "";
  }
  for (int i = 1; i < argc; ++i) {  // no command was recognised: the first word should be one
    const std::string word = argv[i];
    if (word.rfind("-", 0) == 0) continue;
    const std::string closest = strait::closest_match(word, commands);
    std::string list;
    for (const auto& command : commands) list += (list.empty() ? "" : ", ") + command;
    return "unknown command '" + word + "'" + (closest.empty() ? "" : " (did you mean '" + closest + "'?)") +
           "; the commands are " + list;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // Training allocates and frees the same large activation buffers every step. By default glibc
  // serves each from a fresh mmap and unmaps it on free, so every step page-faults them back in,
  // zero-filled by the kernel; keeping them in the heap (up to glibc's 32 MiB mmap ceiling) and
  // never trimming it removes that cost.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App cli{"strait: LLM training for slow networks"};
  cli.require_subcommand(1);
  // Usage errors start like every other error, so one pattern finds them all.
  cli.failure_message([](const CLI::App* app, const CLI::Error& error) {
    return "strait: error: " + CLI::FailureMessage::simple(app, error);
  });
  bool quiet = false;
  cli.add_flag("-q,--quiet", quiet, "no progress output");
  int exit_status = 0;
  std::vector<Command> commands = {add_prepare(cli, quiet), add_train(cli, quiet, exit_status), add_eval(cli), add_export(cli),
                                   add_generate(cli), add_codec(cli, quiet), add_launch(cli, exit_status),
                                   add_plan(cli, quiet), add_fit(cli), add_report(cli, quiet),
                                   add_sweep(cli, quiet, exit_status)};
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (const std::string hint = usage_hint(cli, argc, argv); !hint.empty() && error.get_exit_code() != 0) {
      std::cerr << "strait: error: " << hint << "\n";
      return 2;
    }
    const int code = cli.exit(error);
    return code == 0 ? 0 : 2;
  }
  try {
    for (const auto& command : commands) {
      if (command.app->parsed()) command.run();
    }
  } catch (const strait::Error& error) {
    std::cerr << "strait: error: " << error.what() << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "strait: internal error: " << error.what() << "\n";
    return 1;
  }
  return exit_status;
}
