// strait plan --min-sync-every ... --chart h.svg: the chart parses as XML and holds one polyline
// per method x replica count whose points are the table's H values (read back from the printed
// table by Python); a run's measured H (BENCHMARKS.md's computation) as a hollow marker in its
// method's colour; the refusal to replace what the command did not write.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

#include "strait/core/error.h"
#include "strait/plan/plan.h"
#include "strait/report/sync_chart.h"
#include "error_of.h"
#include "test_support.h"

namespace strait::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::error_of;

// A DiLoCo cell on the testbed at 100 Mbit/s, 2 nodes: syncs at steps 3 and 6 blocked 500 and
// 700 ms, the four other steps took 40, 50, 40 and 50 ms: H > 0.6 s / (0.1 x 45 ms) = 133.3.
void write_sync_cell(const fs::path& cell, const std::string& strategy = "diloco", int fragments = 1) {
  testing::write_file(cell / "testbed.json",
                      json({{"link", "100mbit"}, {"link_bits_per_s", 1e8}, {"nnodes", 2}, {"nproc_per_node", 1}}).dump());
  testing::write_file(cell / "run" / "train_config.json",
                      json({{"strategy", strategy}, {"sync_every", 3}, {"fragments", fragments}}).dump());
  testing::write_file(cell / "run" / "summary.json", json({{"replicas", 2}, {"wall_time_s", 1.0}}).dump());
  std::string metrics;
  const double quiet[] = {40, 50, 0, 40, 50};
  for (int step = 1; step <= 6; ++step) {
    json line = {{"step", step}, {"loss", 3.0}};
    if (step % 3 == 0) {
      line["step_ms"] = 800.0;
      line["outer_sync"] = {{"blocked_ms", step == 3 ? 500.0 : 700.0}};
    } else {
      line["step_ms"] = quiet[step - 1];
    }
    metrics += line.dump() + "\n";
  }
  metrics += json({{"step", 6}, {"val_loss", 2.5}}).dump() + "\n";  // a line without step_ms
  testing::write_file(cell / "run" / "metrics.jsonl", metrics);
}

// Checks `svg` against the smallest-H table printed in `table` (strait plan's stdout): one
// polyline per method x replica count, in the table's order, each with the table's H at every
// rate, and `runs` hollow markers of runs.
constexpr const char* kSyncChartCheck = R"(
import re, sys, xml.etree.ElementTree as ET
svg_path, table_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(svg_path).getroot()
assert root.tag == ns + "svg" and root.get("data-generator") == "strait plan --chart", root.attrib
text = open(table_path).read()
rows = text[text.index("smallest H at which"):].splitlines()
replicas = [int(word[2:]) for word in rows[1].split() if word.startswith("R=")]
table = {}
for row in rows[2:]:
    if not row.strip(): break
    m = re.match(r"(.+?)\s+([0-9.]+) (M|G)bit/s\s+([0-9 ]+)$", row)
    assert m, row
    rate = float(m.group(2)) * (1e9 if m.group(3) == "G" else 1e6)
    table[(m.group(1).strip(), rate)] = [int(h) for h in m.group(4).split()]
methods = list(dict.fromkeys(name for name, _ in table))
chart = root.find(ns + "svg")
lines, titles, hollow = [], [], 0
for element in chart:
    if element.tag == ns + "polyline":
        lines.append(element)
    elif element.tag == ns + "circle" and element.find(ns + "title") is not None:
        if element.get("fill") == "#fff": hollow += 1
        elif len(titles) < len(lines): titles.append(element.find(ns + "title").text)
assert len(lines) == len(methods) * len(replicas), (len(lines), methods, replicas)
for i, line in enumerate(lines):
    name, r = methods[i // len(replicas)], replicas[i % len(replicas)]
    assert titles[i].startswith("%s R=%d: " % (name, r)), (titles[i], name, r)
    points = [tuple(float(v) for v in p.split(",")) for p in line.get("data-points").split()]
    expected = sorted((rate, float(hs[replicas.index(r)])) for (n, rate), hs in table.items() if n == name)
    assert points == expected, (name, r, points, expected)
assert hollow == runs, hollow
print("chart ok: %d lines" % len(lines))
)";

