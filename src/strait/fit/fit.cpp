#include "strait/fit/fit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <Eigen/Dense>
#include <boost/math/distributions/students_t.hpp>
#include <unsupported/Eigen/LevenbergMarquardt>

#include "strait/core/error.h"

namespace strait::fit {
namespace {

// The data in the solver's coordinates. N and D enter as centred logarithms, x = ln N − mean ln N
// (y likewise for D), and each power-law term as exp(a − alpha·x), so the solver sees parameters
// of order one whether N is 1e5 or 1e7 (N^-alpha itself would be ~1e-3 against A ~ 1e2), and a
// and alpha are nearly uncorrelated; ln A = a + alpha·mean ln N is recovered afterwards.
struct Problem {
  bool with_tokens = false;
  Eigen::VectorXd x, y, loss;  // y is empty without tokens
  double x_mean = 0, y_mean = 0;

  Eigen::Index parameters() const { return with_tokens ? 5 : 3; }
};

// exp() of a term's exponent, capped: a trial step of the solver far from the data must give
// large finite residuals (a rejected step), not inf or NaN that would poison its step control.
double capped_exp(double exponent) { return std::exp(std::min(exponent, 80.0)); }

// Residuals model − loss and their Jacobian, for Eigen's LevenbergMarquardt.
// Parameters: (E, a, alpha) or (E, a, alpha, b, beta).
struct Residuals : Eigen::DenseFunctor<double> {
  const Problem& problem;
  mutable long evaluations = 0;

  explicit Residuals(const Problem& p)
      : Eigen::DenseFunctor<double>(static_cast<int>(p.parameters()), static_cast<int>(p.loss.size())), problem(p) {}

  int operator()(const InputType& theta, ValueType& residuals) const {
    ++evaluations;
    residuals = model(theta) - problem.loss;
    return 0;
  }

  int df(const InputType& theta, JacobianType& jacobian) const {
    const Eigen::Index n = problem.loss.size();
    jacobian.resize(n, problem.parameters());
    for (Eigen::Index i = 0; i < n; ++i) {
      const double n_term = capped_exp(theta[1] - theta[2] * problem.x[i]);
      jacobian(i, 0) = 1.0;
      jacobian(i, 1) = n_term;
      jacobian(i, 2) = -problem.x[i] * n_term;
      if (problem.with_tokens) {
        const double d_term = capped_exp(theta[3] - theta[4] * problem.y[i]);
        jacobian(i, 3) = d_term;
        jacobian(i, 4) = -problem.y[i] * d_term;
      }
    }
    return 0;
  }

