// strait report: what it reads from run directories (checked against figures computed by hand
// from the files the tests write), the page it renders (well-formed, every run in the table and
// the charts; checked by Python's XML and HTML parsers), a sweep's scaling laws on it (the
// constants strait fit computes, the cells and fitted curves on a log axis), and the command's
// refusal to replace what it did not write.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/fit/cells.h"
#include "strait/fit/report.h"
#include "strait/plan/plan.h"
#include "strait/report/report.h"
#include "strait/report/svg.h"
#include "test_support.h"

namespace strait::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::quoted;

// One metrics line: 10 ms forward, 20 ms backward, `update_ms`, elapsed `elapsed_s`.
json step_line(int64_t step, double elapsed_s, double update_ms) {
  return {{"step", step},          {"loss", 3.0},       {"elapsed_s", elapsed_s}, {"forward_ms", 10.0},
          {"backward_ms", 20.0},   {"update_ms", update_ms}};
}

void write_run(const fs::path& dir, const json& config, const std::vector<json>& lines, const json& summary = nullptr) {
  testing::write_file(dir / "train_config.json", config.dump());
  std::string metrics;
  for (const json& line : lines) metrics += line.dump() + "\n";
  testing::write_file(dir / "metrics.jsonl", metrics);
  if (!summary.is_null()) testing::write_file(dir / "summary.json", summary.dump());
}

// A DDP run of 4 steps on 2 nodes x 2 ranks: 5 ms of each update waited on reductions, 1000
// cross-node bytes sent per step by rank 0, validation at steps 2 and 4.
void write_ddp_cell(const fs::path& cell) {
  std::vector<json> lines;
  for (int step = 1; step <= 4; ++step) {
    json line = step_line(step, 0.5 * step, 40.0);
    line["comm_blocked_ms"] = 5.0;
    line["traffic"] = {{"cross_node", {{"sent", 1000}, {"received", 1000}}}, {"intra_node", {{"sent", 7}, {"received", 7}}}};
    if (step % 2 == 0) line["val_loss"] = 3.0 - 0.25 * step;  // 2.5, 2.0
    lines.push_back(line);
  }
  json summary = {{"wall_time_s", 2.5}, {"traffic_by_rank", json::array()}};
  for (double sent : {4000.0, 0.0, 3000.0, 1000.0}) summary["traffic_by_rank"].push_back({{"cross_node", {{"sent", sent}}}});
  write_run(cell / "run", {{"strategy", "ddp"}, {"sync_every", 50}}, lines, summary);
  json nodes = json::array();
  for (int node = 0; node < 2; ++node) {
    // TCP payload = tx_bytes - 66 per packet: 5000 - 660 and 3000 - 1320.
    nodes.push_back({{"node", node}, {"delta", {{"tx_bytes", node == 0 ? 5000 : 3000}, {"tx_packets", node == 0 ? 10 : 20}}}});
  }
  testing::write_file(cell / "testbed.json", json({{"link", "20mbit"},
                                                   {"link_bits_per_s", 2e7},
                                                   {"nnodes", 2},
                                                   {"nproc_per_node", 2},
                                                   {"nodes", nodes}})
                                                 .dump());
}

// A streaming DiLoCo run of 6 steps with one outer sync (blocked 300 ms) and a restart after
// step 3: the resumed process's clock starts again.
void write_diloco_run(const fs::path& dir) {
  std::vector<json> lines;
  for (int step = 1; step <= 6; ++step) {
    json line = step_line(step, step <= 3 ? 1.0 * step : 1.0 * (step - 3), 10.0);
    if (step == 3) line["outer_sync"] = {{"blocked_ms", 300.0}, {"step", 3}};
    if (step == 3 || step == 6) line["val_loss"] = step == 3 ? 2.1 : 1.9;
    lines.push_back(line);
  }
  write_run(dir,
            {{"strategy", "diloco"}, {"sync_every", 3}, {"fragments", 2}, {"overlap_steps", 1}, {"outer_dtype", "int4"},
             {"outer_lr", 0.5}, {"outer_momentum", 0.5}},
            lines);
}