void expect_chart_matches_table(const testing::ScratchDir& scratch, const fs::path& svg, const std::string& table,
                                int runs) {
  testing::write_file(scratch / "check_chart.py", kSyncChartCheck);
  testing::write_file(scratch / "table.txt", table);
  const auto result = testing::run_command("/usr/bin/python3 " + testing::quoted(scratch / "check_chart.py") + " " +
                                           testing::quoted(svg) + " " + testing::quoted(scratch / "table.txt") + " " +
                                           std::to_string(runs));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("chart ok"), std::string::npos) << result.output;
}

TEST(PlanSyncChart, HasALinePerMethodAndReplicaCountAtTheTablesH) {
  testing::ScratchDir scratch;
  const plan::Cluster cluster{4, 1, 1e8};
  plan::Workload work;
  work.params = 1e6;
  work.step_compute_s = 0.05;
  std::vector<plan::MethodSpec> methods;
  for (const char* name : {"local-sgd", "diloco", "sparseloco"}) methods.push_back(plan::method_named(name, {}));
  const std::vector<double> rates = {1e9, 2e7, 1e8};  // out of order: the lines go by rate
  const std::vector<int> replicas = {2, 4, 8};
  const auto cells = plan::sync_conditions(cluster, work, methods, rates, replicas, 0.1);
  ASSERT_EQ(cells.size(), 27u);
  for (const auto& cell : cells) {  // the cells are plan's condition, cell by cell
    plan::Cluster shaped = cluster;
    shaped.nodes = cell.replicas;
    shaped.link_bits_per_s = cell.link_bits_per_s;
    EXPECT_EQ(cell.condition.smallest_sync_every,
              plan::sync_condition(shaped, work, cell.method, 0.1).smallest_sync_every);
  }
  write_sync_cell(scratch / "cell");
  const std::vector<MeasuredSync> runs = {measured_sync(scratch / "cell", 0.1)};
  const fs::path svg = scratch / "h.svg";
  write_sync_chart(svg, sync_chart_svg(cluster, work, cells, runs, 0.1), false);
  const std::string chart = testing::read_file(svg);
  // The run's marker is hollow, in DiLoCo's colour (the second method: the palette's orange).
  EXPECT_NE(chart.find("r=\"4.5\" fill=\"#fff\" stroke=\"#E69F00\" stroke-width=\"2\"><title>diloco R=2, runs: 134 at "
                       "100 Mbit/s</title>"),
            std::string::npos)
      << chart;
  EXPECT_NE(chart.find("1 Gbit/s"), std::string::npos);
  expect_chart_matches_table(scratch, svg, plan::sync_condition_table(cluster, work, methods, rates, replicas, 0.1), 1);
}

TEST(PlanSyncChart, MeasuresARunsSmallestHAsBenchmarksDoes) {
  testing::ScratchDir scratch;
  write_sync_cell(scratch / "cell");
  for (const fs::path& dir : {scratch / "cell", scratch / "cell" / "run"}) {  // a cell, or its run with testbed.json
    if (dir.filename() == "run") fs::copy_file(scratch / "cell" / "testbed.json", dir / "testbed.json");
    const MeasuredSync run = measured_sync(dir, 0.1);
    EXPECT_EQ(run.method, "diloco");
    EXPECT_EQ(run.kind, plan::Kind::Diloco);
    EXPECT_EQ(run.link_bits_per_s, 1e8);
    EXPECT_EQ(run.replicas, 2);
    EXPECT_EQ(run.syncs, 2);
    EXPECT_DOUBLE_EQ(run.sync_s, 0.6);
    EXPECT_DOUBLE_EQ(run.step_s, 0.045);
    EXPECT_EQ(run.smallest_sync_every, 134);
  }
  EXPECT_NE(measured_sync_table({measured_sync(scratch / "cell", 0.1)}, 0.1)
                .find("diloco       100 Mbit/s      2      2     600 ms      45 ms        134  "),
            std::string::npos)
      << measured_sync_table({measured_sync(scratch / "cell", 0.1)}, 0.1);

  write_sync_cell(scratch / "streaming", "diloco", 4);
  EXPECT_NE(error_of([&] { measured_sync(scratch / "streaming", 0.1); })
                .find("a streaming diloco run; the smallest H is for methods that block"),
            std::string::npos);
  write_sync_cell(scratch / "loopback");
  fs::remove(scratch / "loopback" / "testbed.json");
  EXPECT_NE(error_of([&] { measured_sync(scratch / "loopback", 0.1); }).find(": no testbed.json, so no link rate"),
            std::string::npos);
  EXPECT_NE(error_of([&] { measured_sync(scratch / "nothing", 0.1); }).find("is not a run directory"),
            std::string::npos);
}

