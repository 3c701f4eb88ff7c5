// Scaling-law fits by non-linear least squares (Eigen's Levenberg-Marquardt), with parameter
// uncertainties:
//   L(N)    = E + A·N^-alpha                  (3 parameters)
//   L(N, D) = E + A·N^-alpha + B·D^-beta      (5 parameters)
// N: non-embedding parameters, D: training tokens, L: final validation loss.
//
// Intended usage (strait fit, via report.h):
//   const Fit fit = fit_power_law(params, losses);
//   if (fit.converged) for (const Estimate& e : fit.estimates) ... e.value, [e.low, e.high] ...
//
// Eigen and Boost.Math stay inside fit.cpp, so only that translation unit pays for them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace strait::fit {

// One fitted constant. low/high bound its 95% interval: value ± t·std_error, t being Student's
// t quantile at n − p degrees of freedom and std_error from the covariance s²(JᵀJ)⁻¹ at the
// optimum. A and B are fitted as logarithms (they span orders of magnitude), so their intervals
// are exp(ln A ± t·se(ln A)): positive and asymmetric; their std_error is A·se(ln A).
struct Estimate {
  std::string name;  // "E", "A", "alpha", "B", "beta"
  double value = 0, std_error = 0, low = 0, high = 0;
  bool covers(double truth) const { return low <= truth && truth <= high; }
};

struct Fit {
  std::string model;        // "L(N) = E + A*N^-alpha" or "L(N,D) = E + A*N^-alpha + B*D^-beta"
  bool converged = false;   // false: `failure` says why; the fields below are then not meaningful
  std::string failure;
  std::vector<Estimate> estimates;  // E, A, alpha (, B, beta)
  size_t points = 0;
  size_t degrees_of_freedom = 0;    // points − parameters
  double r_squared = 0;             // 1 − SSE/SST (NaN when every loss is equal)
  double residual_std = 0;          // s = sqrt(SSE / degrees_of_freedom)
  double max_abs_residual = 0;
  std::vector<double> fitted;       // the model at each point, in input order
  long evaluations = 0;             // model evaluations of the winning start

  const Estimate& estimate(const std::string& name) const;  // throws std::out_of_range
};

// The number of parameters of each model, for callers that must check the point count first.
constexpr size_t kPowerLawParameters = 3;
constexpr size_t kPowerLawTokensParameters = 5;

// Fits L(N) to the points (params[i], losses[i]). Throws strait::Error when the input cannot be
// fitted at all: sizes differ, a value is not finite and > 0, or there are not more points than
// the model's parameters. A fit that does not converge, or whose parameters the points do not
// determine (a singular JᵀJ, e.g. fewer than 3 distinct N), is returned with converged = false
// and the reason, so a caller can report it alongside the fits that worked.
Fit fit_power_law(const std::vector<double>& params, const std::vector<double>& losses);

// Fits L(N, D) to the points (params[i], tokens[i], losses[i]); errors as fit_power_law.
Fit fit_power_law_tokens(const std::vector<double>& params, const std::vector<double>& tokens,
                         const std::vector<double>& losses);

// The two-sided 95% quantile of Student's t with `degrees_of_freedom` (>= 1): 12.71 at 1,
// 1.96 as it grows (Boost.Math).
double student_t_95(size_t degrees_of_freedom);

}  // namespace strait::fit