TEST(ReportRuns, ReadTheTimingsBytesAndCurveOfACellOnTheTestbed) {
  testing::ScratchDir scratch;
  write_ddp_cell(scratch / "cell");
  const RunRecord run = load_run(scratch / "cell");
  EXPECT_EQ(run.method, "ddp");
  EXPECT_EQ(run.link, "20mbit");
  EXPECT_EQ(run.link_bits_per_s, 2e7);
  EXPECT_EQ(run.nodes, 2);
  EXPECT_EQ(run.ranks_per_node, 2);
  EXPECT_EQ(run.steps, 4);
  EXPECT_TRUE(run.finished);
  EXPECT_DOUBLE_EQ(run.wall_s, 2.5);  // the summary's, not the last line's 2.0
  EXPECT_DOUBLE_EQ(run.forward_s, 0.04);
  EXPECT_DOUBLE_EQ(run.backward_s, 0.08);
  EXPECT_DOUBLE_EQ(run.update_s, 0.16);
  EXPECT_DOUBLE_EQ(run.blocked_s, 0.02);
  EXPECT_DOUBLE_EQ(run.compute_s(), 0.26);
  EXPECT_DOUBLE_EQ(run.ledger_bytes_per_node, 4000.0);  // 8000 sent by the 4 ranks, over 2 nodes
  ASSERT_TRUE(run.kernel_bytes_per_node.has_value());
  EXPECT_DOUBLE_EQ(*run.kernel_bytes_per_node, (4340.0 + 1680.0) / 2);
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_EQ(run.curve[1].step, 4);
  EXPECT_DOUBLE_EQ(run.curve[0].elapsed_s, 1.0);
  EXPECT_DOUBLE_EQ(run.curve[0].cross_node_bytes, 2000.0);
  EXPECT_DOUBLE_EQ(run.curve[1].cross_node_bytes, 4000.0);
  EXPECT_DOUBLE_EQ(run.final_val_loss, 2.0);
}

// A finished run of 4 steps of 40 ms on 2 nodes of 1 rank at 20 Mbit/s (1000 parameters, 64
// tokens a step), trained with `config`: what plan's predictions are checked on.
void write_two_node_cell(const fs::path& cell, const json& config) {
  write_ddp_cell(cell);  // its testbed.json, rewritten for 2 nodes of 1 rank
  testing::write_file(cell / "testbed.json",
                      json({{"link", "20mbit"}, {"link_bits_per_s", 2e7}, {"nnodes", 2}, {"nproc_per_node", 1},
                            {"nodes", {{{"delta", {{"tx_bytes", 0}, {"tx_packets", 0}}}},
                                       {{"delta", {{"tx_bytes", 0}, {"tx_packets", 0}}}}}}})
                          .dump());
  std::vector<json> lines;
  for (int step = 1; step <= 4; ++step) {
    json line = step_line(step, step, 10);
    line["step_ms"] = 40.0;
    lines.push_back(line);
  }
  write_run(cell / "run", config, lines,
            {{"wall_time_s", 4.0}, {"parameters", 1000}, {"tokens_per_step", 64}, {"world_size", 2},
             {"traffic_by_rank", json::array()}});
}

TEST(ReportRuns, PlansPredictionAddsTheStartUpBroadcastToTheStepsBytes) {
  // DiLoCo, H = 2, on 2 nodes of 1 rank: 4 steps are 2 dense exchanges of the 1000 float32
  // weights, and the start-up broadcast sends rank 0's 4000 bytes of weights to rank 1 once.
  testing::ScratchDir scratch;
  write_two_node_cell(scratch / "cell", {{"strategy", "diloco"}, {"sync_every", 2}});
  const RunRecord run = load_run(scratch / "cell");
  ASSERT_TRUE(run.planned_bytes_per_node.has_value()) << run.plan_note;
  const plan::Cluster cluster{2, 1, 2e7};
  EXPECT_DOUBLE_EQ(*run.planned_bytes_per_node,
                   2 * plan::dense_exchange_bytes_per_node(cluster, 1000, codec::WireDtype::Fp32) + 4000.0 / 2);
  ASSERT_TRUE(run.planned_steps_s.has_value());
  EXPECT_GT(*run.planned_steps_s, 4 * 0.040) << "the measured compute plus the exchanges";
  EXPECT_DOUBLE_EQ(run.steps_s, 0.16);
  // An unfinished run (no summary.json) gets no prediction, and says why.
  fs::remove(scratch / "cell" / "run" / "summary.json");
  const RunRecord unfinished = load_run(scratch / "cell");
  EXPECT_FALSE(unfinished.planned_bytes_per_node.has_value());
  EXPECT_EQ(unfinished.plan_note, "unfinished: no summary.json");
}

