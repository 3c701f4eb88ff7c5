#include "strait/strategy/inner.h"

#include "strait/core/clock.h"

namespace strait {

MicroBatchResult InnerSync::forward_backward(LlamaModel& model, const torch::Tensor& inputs,
                                             const torch::Tensor& targets, double loss_divisor, bool last) {
  MicroBatchResult result;
  const auto forward_start = Clock::now();
  const torch::Tensor loss = model.loss(inputs, targets) / loss_divisor;
  result.forward_seconds = seconds_since(forward_start);
  before_backward(last);
  const auto backward_start = Clock::now();
  loss.backward();
  result.backward_seconds = seconds_since(backward_start);
  result.loss = loss.item<double>();
  return result;
}

double InnerSync::batch_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) {
  torch::NoGradGuard no_grad;
  return model.loss(inputs, targets).item<double>();
}

}  // namespace strait
