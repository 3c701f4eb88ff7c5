#include "strait/train/optimizer.h"

#include <cmath>

#include "strait/core/error.h"
#include "strait/kernels/fused_ops.h"

namespace strait {

std::string to_string(OptimizerKind kind) { return kind == OptimizerKind::Sgd ? "sgd" : "adamw"; }

OptimizerKind optimizer_kind(const std::string& name) {
  if (name != "adamw" && name != "sgd") throw Error("optimizer must be adamw or sgd, got '" + name + "'");
  return name == "sgd" ? OptimizerKind::Sgd : OptimizerKind::AdamW;
}

Optimizer::Optimizer(std::vector<NamedParameter> parameters, OptimizerOptions options, std::vector<bool> weight_decayed)
    : parameters_(std::move(parameters)), options_(options), weight_decayed_(std::move(weight_decayed)) {
  if (weight_decayed_.empty()) {
    for (const auto& parameter : parameters_) weight_decayed_.push_back(parameter.tensor.dim() >= 2);
  }
  if (weight_decayed_.size() != parameters_.size()) {
    throw Error("optimizer: " + std::to_string(weight_decayed_.size()) + " weight-decay flags for " +
                std::to_string(parameters_.size()) + " parameters");
  }
  if (options_.kind != OptimizerKind::AdamW) return;
  for (const auto& parameter : parameters_) {
    exp_avg_.push_back(torch::zeros_like(parameter.tensor, torch::MemoryFormat::Contiguous).detach());
    exp_avg_sq_.push_back(torch::zeros_like(parameter.tensor, torch::MemoryFormat::Contiguous).detach());
  }
}

void Optimizer::zero_grad() {
  // Dropping the gradients (rather than zero-filling them) lets the next backward pass hand its
  // gradient buffers over instead of adding them into zeros: two passes over every gradient saved.
  for (auto& parameter : parameters_) parameter.tensor.mutable_grad().reset();
}

void Optimizer::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_count_;
  if (options_.kind == OptimizerKind::Sgd) {
    sgd_step(lr);
  } else {
    adamw_step(lr);
  }
}

void Optimizer::adamw_step(double lr) {
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_count_));
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_count_));
  kernels::AdamWCoefficients coefficients{};
  coefficients.lr = static_cast<float>(lr);
  coefficients.beta1 = static_cast<float>(options_.beta1);
  coefficients.beta2 = static_cast<float>(options_.beta2);
  coefficients.eps = static_cast<float>(options_.eps);
  coefficients.step_size = static_cast<float>(lr / bias_correction1);
  coefficients.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& param = parameters_[i].tensor;
    const auto& grad = param.grad();
    if (!grad.defined()) continue;  // not used this step: left as it is, as torch.optim does
    coefficients.weight_decay = weight_decayed_[i] ? static_cast<float>(options_.weight_decay) : 0.0f;
    kernels::adamw_update(param, grad, exp_avg_[i], exp_avg_sq_[i], coefficients);
  }
}

// θ ← θ − lr (g + wd θ), in torch.optim.SGD's order of operations (d_p = g + wd θ; θ += −lr d_p).
void Optimizer::sgd_step(double lr) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& param = parameters_[i].tensor;
    const auto& grad = param.grad();
    if (!grad.defined()) continue;
    const double decay = weight_decayed_[i] ? options_.weight_decay : 0.0;
    if (decay != 0.0) {
      param.add_(grad.add(param, decay), -lr);
    } else {
      param.add_(grad, -lr);
    }
  }
}

double learning_rate(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr_ratio) {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double min_lr = lr * min_lr_ratio;
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(const std::vector<NamedParameter>& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& parameter : parameters) {
    if (parameter.tensor.grad().defined()) norms.push_back(parameter.tensor.grad().norm());
  }
  if (norms.empty()) return 0.0;
  const double total_norm = torch::stack(norms).norm().item<double>();
  if (max_norm > 0.0) {
    // Same coefficient as torch.nn.utils.clip_grad_norm_ (including its 1e-6 guard).
    const double coefficient = max_norm / (total_norm + 1e-6);
    if (coefficient < 1.0) {
      for (const auto& parameter : parameters) {
        if (parameter.tensor.grad().defined()) parameter.tensor.mutable_grad().mul_(coefficient);
      }
    }
  }
  return total_norm;
}

}  // namespace strait