TEST(ReportRuns, AZeroRunIsPlannedWithItsSwitchesAndWithoutAStartUpBroadcast) {
  // ZeRO-3 with qwZ on 2 nodes of 1 rank, 4 steps: plan's bytes for that combination, and none
  // for a broadcast (each rank keeps its shard of the weights it initialised).
  testing::ScratchDir scratch;
  write_two_node_cell(scratch / "cell", {{"strategy", "zero3"}, {"zero_quantized_weights", true}});
  const RunRecord run = load_run(scratch / "cell");
  EXPECT_EQ(run.method, "zero3 +qwZ");
  ASSERT_TRUE(run.planned_bytes_per_node.has_value()) << run.plan_note;
  plan::MethodOptions options;
  options.wire_dtype = codec::WireDtype::Fp32;
  plan::MethodSpec method = plan::method_named("zero3", options);
  method.qwz = true;
  plan::Workload work;
  work.params = 1000;
  work.step_compute_s = 0.01;
  const double per_step = plan::predict(plan::Cluster{2, 1, 2e7}, work, method).cross_node_bytes_per_node_per_step;
  EXPECT_DOUBLE_EQ(*run.planned_bytes_per_node, 4 * per_step);
}

TEST(ReportRuns, AResumedRunContinuesItsClockAndAnUnfinishedOneIsMarked) {
  testing::ScratchDir scratch;
  write_diloco_run(scratch / "run");
  const RunRecord run = load_run(scratch / "run");
  EXPECT_EQ(run.method, "streaming diloco H=3 P=2 τ=1 int4 outer lr=0.5 μ=0.5");
  EXPECT_EQ(run.link, "loopback");
  EXPECT_FALSE(run.finished);
  EXPECT_FALSE(run.kernel_bytes_per_node.has_value());
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(run.curve[1].elapsed_s, 6.0);  // 3 s before the restart + 3 s after
  EXPECT_DOUBLE_EQ(run.wall_s, 6.0);
  EXPECT_DOUBLE_EQ(run.blocked_s, 0.3);
  EXPECT_DOUBLE_EQ(time_to_reach(run, 2.0).value(), 6.0);
  EXPECT_DOUBLE_EQ(time_to_reach(run, 2.1).value(), 3.0);
  EXPECT_FALSE(time_to_reach(run, 1.8).has_value());
}

TEST(ReportRuns, OnLoopbackTheNodesAreTheOnesTheRunRecorded) {
  // Two launchers on one machine (scripts/compare --loopback): no testbed.json, but the summary
  // says how many nodes the ledger's cross-node bytes were counted over.
  testing::ScratchDir scratch;
  json summary = {{"wall_time_s", 1.0}, {"nodes", 2}, {"world_size", 4}, {"traffic_by_rank", json::array()}};
  for (double sent : {600.0, 0.0, 200.0, 0.0}) summary["traffic_by_rank"].push_back({{"cross_node", {{"sent", sent}}}});
  write_run(scratch / "run", {{"strategy", "ddp"}}, {step_line(1, 1, 1)}, summary);
  const RunRecord run = load_run(scratch / "run");
  EXPECT_EQ(run.link, "loopback");
  EXPECT_EQ(run.nodes, 2);
  EXPECT_EQ(run.ranks_per_node, 2);
  EXPECT_DOUBLE_EQ(run.ledger_bytes_per_node, 400.0);
}

