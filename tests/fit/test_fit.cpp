// strait fit: the fits recover known constants from synthetic losses, their 95% intervals cover
// the truth about as often as they claim, and bad input is refused naming file and line.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "strait/core/error.h"
#include "strait/fit/cells.h"
#include "strait/fit/fit.h"
#include "strait/fit/report.h"
#include "data/data_test_util.h"  // error_of
#include "test_support.h"

namespace strait::fit {
namespace {

using testing::error_of;
using testing::ScratchDir;
using testing::write_file;

// The constants of the synthetic data: loss ~3.7 at N = 1e5 falling to ~2.3 at 1e7 (a
// curvature like a real sweep's), and a token term of ~2.1 at D = 1e6 falling to ~0.3 at 1e9.
struct Truth {
  double E = 1.8, A = 60, alpha = 0.3, B = 100, beta = 0.28;
  double loss(double n, double d, bool with_tokens) const {
    return E + A * std::pow(n, -alpha) + (with_tokens ? B * std::pow(d, -beta) : 0.0);
  }
};

std::vector<double> log_spaced(double from, double to, int count) {
  std::vector<double> values;
  for (int i = 0; i < count; ++i) values.push_back(from * std::pow(to / from, i / double(count - 1)));
  return values;
}

// L(N) at 9 sizes from 1e5 to 1e7, plus N(0, noise²) from `seed`.
struct Points {
  std::vector<double> params, tokens, losses;
};

Points power_law_points(const Truth& truth, double noise, uint32_t seed) {
  Points points;
  points.params = log_spaced(1e5, 1e7, 9);
  const auto eps = testing::normal_floats(points.params.size(), seed, static_cast<float>(noise));
  for (size_t i = 0; i < points.params.size(); ++i) {
    points.tokens.push_back(20 * points.params[i]);
    points.losses.push_back(truth.loss(points.params[i], 0, false) + eps[i]);
  }
  return points;
}

// L(N, D) on a 4 x 4 grid: N from 1e5 to 1e7, D from 1e6 to 1e9.
Points tokens_law_points(const Truth& truth, double noise, uint32_t seed) {
  Points points;
  for (double n : log_spaced(1e5, 1e7, 4)) {
    for (double d : log_spaced(1e6, 1e9, 4)) {
      points.params.push_back(n);
      points.tokens.push_back(d);
    }
  }
  const auto eps = testing::normal_floats(points.params.size(), seed, static_cast<float>(noise));
  for (size_t i = 0; i < points.params.size(); ++i) {
    points.losses.push_back(truth.loss(points.params[i], points.tokens[i], true) + eps[i]);
  }
  return points;
}

std::vector<std::pair<std::string, double>> truths(const Truth& t, bool with_tokens) {
  std::vector<std::pair<std::string, double>> out = {{"E", t.E}, {"A", t.A}, {"alpha", t.alpha}};
  if (with_tokens) out.insert(out.end(), {{"B", t.B}, {"beta", t.beta}});
  return out;
}

Fit fit_points(const Points& points, bool with_tokens) {
  return with_tokens ? fit_power_law_tokens(points.params, points.tokens, points.losses)
                     : fit_power_law(points.params, points.losses);
}

class FitModels : public ::testing::TestWithParam<bool> {
 protected:
  bool with_tokens() const { return GetParam(); }
  Points points(double noise, uint32_t seed) const {
    return with_tokens() ? tokens_law_points(truth_, noise, seed) : power_law_points(truth_, noise, seed);
  }
  Truth truth_;
};

TEST_P(FitModels, NoiseFreeDataGivesTheConstantsBack) {
  const Fit fit = fit_points(points(0.0, 1), with_tokens());
  ASSERT_TRUE(fit.converged) << fit.failure;
  for (const auto& [name, value] : truths(truth_, with_tokens())) {
    EXPECT_NEAR(fit.estimate(name).value, value, 1e-6 * value) << name;
  }
  EXPECT_LT(fit.max_abs_residual, 1e-9);
  EXPECT_NEAR(fit.r_squared, 1.0, 1e-12);
}

TEST_P(FitModels, NoisyDataGivesCloseConstantsWithIntervalsThatCoverThem) {
  const Fit fit = fit_points(points(0.01, 7), with_tokens());
  ASSERT_TRUE(fit.converged) << fit.failure;
  EXPECT_EQ(fit.degrees_of_freedom, fit.points - (with_tokens() ? 5u : 3u));
  for (const auto& [name, value] : truths(truth_, with_tokens())) {
    const Estimate& e = fit.estimate(name);
    EXPECT_TRUE(e.covers(value)) << name << " " << e.value << " [" << e.low << ", " << e.high << "] vs " << value;
    EXPECT_LT(e.low, e.value);
    EXPECT_GT(e.high, e.value);
  }
  EXPECT_NEAR(fit.estimate("alpha").value, truth_.alpha, 0.05);
  EXPECT_NEAR(fit.estimate("E").value, truth_.E, 0.15);
  EXPECT_GT(fit.r_squared, 0.99);
  EXPECT_LT(fit.residual_std, 0.03);
}

// A real statistical property: over 50 noise draws the 95% interval of each constant covers
// the truth in about 95% of them. Intervals that were too narrow (a wrong s², t or Jacobian)
// would cover far less; the bound leaves room for chance and the linearisation (binomial sd at
// 50 draws: 3 points).
TEST_P(FitModels, IntervalsCoverTheTruthAboutAsOftenAsTheyClaim) {
  const int draws = 50;
  std::map<std::string, int> covered;
  for (int seed = 100; seed < 100 + draws; ++seed) {
    const Fit fit = fit_points(points(0.02, static_cast<uint32_t>(seed)), with_tokens());
    ASSERT_TRUE(fit.converged) << "seed " << seed << ": " << fit.failure;
    for (const auto& [name, value] : truths(truth_, with_tokens())) covered[name] += fit.estimate(name).covers(value);
  }
  for (const auto& [name, count] : covered) {
    EXPECT_GE(count, 43) << name << " covered in " << count << " of " << draws;
    EXPECT_LE(count, draws);
  }
}

INSTANTIATE_TEST_SUITE_P(Fit, FitModels, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "LossOfParamsAndTokens" : "LossOfParams"; });

TEST(Fit, StudentQuantileMatchesTables) {
  EXPECT_NEAR(student_t_95(1), 12.706, 1e-3);
  EXPECT_NEAR(student_t_95(6), 2.447, 1e-3);
  EXPECT_NEAR(student_t_95(1000000), 1.960, 1e-3);
}

TEST(Fit, RefusesTooFewPointsAndBadValues) {
  EXPECT_NE(error_of([] { fit_power_law({1e5, 1e6, 1e7}, {3, 2.5, 2.2}); })
                .find("L(N) = E + A*N^-alpha: 3 points, need at least 4 (more than its 3 parameters)"),
            std::string::npos);
  EXPECT_NE(error_of([] { fit_power_law({1e5, 1e6, -1, 1e7}, {3, 2.5, 2.3, 2.2}); })
                .find("N of point 3 is -1, expected a finite number > 0"),
            std::string::npos);
  EXPECT_NE(error_of([] { fit_power_law_tokens({1, 2, 3, 4, 5, 6}, {1, 2, 3}, {1, 2, 3, 4, 5, 6}); })
                .find("3 values of D against 6 of N"),
            std::string::npos);
}

TEST(Fit, PointsThatDoNotDetermineTheParametersAreAFailureNotANumber) {
  // Two distinct N: E, A and alpha cannot all be determined.
  const Fit fit = fit_power_law({1e5, 1e5, 1e7, 1e7}, {3.0, 3.01, 2.2, 2.21});
  EXPECT_FALSE(fit.converged);
  EXPECT_NE(fit.failure.find("do not determine"), std::string::npos) << fit.failure;
}

// ---- cells.jsonl and the report ------------------------------------------------------------

std::string cell_line(const std::string& method, double n, double d, double loss) {
  return nlohmann::json{{"cell", method + "-" + std::to_string(n)}, {"method", method}, {"replicas", 4},
                        {"non_embedding_params", n}, {"tokens", d}, {"final_val_loss", loss}}
             .dump() + "\n";
}

// Two methods on L(N) data at 20 tokens per parameter; `slower` scales with a smaller alpha.
std::string two_method_cells(double slower_alpha) {
  std::string text;
  const Points ddp = power_law_points(Truth{}, 0.01, 3);
  Truth slower;
  slower.alpha = slower_alpha;
  const Points diloco = power_law_points(slower, 0.01, 4);
  for (size_t i = 0; i < ddp.params.size(); ++i) text += cell_line("ddp", ddp.params[i], ddp.tokens[i], ddp.losses[i]);
  for (size_t i = 0; i < diloco.params.size(); ++i) {
    text += cell_line("diloco", diloco.params[i], diloco.tokens[i], diloco.losses[i]);
  }
  return text;
}

TEST(FitReport, ComparesTheMethodsAlpha) {
  ScratchDir dir;
  write_file(dir / kCellsFileName, two_method_cells(0.3));
  const Report same = fit_cells(read_cells(dir.path()));
  ASSERT_EQ(same.methods.size(), 2u);
  EXPECT_TRUE(same.failures.empty());
  ASSERT_EQ(same.alpha_pairs.size(), 1u);
  EXPECT_TRUE(same.alpha_pairs[0].overlap);
  EXPECT_FALSE(same.methods[0].tokens_law.has_value());
  EXPECT_NE(same.methods[0].tokens_law_skipped.find("D follows N"), std::string::npos);
  const std::string text = format_report(same);
  EXPECT_NE(text.find("consistent with comparable scaling"), std::string::npos) << text;

  write_file(dir / "other.jsonl", two_method_cells(0.2));
  const Report apart = fit_cells(read_cells(dir / "other.jsonl"));
  ASSERT_EQ(apart.alpha_pairs.size(), 1u);
  EXPECT_FALSE(apart.alpha_pairs[0].overlap);
  const auto json = report_json(apart);
  EXPECT_EQ(json.at("alpha").at("overlap"), false);
  EXPECT_NEAR(json.at("methods").at(1).at("fit_n").at("parameters").at("alpha").at("value").get<double>(), 0.2, 0.03);
  EXPECT_EQ(json.at("methods").at(0).at("fit_n").at("residuals").size(), 9u);
}

TEST(FitReport, FitsLossOfParamsAndTokensWhereTheGridAllows) {
  ScratchDir dir;
  const Points grid = tokens_law_points(Truth{}, 0.01, 5);
  std::string text;
  for (size_t i = 0; i < grid.params.size(); ++i) text += cell_line("ddp", grid.params[i], grid.tokens[i], grid.losses[i]);
  write_file(dir / kCellsFileName, text);
  const Report report = fit_cells(read_cells(dir.path()));
  const MethodFit& ddp = report.methods.at(0);
  ASSERT_TRUE(ddp.tokens_law.has_value()) << ddp.tokens_law_skipped;
  ASSERT_TRUE(ddp.tokens_law->converged) << ddp.tokens_law->failure;
  EXPECT_TRUE(ddp.tokens_law->estimate("beta").covers(Truth{}.beta));
  // L(N) keeps the largest D at each N: 4 cells, one per size.
  EXPECT_TRUE(ddp.power_law_dropped_cells);
  EXPECT_EQ(ddp.power_law_cells.size(), 4u);
  EXPECT_EQ(report_json(report).at("methods").at(0).at("fit_nd").at("points"), 16);
}

TEST(FitReport, BadCellsNameTheFileAndLine) {
  ScratchDir dir;
  const std::string good = cell_line("ddp", 1e5, 2e6, 3.5);
  const auto rejects = [&](const std::string& text, const std::string& message) {
    write_file(dir / kCellsFileName, text);
    const std::string error = error_of([&] { read_cells(dir.path()); });
    EXPECT_NE(error.find(message), std::string::npos) << "expected '" << message << "' in: " << error;
  };
  const std::string file = (dir / kCellsFileName).string();
  rejects(good + "\n{\"method\": \"ddp\",\n", file + ":3: not valid JSON");
  rejects(good + "[1, 2]\n", file + ":2: expected a JSON object");
  rejects(good + R"({"method":"ddp","tokens":1e6,"final_val_loss":3})" "\n",
          file + ":2: missing 'non_embedding_params'");
  rejects(R"({"method":"ddp","non_embedding_params":1e5,"tokens":1e6,"final_val_loss":null})",
          file + ":1: 'final_val_loss' is null, expected a finite number > 0");
  rejects(R"({"method":"ddp","non_embedding_params":0,"tokens":1e6,"final_val_loss":3})",
          file + ":1: 'non_embedding_params' is 0, expected a finite number > 0");
  rejects(R"({"method":"ddp","non_embedding_params":1e5,"tokens":"many","final_val_loss":3})",
          file + ":1: 'tokens' is \"many\", expected a finite number > 0");
  rejects(R"({"method":7,"non_embedding_params":1e5,"tokens":1e6,"final_val_loss":3})",
          file + ":1: 'method' is 7, expected a non-empty string");
  rejects("\n\n", file + " holds no cells");
  EXPECT_NE(error_of([&] { read_cells(dir / "missing"); }).find("fit: cannot read " + (dir / "missing").string()),
            std::string::npos);
}

TEST(FitReport, TooFewCellsForAMethodNamesIt) {
  ScratchDir dir;
  write_file(dir / kCellsFileName, cell_line("ddp", 1e5, 2e6, 3.5) + cell_line("ddp", 1e6, 2e7, 2.9) +
                                        cell_line("ddp", 1e7, 2e8, 2.4));
  EXPECT_NE(error_of([&] { fit_cells(read_cells(dir.path())); })
                .find("method 'ddp' has 3 cells in " + (dir / kCellsFileName).string() + ", need at least 4"),
            std::string::npos);
  write_file(dir / kCellsFileName, cell_line("ddp", 1e5, 2e6, 3.5) + cell_line("ddp", 1e5, 2e6, 3.6) +
                                        cell_line("ddp", 1e7, 2e8, 2.4) + cell_line("ddp", 1e7, 2e8, 2.5));
  EXPECT_NE(error_of([&] { fit_cells(read_cells(dir.path())); }).find("has 2 distinct non_embedding_params"),
            std::string::npos);
}

}  // namespace
}  // namespace strait::fit