  Eigen::VectorXd model(const Eigen::VectorXd& theta) const {
    Eigen::VectorXd out(problem.loss.size());
    for (Eigen::Index i = 0; i < out.size(); ++i) {
      out[i] = theta[0] + capped_exp(theta[1] - theta[2] * problem.x[i]);
      if (problem.with_tokens) out[i] += capped_exp(theta[3] - theta[4] * problem.y[i]);
    }
    return out;
  }
};

const char* status_name(Eigen::LevenbergMarquardtSpace::Status status) {
  using namespace Eigen::LevenbergMarquardtSpace;
  switch (status) {
    case ImproperInputParameters: return "improper input parameters";
    case TooManyFunctionEvaluation: return "too many function evaluations";
    case UserAsked: return "stopped by the model";
    default: return "not converged";
  }
}

// Statuses 1-4 are MINPACK's convergence tests; 6-8 say the tolerances are below what double
// precision can resolve, i.e. the solver stands at a minimum as well as it can be computed
// (exactly what noise-free data produces). 0, 5 and 9 are failures.
bool is_converged(Eigen::LevenbergMarquardtSpace::Status status) {
  using namespace Eigen::LevenbergMarquardtSpace;
  return status != ImproperInputParameters && status != TooManyFunctionEvaluation && status != UserAsked &&
         status != NotStarted && status != Running;
}

// Starting points: the floor E is the hard parameter, so several are tried, each a fraction of
// the smallest loss. Given E0, ln(L − E0) is linear in x (and, roughly, in y), and a least-squares
// line through it gives a and alpha (and b, beta, splitting the intercept evenly between the
// two terms).
std::vector<Eigen::VectorXd> starting_points(const Problem& problem) {
  const double min_loss = problem.loss.minCoeff();
  const Eigen::Index n = problem.loss.size();
  const Eigen::Index columns = problem.with_tokens ? 3 : 2;
  std::vector<Eigen::VectorXd> starts;
  for (const double fraction : {0.0, 0.5, 0.8, 0.9, 0.95, 0.99}) {
    const double floor = fraction * min_loss;
    Eigen::MatrixXd design(n, columns);
    Eigen::VectorXd target(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      design(i, 0) = 1.0;
      design(i, 1) = -problem.x[i];
      if (problem.with_tokens) design(i, 2) = -problem.y[i];
      target[i] = std::log(problem.loss[i] - floor);
    }
    const Eigen::VectorXd line = design.colPivHouseholderQr().solve(target);
    Eigen::VectorXd theta(problem.parameters());
    if (problem.with_tokens) {
      theta << floor, line[0] - std::log(2.0), line[1], line[0] - std::log(2.0), line[2];
    } else {
      theta << floor, line[0], line[1];
    }
    if (theta.allFinite()) starts.push_back(theta);
  }
  return starts;
}

struct Solution {
  Eigen::VectorXd theta;
  double sse = std::numeric_limits<double>::infinity();
  long evaluations = 0;
  std::string failure;  // the last start's failure, reported when none converged
};

// Runs Levenberg-Marquardt from every starting point and keeps the converged result with the
// smallest sum of squares.
Solution solve(const Problem& problem) {
  Solution best;
  for (Eigen::VectorXd theta : starting_points(problem)) {
    Residuals residuals(problem);
    Eigen::LevenbergMarquardt<Residuals> solver(residuals);
    solver.setMaxfev(2000);
    solver.setXtol(1e-12);
    solver.setFtol(1e-14);
    const auto status = solver.minimize(theta);
    if (!is_converged(status) || !theta.allFinite()) {
      best.failure = std::string(status_name(status)) + " after " + std::to_string(residuals.evaluations) +
                     " evaluations, ending at E = " + std::to_string(theta[0]) + ", alpha = " +
                     std::to_string(theta[2]);
      // Without curvature towards a floor in the losses, the least-squares optimum lies at
      // infinity: E runs below 0 and alpha towards 0 (a straight line in log N).
      if (theta[0] < 0) best.failure += ": the losses show no floor over this range of N";
      continue;
    }
    const double sse = (residuals.model(theta) - problem.loss).squaredNorm();
    if (std::isfinite(sse) && sse < best.sse) {
      best.theta = theta;
      best.sse = sse;
      best.evaluations = residuals.evaluations;
    }
  }
  if (best.theta.size() == 0 && best.failure.empty()) best.failure = "no usable starting point";
  return best;
}

void check_points(const std::string& model, size_t parameters, const std::vector<const std::vector<double>*>& columns,
                  const std::vector<const char*>& names) {
  const size_t n = columns.front()->size();
  for (size_t c = 0; c < columns.size(); ++c) {
    if (columns[c]->size() != n) {
      throw Error(model + ": " + std::to_string(columns[c]->size()) + " values of " + names[c] + " against " +
                  std::to_string(n) + " of " + names[0]);
    }
    for (size_t i = 0; i < n; ++i) {
      const double value = (*columns[c])[i];
      if (!std::isfinite(value) || value <= 0) {
        char text[32];
        std::snprintf(text, sizeof(text), "%g", value);
        throw Error(model + ": " + names[c] + " of point " + std::to_string(i + 1) + " is " + text +
                    ", expected a finite number > 0");
      }
    }
  }
  if (n <= parameters) {
    throw Error(model + ": " + std::to_string(n) + " points, need at least " + std::to_string(parameters + 1) +
                " (more than its " + std::to_string(parameters) + " parameters)");
  }
}

// Centred logarithms of `values` (see Problem).
Eigen::VectorXd centred_logs(const std::vector<double>& values, double& mean) {
  Eigen::VectorXd logs(static_cast<Eigen::Index>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) logs[static_cast<Eigen::Index>(i)] = std::log(values[i]);
  mean = logs.mean();
  return logs.array() - mean;
}

Fit fit_problem(const std::string& model, const Problem& problem) {
  Fit fit;
  fit.model = model;
  fit.points = static_cast<size_t>(problem.loss.size());
  const Eigen::Index p = problem.parameters();
  fit.degrees_of_freedom = fit.points - static_cast<size_t>(p);
  const Solution solution = solve(problem);
  if (solution.theta.size() == 0) {
    fit.failure = "Levenberg-Marquardt did not converge from any starting point (" + solution.failure + ")";
    return fit;
  }
  const Eigen::VectorXd& theta = solution.theta;
  Residuals residuals(problem);
  Eigen::MatrixXd jacobian;
  residuals.df(theta, jacobian);
  const Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(jacobian);
  if (qr.rank() < p) {
    fit.failure = "the points do not determine the " + std::to_string(p) + " parameters (the Jacobian has rank " +
                  std::to_string(qr.rank()) + "); more distinct N (and D) are needed";
    return fit;
  }
  const double s2 = solution.sse / static_cast<double>(fit.degrees_of_freedom);
  const Eigen::MatrixXd information = jacobian.transpose() * jacobian;
  Eigen::MatrixXd covariance = s2 * information.inverse();
  // Reported parameters (E, ln A, alpha, ln B, beta) = T · theta with ln A = a + alpha·mean ln N.
  Eigen::MatrixXd transform = Eigen::MatrixXd::Identity(p, p);
  transform(1, 2) = problem.x_mean;
  if (problem.with_tokens) transform(3, 4) = problem.y_mean;
  const Eigen::VectorXd reported = transform * theta;
  covariance = transform * covariance * transform.transpose();
  if (!covariance.allFinite() || (covariance.diagonal().array() < 0).any()) {
    fit.failure = "the covariance at the optimum is not finite (the parameters are not determined by the points)";
    return fit;
  }

  const double t = student_t_95(fit.degrees_of_freedom);
  const char* names[] = {"E", "A", "alpha", "B", "beta"};
  for (Eigen::Index k = 0; k < p; ++k) {
    Estimate e;
    e.name = names[k];
    const double se = std::sqrt(covariance(k, k));
    if (k == 1 || k == 3) {  // fitted as logarithms
      e.value = std::exp(reported[k]);
      e.std_error = e.value * se;
      e.low = std::exp(reported[k] - t * se);
      e.high = std::exp(reported[k] + t * se);
    } else {
      e.value = reported[k];
      e.std_error = se;
      e.low = e.value - t * se;
      e.high = e.value + t * se;
    }
    fit.estimates.push_back(e);
  }

  const Eigen::VectorXd fitted = residuals.model(theta);
  fit.fitted.assign(fitted.data(), fitted.data() + fitted.size());
  const double sst = (problem.loss.array() - problem.loss.mean()).square().sum();
  fit.r_squared = sst > 0 ? 1.0 - solution.sse / sst : std::numeric_limits<double>::quiet_NaN();
  fit.residual_std = std::sqrt(s2);
  fit.max_abs_residual = (fitted - problem.loss).cwiseAbs().maxCoeff();
  fit.evaluations = solution.evaluations;
  fit.converged = true;
  return fit;
}

}  // namespace

const Estimate& Fit::estimate(const std::string& name) const {
  for (const Estimate& e : estimates) {
    if (e.name == name) return e;
  }
  throw std::out_of_range("fit " + model + " has no parameter " + name);
}

double student_t_95(size_t degrees_of_freedom) {
  if (degrees_of_freedom == 0) throw Error("Student's t needs at least 1 degree of freedom");
  const boost::math::students_t distribution(static_cast<double>(degrees_of_freedom));
  return boost::math::quantile(boost::math::complement(distribution, 0.025));
}

Fit fit_power_law(const std::vector<double>& params, const std::vector<double>& losses) {
  const std::string model = "L(N) = E + A*N^-alpha";
  check_points(model, kPowerLawParameters, {&params, &losses}, {"N", "loss"});
  Problem problem;
  problem.x = centred_logs(params, problem.x_mean);
  problem.loss = Eigen::Map<const Eigen::VectorXd>(losses.data(), static_cast<Eigen::Index>(losses.size()));
  return fit_problem(model, problem);
}

Fit fit_power_law_tokens(const std::vector<double>& params, const std::vector<double>& tokens,
                         const std::vector<double>& losses) {
  const std::string model = "L(N,D) = E + A*N^-alpha + B*D^-beta";
  check_points(model, kPowerLawTokensParameters, {&params, &tokens, &losses}, {"N", "D", "loss"});
  Problem problem;
  problem.with_tokens = true;
  problem.x = centred_logs(params, problem.x_mean);
  problem.y = centred_logs(tokens, problem.y_mean);
  problem.loss = Eigen::Map<const Eigen::VectorXd>(losses.data(), static_cast<Eigen::Index>(losses.size()));
  return fit_problem(model, problem);
}

}  // namespace strait::fit