TEST(ReportRuns, MethodNamesCarryTheSettingsThatDistinguishThem) {
  testing::ScratchDir scratch;
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"strategy", "auto"}}, "ddp"},
      {{{"strategy", "local-sgd"}, {"sync_every", 8}}, "local-sgd H=8"},
      {{{"strategy", "sparseloco"}, {"sync_every", 15}, {"topk", 64}, {"outer_dtype", "fp32"}}, "sparseloco H=15 k=64"},
      {{{"strategy", "diloco"}, {"sync_every", 50}, {"inner", "ddp"}}, "diloco H=50 (ddp inside)"},
      {{{"strategy", "zero3"}}, "zero3"},
      {{{"strategy", "zero3"}, {"zero_hpz_partition_size", 2}, {"zero_quantized_weights", true},
        {"zero_quantized_gradients", true}, {"zero_wire_dtype", "bf16"}},
       "zero3 +hpZ +qwZ +qgZ bf16"},
      {{{"strategy", "diloco"}, {"sync_every", 50}, {"sync_every_seconds", 13.5}, {"throttle", "3:2"}},
       "diloco S=13.5s throttle 3:2"},
  };
  for (const auto& [config, expected] : cases) {
    write_run(scratch / "run", config, {step_line(1, 1, 1)});
    EXPECT_EQ(load_run(scratch / "run").method, expected) << config.dump();
  }
  // Plan models a fixed H: a finished time-boxed run gets no prediction, and says why.
  write_run(scratch / "run", cases.back().first, {step_line(1, 1, 1)},
            {{"wall_time_s", 1.0}, {"parameters", 1000}, {"tokens_per_step", 64}, {"world_size", 2}});
  const RunRecord time_boxed = load_run(scratch / "run");
  EXPECT_NE(time_boxed.plan_note.find("time-boxed"), std::string::npos) << time_boxed.plan_note;
  EXPECT_FALSE(time_boxed.planned_bytes_per_node.has_value());
}

TEST(ReportRuns, ADdpRunThatDidNotRecordItsWaitsHasNoBlockedTime) {
  // Runs from before comm_blocked_ms: DDP's update time hides its waits, so neither blocked nor
  // compute time can be told.
  testing::ScratchDir scratch;
  json line = step_line(1, 1, 30);
  line["traffic"] = {{"cross_node", {{"sent", 10}}}};
  write_run(scratch / "run", {{"strategy", "ddp"}}, {line});
  EXPECT_TRUE(std::isnan(load_run(scratch / "run").blocked_s));
  write_run(scratch / "run", {{"strategy", "diloco"}, {"sync_every", 5}}, {line});
  EXPECT_DOUBLE_EQ(load_run(scratch / "run").blocked_s, 0.0) << "one-process replicas wait only at the outer sync";
}

TEST(ReportRuns, LabelsAreThePartsOfThePathsThatDiffer) {
  testing::ScratchDir scratch;
  write_ddp_cell(scratch / "bench" / "20mbit" / "ddp");
  write_diloco_run(scratch / "bench" / "10gbit" / "diloco");
  std::vector<RunRecord> runs = {load_run(scratch / "bench" / "20mbit" / "ddp"), load_run(scratch / "bench" / "10gbit" / "diloco")};
  label_runs(runs);
  EXPECT_EQ(runs[0].label, "20mbit/ddp");
  EXPECT_EQ(runs[1].label, "10gbit/diloco");
  std::vector<RunRecord> one = {runs[0]};
  label_runs(one);
  EXPECT_EQ(one[0].label, "ddp") << "a lone run is named by its method";
}

TEST(ReportRuns, TheDefaultTargetIsTheLongestDdpRunsFinalLossPlusThreePercent) {
  RunRecord short_ddp, long_ddp, diloco;
  short_ddp.method = long_ddp.method = "ddp";
  diloco.method = "diloco H=50";
  short_ddp.steps = 100, short_ddp.final_val_loss = 2.5;
  long_ddp.steps = 400, long_ddp.final_val_loss = 2.0;
  diloco.steps = 600, diloco.final_val_loss = 1.0;
  EXPECT_DOUBLE_EQ(default_target({short_ddp, long_ddp, diloco}).value(), 2.06);
  EXPECT_FALSE(default_target({diloco}).has_value());
  EXPECT_DOUBLE_EQ(compare({short_ddp, diloco}, 1.5).target.value(), 1.5) << "--target-loss wins";
}

