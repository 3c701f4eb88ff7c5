// `strait fit` on the real binary: a sweep directory gives the report (text and --json), bad
// cells are refused naming file and line (exit 1), a fit that cannot converge still prints the
// report and then fails, and a missing argument is a usage error (exit 2). The fits themselves
// are tested in tests/fit.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace strait {
namespace {

// One cells.jsonl line at 20 tokens per parameter.
std::string cell(const std::string& method, double n, double loss) {
  return nlohmann::json{{"method", method}, {"non_embedding_params", n}, {"tokens", 20 * n}, {"final_val_loss", loss}}
             .dump() + "\n";
}

// 7 sizes from 1e5 to 1e7 on L(N) = 1.8 + 60·N^-alpha, off the curve by ±0.005 in turn (exact
// points would give intervals of zero width).
std::string power_law_cells(const std::string& method, double alpha) {
  std::string text;
  for (int i = 0; i < 7; ++i) {
    const double n = 1e5 * std::pow(100.0, i / 6.0);
    text += cell(method, n, 1.8 + 60 * std::pow(n, -alpha) + (i % 2 ? 0.005 : -0.005));
  }
  return text;
}

TEST(FitCommand, ReportsTheFitsOfASweepDirectory) {
  testing::ScratchDir dir;
  testing::write_file(dir / "cells.jsonl", power_law_cells("ddp", 0.3) + power_law_cells("diloco", 0.3));
  auto result = testing::run_strait("fit " + testing::quoted(dir.path()));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("ddp: 7 cells"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("consistent with comparable scaling"), std::string::npos) << result.output;

  result = testing::run_strait("fit --json " + testing::quoted(dir / "cells.jsonl"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.output);
  EXPECT_EQ(report.at("methods").size(), 2u);
  EXPECT_NEAR(report.at("methods").at(0).at("fit_n").at("parameters").at("alpha").at("value").get<double>(), 0.3, 0.02);
  EXPECT_EQ(report.at("alpha").at("overlap"), true);
}

TEST(FitCommand, RefusesBadInputWithFileAndLine) {
  testing::ScratchDir dir;
  const auto path = dir / "cells.jsonl";
  testing::write_file(path, cell("ddp", 1e5, 3.7) + R"({"method":"ddp","non_embedding_params":1e6,"final_val_loss":2.7})");
  auto result = testing::run_strait("fit " + testing::quoted(path));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("strait: error: " + path.string() + ":2: missing 'tokens'"), std::string::npos)
      << result.output;

  result = testing::run_strait("fit");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("strait: error: "), std::string::npos) << result.output;
}

TEST(FitCommand, AFitThatDoesNotConvergeIsReportedAndFails) {
  // A straight line in log N: no floor, so the least-squares optimum lies at E = −∞.
  testing::ScratchDir dir;
  std::string text;
  for (int i = 0; i < 6; ++i) {
    const double n = 1e5 * std::pow(100.0, i / 5.0);
    text += cell("ddp", n, 8 - 0.3 * std::log(n) + (i == 1 || i == 4 ? 0.02 : -0.02));
  }
  testing::write_file(dir / "cells.jsonl", text);
  const auto result = testing::run_strait("fit " + testing::quoted(dir.path()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("L(N) = E + A*N^-alpha: FAILED"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("strait: error: fit: 1 fit(s) did not converge: ddp L(N)"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("the losses show no floor"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace strait
