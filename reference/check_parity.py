#!/usr/bin/python3
"""Checks strait's forward and backward pass against the PyTorch reference (llama_ref).

Usage: check_parity.py DIR

DIR/model/config.json, DIR/model/model.safetensors   the model, as exported by strait
DIR/batch.safetensors      "inputs", "targets": I64 [B, T] (targets already shifted)
DIR/expected.safetensors   strait's results, all F32:
                             "loss"            [] or [1]  mean cross-entropy over B*T
                             "logits"          [B, T, V]
                             "grad.<hf name>"  one per parameter, parameter-shaped
                                               (no grad.lm_head.weight when tied)

The reference recomputes everything in fp32 autograd and compares, relative to the
reference value r and strait's value s:
    loss       |s - r| / |r|               <= 1e-5
    logits     max|s - r| / max|r|         <= 1e-5
    each grad  max|s - r| / max|r|         <= 1e-4
A gradient that is zero on one side only, a missing or extra gradient, a wrong shape or
dtype, or a NaN anywhere all fail. Exit status: 0 parity, 1 mismatch, 2 unreadable input.
"""

import json
import math
import os
import sys

import torch

from llama_ref import SafetensorsError, load_hf_dir, load_safetensors

LOSS_TOL = 1e-5
LOGITS_TOL = 1e-5
GRAD_TOL = 1e-4


class InputError(Exception):
    """The inputs could not be read or do not describe a valid check (exit 2)."""


def max_relative_difference(reference, other):
    """max|other - reference| / max|reference|, in float64. Zero reference scale gives 0
    if other is zero too and inf otherwise, so a one-sided zero always fails."""
    reference = reference.double()
    other = other.double()
    if reference.numel() == 0:
        return 0.0
    diff = (other - reference).abs().max().item()
    scale = reference.abs().max().item()
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def load_inputs(directory):
    """Returns (model, inputs, targets, expected), raising InputError for anything that
    makes the check meaningless rather than failed."""
    try:
        model = load_hf_dir(os.path.join(directory, "model"))
        batch = load_safetensors(os.path.join(directory, "batch.safetensors"))
        expected = load_safetensors(os.path.join(directory, "expected.safetensors"))
    except (OSError, ValueError, json.JSONDecodeError, SafetensorsError) as e:
        raise InputError(str(e)) from None

    for name in ("inputs", "targets"):
        tensor = batch.get(name)
        if tensor is None or tensor.dtype != torch.int64 or tensor.dim() != 2:
            raise InputError(f"batch.safetensors: {name!r} must be an I64 [B, T] tensor")
        if tensor.numel() == 0:
            raise InputError(f"batch.safetensors: {name!r} is empty")
        vocab = model.config.vocab_size
        if tensor.min().item() < 0 or tensor.max().item() >= vocab:
            raise InputError(f"batch.safetensors: {name!r} has token ids outside [0, {vocab})")
    inputs, targets = batch["inputs"], batch["targets"]
    if inputs.shape != targets.shape:
        raise InputError(f"batch.safetensors: inputs {list(inputs.shape)} and targets "
                         f"{list(targets.shape)} differ in shape")
    if inputs.shape[1] > model.config.max_position_embeddings:
        raise InputError(f"sequence length {inputs.shape[1]} exceeds max_position_embeddings")
    return model, inputs, targets, expected


def reference_results(model, inputs, targets):
    """Loss, logits and {hf name: grad} from one fp32 forward/backward pass."""
    logits = model(inputs)
    loss = model.loss(logits, targets)
    loss.backward()
    grads = {name: p.grad for name, p in model.hf_state_dict().items()}
    return loss.detach(), logits.detach(), grads


def compare(expected, loss, logits, grads):
    """Yields (label, measured or None, tolerance, problem or None) for every quantity."""
    def check(label, reference, tolerance, scalar=False):
        value = expected.get(label)
        if value is None:
            return label, None, tolerance, "missing from expected.safetensors"
        if value.dtype != torch.float32:
            return label, None, tolerance, f"dtype {value.dtype}, expected float32"
        if scalar:
            if value.numel() != 1 or value.dim() > 1:
                return label, None, tolerance, f"shape {list(value.shape)}, expected [] or [1]"
            value = value.reshape(())
        elif value.shape != reference.shape:
            return (label, None, tolerance,
                    f"shape {list(value.shape)}, expected {list(reference.shape)}")
        measured = max_relative_difference(reference, value)
        # "not <=" so that NaN fails.
        problem = None if measured <= tolerance else "exceeds tolerance"
        return label, measured, tolerance, problem

    yield check("loss", loss, LOSS_TOL, scalar=True)
    yield check("logits", logits, LOGITS_TOL)
    for name, grad in grads.items():
        yield check(f"grad.{name}", grad, GRAD_TOL)
    for label in sorted(expected):
        if label.startswith("grad.") and label[len("grad."):] not in grads:
            yield label, None, GRAD_TOL, "not a parameter of this model (tied lm_head?)"


def main(argv):
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        model, inputs, targets, expected = load_inputs(argv[0])
    except InputError as e:
        print(f"PARITY FAILED: unreadable input: {e}")
        return 2

    loss, logits, grads = reference_results(model, inputs, targets)
    b, t = inputs.shape
    print(f"batch {b}x{t}, reference loss {loss.item():.8f}")
    failures = []
    for label, measured, tolerance, problem in compare(expected, loss, logits, grads):
        value = "-" if measured is None else f"{measured:.3e}"
        verdict = "ok" if problem is None else f"FAIL ({problem})"
        print(f"{label:<52} rel_diff {value:>9}  tol {tolerance:.0e}  {verdict}")
        if problem is not None:
            failures.append(label)
    if failures:
        print(f"PARITY FAILED: {', '.join(failures)}")
        return 1
    print("PARITY OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