TEST(ReportRuns, MissingAndMalformedFilesAreNamed) {
  testing::ScratchDir scratch;
  const auto error_of = [](const fs::path& dir) {
    try {
      load_run(dir);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("loaded");
  };
  fs::create_directories(scratch / "empty");
  EXPECT_EQ(error_of(scratch / "empty"),
            "report: " + (scratch / "empty").string() + " is not a run directory (no metrics.jsonl, nor run/metrics.jsonl)");
  write_ddp_cell(scratch / "cell");
  testing::write_file(scratch / "cell" / "testbed.json", R"({"link": "20mbit"})");
  EXPECT_EQ(error_of(scratch / "cell"), (scratch / "cell" / "testbed.json").string() + ": missing \"link_bits_per_s\"");
  testing::write_file(scratch / "cell" / "testbed.json", "{");
  EXPECT_NE(error_of(scratch / "cell").find((scratch / "cell" / "testbed.json").string() + ": not valid JSON"),
            std::string::npos);
  testing::write_file(scratch / "cell" / "run" / "metrics.jsonl", R"({"step": 1})" "\n");
  EXPECT_NE(error_of(scratch / "cell").find("missing \"elapsed_s\""), std::string::npos);
}

TEST(ReportCharts, TicksFallOnRoundValuesAndBytesPrintWithPrefixes) {
  EXPECT_EQ(format_value(1234567, Axis::Unit::Bytes), "1.23 MB");
  EXPECT_EQ(format_value(999, Axis::Unit::Bytes), "999 B");
  EXPECT_EQ(format_value(2e9, Axis::Unit::Bytes), "2 GB");
  EXPECT_EQ(format_value(0.5, Axis::Unit::Plain), "0.5");
  EXPECT_EQ(format_value(779392, Axis::Unit::Count), "779k");
  EXPECT_EQ(format_value(20, Axis::Unit::Count), "20");
  EXPECT_EQ(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
  const std::string linear = line_chart("t", {"x"}, {"y"}, {{"s", {{0, 2.2}, {47, 2.9}}}});
  for (const char* tick : {">0<", ">10<", ">50<"}) EXPECT_NE(linear.find(tick), std::string::npos) << tick;
  EXPECT_EQ(linear.find(">60<"), std::string::npos);
  const std::string log = line_chart("t", {"bytes", true, Axis::Unit::Bytes}, {"y"}, {{"s", {{3e5, 2}, {2e9, 3}}}});
  for (const char* tick : {">100 kB<", ">1 MB<", ">10 GB<"}) EXPECT_NE(log.find(tick), std::string::npos) << tick;
  // Ticks at 1, 2 and 5 times powers of ten, from the one at or below the smallest value to the
  // one at or above the largest.
  const std::string fine = line_chart("t", {"N", true, Axis::Unit::Count, true}, {"y"}, {{"s", {{1.5e5, 2}, {3e6, 3}}}});
  for (const char* tick : {">100k<", ">200k<", ">500k<", ">1M<", ">2M<", ">5M<"}) {
    EXPECT_NE(fine.find(tick), std::string::npos) << tick;
  }
  EXPECT_EQ(fine.find(">10M<"), std::string::npos);
  EXPECT_EQ(fine.find(">50k<"), std::string::npos);
}

// Checks with Python's parsers that every <svg> of the page at `page` parses as XML (and that
// there are `svgs` of them), that its tags balance, that it has `rows` table rows and fetches
// nothing; then runs `extra` (Python, with the page in `text`).
void check_page(const fs::path& page, int svgs, int rows, const std::string& extra = "") {
  const std::string check = R"(
import html.parser, re, sys, xml.etree.ElementTree as ET
text = open(sys.argv[1]).read()
svgs = re.findall(r"<svg.*?</svg>", text, re.S)
assert len(svgs) == int(sys.argv[2]), len(svgs)
for svg in svgs: ET.fromstring(svg)
class Balance(html.parser.HTMLParser):
    void = {"meta", "br", "img", "input", "link", "hr", "col"}
    def __init__(self):
        super().__init__(); self.stack = []; self.rows = 0
    def handle_starttag(self, tag, attrs):
        if tag not in self.void: self.stack.append(tag)
        if tag == "tr": self.rows += 1
    def handle_startendtag(self, tag, attrs): pass
    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
parser = Balance(); parser.feed(text); parser.close()
assert not parser.stack, parser.stack
assert parser.rows == int(sys.argv[3]), parser.rows
assert "src=" not in text and "@import" not in text and "<link" not in text
)" + extra + "\nprint(\"page ok\")\n";
  const fs::path script = page.parent_path() / "check.py";
  testing::write_file(script, check);
  const auto result = testing::run_command("/usr/bin/python3 " + quoted(script) + " " + quoted(page) + " " +
                                           std::to_string(svgs) + " " + std::to_string(rows));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("page ok"), std::string::npos) << result.output;
}

TEST(ReportPage, IsWellFormedAndHoldsEveryRunAndChart) {
  testing::ScratchDir scratch;
  write_ddp_cell(scratch / "runs" / "ddp");
  write_diloco_run(scratch / "runs" / "a<b");  // a name that must be escaped
  std::vector<RunRecord> runs = {load_run(scratch / "runs" / "ddp"), load_run(scratch / "runs" / "a<b")};
  label_runs(runs);
  const Comparison comparison = compare(std::move(runs), std::nullopt);
  ASSERT_DOUBLE_EQ(comparison.target.value(), 2.06);
  const fs::path page = scratch / "report.html";
  write_html_report(page, render_html(comparison, "runs & more"), false);
  const std::string html = testing::read_file(page);
  EXPECT_NE(html.find("<title>runs &amp; more</title>"), std::string::npos);
  EXPECT_NE(html.find(">a&lt;b</td>"), std::string::npos);
  // The table has a row per run with the DiLoCo run's time to the target (2.06) at its second
  // validation, 6 s.
  check_page(page, 4, 3, R"(assert 'data-value="6.000000">6.0</td></tr>' in text)");
}

// A sweep's cells.jsonl in `dir`: ddp (E 1.8, A 60, alpha 0.3) and diloco (E 1.85, A 55, alpha
// 0.29) at 7 sizes from 1e5 to 2e6 at 6 tokens per parameter, plus noise of 0.005 from a fixed seed.
void write_sweep_cells(const fs::path& dir) {
  std::string text;
  const auto noise = testing::normal_floats(14, 15, 0.005f);
  for (int m = 0; m < 2; ++m) {
    const double e = m == 0 ? 1.8 : 1.85, a = m == 0 ? 60 : 55, alpha = m == 0 ? 0.3 : 0.29;
    for (int i = 0; i < 7; ++i) {
      const double n = std::round(1e5 * std::pow(20.0, i / 6.0));
      text += json{{"cell", "c" + std::to_string(m * 7 + i)}, {"method", m == 0 ? "ddp" : "diloco"},
                   {"non_embedding_params", n}, {"tokens", 6 * n},
                   {"final_val_loss", e + a * std::pow(n, -alpha) + noise[m * 7 + i]}}
                  .dump() +
              "\n";
    }
  }
  testing::write_file(dir / fit::kCellsFileName, text);
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

TEST(ReportSweep, ChartsTheCellsAndFittedCurvesAndTablesStraitFitsConstants) {
  testing::ScratchDir scratch;
  write_sweep_cells(scratch / "sweep");
  Comparison comparison = compare({}, std::nullopt);
  comparison.sweeps.push_back(load_sweep(scratch / "sweep"));
  const fit::Report expected = fit::fit_cells(fit::read_cells(scratch / "sweep"));
  ASSERT_EQ(expected.methods.size(), 2u);
  const std::string html = render_html(comparison, "sweep");
  EXPECT_NE(html.find(">Final validation loss against non-embedding parameters</text>"), std::string::npos);
  // The constants are strait fit's, to the last bit (the page keeps them as %.17g).
  char exact[64];
  for (const fit::MethodFit& method : expected.methods) {
    ASSERT_TRUE(method.power_law.converged) << method.power_law.failure;
    for (const char* name : {"E", "A", "alpha"}) {
      const fit::Estimate& e = method.power_law.estimate(name);
      for (double value : {e.value, e.low, e.high}) {
        std::snprintf(exact, sizeof(exact), "\"%.17g\"", value);
        EXPECT_NE(html.find(exact), std::string::npos) << method.method << " " << name << " " << exact;
      }
    }
    EXPECT_NE(html.find(">" + method.method + ": fit, α = "), std::string::npos) << "its curve in the legend";
  }
  EXPECT_NE(html.find("every pair of intervals overlaps: consistent with comparable scaling"), std::string::npos);
  // Each cell is a marker with its value on hover; each fitted curve a line alone, whose ends are
  // L(N) at the smallest and largest N: strait fit's fitted values there.
  EXPECT_EQ(occurrences(html, "</title></circle>"), 14u);
  EXPECT_EQ(occurrences(html, "<polyline"), 2u);
  const fit::MethodFit& ddp = expected.methods[0];
  const auto curve = fitted_curve(ddp, 48);
  ASSERT_EQ(curve.size(), 48u);
  EXPECT_DOUBLE_EQ(curve.front().first, 1e5);
  EXPECT_DOUBLE_EQ(curve.back().first, 2e6);
  EXPECT_NEAR(curve.front().second, ddp.power_law.fitted.front(), 1e-12);
  EXPECT_NEAR(curve.back().second, ddp.power_law.fitted.back(), 1e-12);
  // N spans 1.3 decades: the log axis is ticked at 1, 2 and 5 times powers of ten.
  for (const char* tick : {">100k<", ">200k<", ">500k<", ">1M<", ">2M<"}) {
    EXPECT_NE(html.find(tick), std::string::npos) << tick;
  }
  const fs::path page = scratch / "page" / "report.html";
  write_html_report(page, html, false);
  // One chart; a header row and a row per method in the table of constants.
  check_page(page, 1, 3);
  // Next to runs: their four charts, then the sweep's.
  write_ddp_cell(scratch / "ddp");
  comparison.runs.push_back(load_run(scratch / "ddp"));
  write_html_report(page, render_html(comparison, "both"), true);
  check_page(page, 5, 5);
}

TEST(ReportCommand, ShowsASweepAloneAndNeedsSomethingToShow) {
  testing::ScratchDir scratch;
  write_sweep_cells(scratch / "sweep");
  const fs::path page = scratch / "report.html";
  auto result = testing::run_strait("report --sweep " + quoted(scratch / "sweep") + " --out " + quoted(page));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("sweep " + (scratch / "sweep" / "cells.jsonl").string() + ": 14 cells"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("\nddp                      7  "), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("alpha: every pair of intervals overlaps"), std::string::npos) << result.output;
  EXPECT_NE(testing::read_file(page).find("<title>strait: scaling laws</title>"), std::string::npos);

  const auto before = testing::snapshot_tree(scratch.path());
  result = testing::run_strait("report --out " + quoted(scratch / "other.html"));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("strait: error: report: nothing to report: give run directories, --sweep DIR, or both"),
            std::string::npos)
      << result.output;
  result = testing::run_strait("report --sweep " + quoted(scratch / "none") + " --out " + quoted(scratch / "other.html"));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("strait: error: "), std::string::npos) << result.output;
  EXPECT_TRUE(before == testing::snapshot_tree(scratch.path()));
}