TEST(PlanSyncChart, ReplacesOnlyAnEarlierChart) {
  testing::ScratchDir scratch;
  plan::Workload work;
  work.params = 1e6;
  work.step_compute_s = 0.05;
  const auto cells =
      plan::sync_conditions({2, 1, 1e8}, work, {plan::method_named("diloco", {})}, {1e8}, {2}, 0.1);
  const std::string svg = sync_chart_svg({2, 1, 1e8}, work, cells, {}, 0.1);
  const fs::path out = scratch / "charts" / "h.svg";
  write_sync_chart(out, svg, false);  // makes its directory
  EXPECT_EQ(error_of([&] { write_sync_chart(out, svg, false); }),
            "plan: " + out.string() + " exists (pass --overwrite to replace an earlier chart)");
  EXPECT_EQ(error_of([&] { write_sync_chart(out, svg + "<!-- again -->", true); }), "(no error)");
  EXPECT_NE(testing::read_file(out).find("again"), std::string::npos);
  testing::write_file(scratch / "notes.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
  EXPECT_EQ(error_of([&] { write_sync_chart(scratch / "notes.svg", svg, true); }),
            "plan: " + (scratch / "notes.svg").string() + " was not written by strait plan --chart; refusing to replace it");
  EXPECT_EQ(testing::read_file(scratch / "notes.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
}

// The command: the table it prints and the chart it writes agree (its refusals are
// write_sync_chart's, above: one start of the binary costs ~0.7 s). The binary is built with the
// LibTorch targets, which this test executable does not wait for.
TEST(PlanSyncChartCommand, WritesTheChartOfTheTableItPrints) {
  if (!fs::exists(STRAIT_BINARY)) GTEST_SKIP() << STRAIT_BINARY << " is not built";
  testing::ScratchDir scratch;
  write_sync_cell(scratch / "cell");
  const fs::path svg = scratch / "h.svg";
  const std::string arguments =
      "plan --params 1e6 --step-compute-s 0.05 --nodes 2 --link 100mbit --method diloco,sparseloco "
      "--min-sync-every 1gbit,100mbit,20mbit --replica-counts 2,8 --chart " +
      testing::quoted(svg) + " --chart-runs " + testing::quoted(scratch / "cell");
  const auto result = testing::run_strait(arguments);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("measured in runs: H > mean blocked time per outer sync"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("wrote " + svg.string()), std::string::npos) << result.output;
  expect_chart_matches_table(scratch, svg, result.output, 1);

  // --json: one JSON object, the conditions in it, each cell's H the table's.
  const auto json_result = testing::run_strait(
      "plan --json --params 1e6 --step-compute-s 0.05 --nodes 2 --link 100mbit --method diloco,sparseloco "
      "--min-sync-every 1gbit,100mbit,20mbit --replica-counts 2,8");
  ASSERT_EQ(json_result.exit_code, 0) << json_result.output;
  const json printed = json::parse(json_result.output);
  ASSERT_TRUE(printed.is_object()) << json_result.output;
  ASSERT_EQ(printed.at("min_sync_every").size(), 2u * 3u * 2u);
  plan::Workload work;
  work.params = 1e6;
  work.step_compute_s = 0.05;
  const auto cells = plan::sync_conditions({2, 1, 1e8}, work,
                                           {plan::method_named("diloco", {}), plan::method_named("sparseloco", {})},
                                           {1e9, 1e8, 2e7}, {2, 8}, 0.1);
  ASSERT_EQ(cells.size(), printed.at("min_sync_every").size());
  for (size_t i = 0; i < cells.size(); ++i) {
    EXPECT_EQ(printed.at("min_sync_every")[i].at("smallest_sync_every"), cells[i].condition.smallest_sync_every) << i;
  }
}

}  // namespace
}  // namespace strait::report