TEST(ReportCommand, PrintsTheTableAndReplacesOnlyAnEarlierReport) {
  testing::ScratchDir scratch;
  write_ddp_cell(scratch / "20mbit" / "ddp");
  write_diloco_run(scratch / "20mbit" / "diloco");
  const std::string runs = quoted(scratch / "20mbit" / "ddp") + " " + quoted(scratch / "20mbit" / "diloco");
  const fs::path page = scratch / "out" / "report.html";
  auto result = testing::run_strait("report " + runs + " --out " + quoted(page));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(fs::exists(page));
  // The terminal table: a header, a line per run in given order, aligned, and the target.
  EXPECT_NE(result.output.find("run     method"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("\nddp     ddp"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("\ndiloco  streaming diloco H=3 P=2 τ=1 int4 outer lr=0.5 μ=0.5  loopback"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("target loss 2.0600 (DDP's final validation loss + 3%)"), std::string::npos);

  const auto rejected = [&](const std::string& arguments, const std::string& message) {
    const auto before = testing::snapshot_tree(scratch.path());
    const auto refused = testing::run_strait("report " + runs + " " + arguments);
    EXPECT_EQ(refused.exit_code, 1) << refused.output;
    EXPECT_NE(refused.output.find("strait: error: " + message), std::string::npos) << refused.output;
    EXPECT_TRUE(before == testing::snapshot_tree(scratch.path())) << "files changed after: report " << arguments;
  };
  rejected("--out " + quoted(page), "report: " + page.string() + " exists (pass --overwrite to replace an earlier report)");
  testing::write_file(scratch / "notes.html", "<p>my notes</p>");
  rejected("--out " + quoted(scratch / "notes.html") + " --overwrite",
           "report: " + (scratch / "notes.html").string() + " was not written by strait report; refusing to replace it");
  rejected("--out " + quoted(scratch / "20mbit"), "report: " + (scratch / "20mbit").string() + " exists");
  result = testing::run_strait("report " + runs + " --out " + quoted(page) + " --overwrite --target-loss 2.05");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(testing::read_file(page).find("Target loss 2.0500 (given with --target-loss)"), std::string::npos);
}

}  // namespace
}  // namespace strait::report
