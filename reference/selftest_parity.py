#!/usr/bin/python3
"""Self-test of check_parity.py that needs no strait binary.

It plays strait's part: a deliberately naive float64 implementation of the Llama forward
pass (loops over batch rows, heads and query positions; its own RMSNorm, rotary, causal
softmax, SiLU and cross-entropy), written independently of llama_ref, produces the
expected loss, logits and gradients for random tiny models. Then:

  * check_parity must pass for an untied F32 model and a tied model stored as BF16;
  * it must fail when one gradient is off by 1e-3 relative, when a gradient is missing,
    has the wrong shape or is extra (lm_head of a tied model), and when the naive model
    rotates interleaved pairs instead of halves (proving the rotary convention is tested);
  * it must exit 2 on an unreadable model file;
  * the safetensors reader must round-trip every dtype and reject overlapping tensors.

Exits non-zero if anything is wrong. Usage: selftest_parity.py
"""

import contextlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

import check_parity
from llama_ref import SafetensorsError, read_safetensors, save_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
C, L, H, F, V = 32, 2, 4, 64, 50
B, T = 2, 8
EPS, THETA = 1e-5, 10000.0


def hf_config(tied):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
            "num_attention_heads": H, "num_key_value_heads": H, "vocab_size": V,
            "max_position_embeddings": 64, "rms_norm_eps": EPS, "rope_theta": THETA,
            "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32"}


def random_weights(generator, tied):
    """Random fp32 weights under HF names, scaled so activations stay O(1) and norm
    weights are not all ones (a norm weight that is ignored must show)."""
    def matrix(rows, cols, std):
        return torch.randn(rows, cols, generator=generator) * std

    def norm():
        return 1.0 + 0.1 * torch.randn(C, generator=generator)

    w = {"model.embed_tokens.weight": matrix(V, C, 1.0), "model.norm.weight": norm()}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "post_attention_layernorm.weight"] = norm()
        for proj in "qkvo":
            w[p + f"self_attn.{proj}_proj.weight"] = matrix(C, C, C ** -0.5)
        w[p + "mlp.gate_proj.weight"] = matrix(F, C, C ** -0.5)
        w[p + "mlp.up_proj.weight"] = matrix(F, C, C ** -0.5)
        w[p + "mlp.down_proj.weight"] = matrix(C, F, F ** -0.5)
    if not tied:
        w["lm_head.weight"] = matrix(V, C, C ** -0.5)
    return w


# ---------------------------------------------------------------- naive implementation

def naive_rmsnorm(x, weight):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + EPS) * weight


def naive_rotary(x, interleaved):
    """Rotates each pair of one head's dims [T, D] by position * theta^(-2j/D). HF pairs
    dim j with j + D/2; the interleaved convention pairs 2j with 2j + 1."""
    d = x.shape[1]
    out = torch.zeros_like(x)
    for j in range(d // 2):
        a, b = (2 * j, 2 * j + 1) if interleaved else (j, j + d // 2)
        angles = torch.tensor([pos * THETA ** (-2.0 * j / d) for pos in range(x.shape[0])],
                              dtype=x.dtype)
        out[:, a] = x[:, a] * torch.cos(angles) - x[:, b] * torch.sin(angles)
        out[:, b] = x[:, b] * torch.cos(angles) + x[:, a] * torch.sin(angles)
    return out


def naive_attention(x, wq, wk, wv, wo, interleaved):
    q, k, v = x @ wq.t(), x @ wk.t(), x @ wv.t()
    d = C // H
    heads = []
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        qh, kh = naive_rotary(q[:, cols], interleaved), naive_rotary(k[:, cols], interleaved)
        rows = []
        for i in range(x.shape[0]):
            # Causality by construction: query i only ever sees keys 0..i.
            scores = kh[: i + 1] @ qh[i] / math.sqrt(d)
            p = torch.exp(scores - scores.max())
            rows.append((p / p.sum()) @ v[: i + 1, cols])
        heads.append(torch.stack(rows))
    return torch.cat(heads, dim=1) @ wo.t()


def naive_loss_and_logits(w, inputs, targets, tied, interleaved=False):
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    all_logits, losses = [], []
    for row in range(inputs.shape[0]):
        x = w["model.embed_tokens.weight"][inputs[row]]
        for i in range(L):
            p = f"model.layers.{i}."
            x = x + naive_attention(naive_rmsnorm(x, w[p + "input_layernorm.weight"]),
                                    *(w[p + f"self_attn.{m}_proj.weight"] for m in "qkvo"),
                                    interleaved)
            n = naive_rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            gate = n @ w[p + "mlp.gate_proj.weight"].t()
            silu = gate / (1.0 + torch.exp(-gate))
            x = x + (silu * (n @ w[p + "mlp.up_proj.weight"].t())) @ \
                w[p + "mlp.down_proj.weight"].t()
        logits = naive_rmsnorm(x, w["model.norm.weight"]) @ head.t()
        for t in range(logits.shape[0]):
            m = logits[t].max()
            log_sum_exp = m + torch.log(torch.exp(logits[t] - m).sum())
            losses.append(log_sum_exp - logits[t, targets[row, t]])
        all_logits.append(logits)
    return torch.stack(losses).mean(), torch.stack(all_logits)


def naive_expected(weights, inputs, targets, tied, interleaved=False):
    """strait's side of the protocol: loss, logits and grad.<name>, all float32."""
    w = {name: t.double().requires_grad_() for name, t in weights.items()}
    loss, logits = naive_loss_and_logits(w, inputs, targets, tied, interleaved)
    loss.backward()
    expected = {"loss": loss.detach().float(), "logits": logits.detach().float()}
    expected.update({f"grad.{name}": t.grad.float() for name, t in w.items()})
    return expected


# ---------------------------------------------------------------- test driver

def write_case(directory, weights, tied, store_bf16, inputs, targets, expected):
    os.makedirs(os.path.join(directory, "model"), exist_ok=True)
    with open(os.path.join(directory, "model", "config.json"), "w") as f:
        json.dump(hf_config(tied), f)
    stored = {k: v.bfloat16() for k, v in weights.items()} if store_bf16 else weights
    save_safetensors(os.path.join(directory, "model", "model.safetensors"), stored,
                     {"format": "pt"})
    save_safetensors(os.path.join(directory, "batch.safetensors"),
                     {"inputs": inputs, "targets": targets})
    save_safetensors(os.path.join(directory, "expected.safetensors"), expected)


def run_check(directory):
    """check_parity in-process (one torch import for the whole self-test)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check_parity.main([directory])
    return code, out.getvalue()


def check_safetensors_io(directory):
    path = os.path.join(directory, "all.safetensors")
    tensors = {"f32": torch.randn(2, 3), "bf16": torch.randn(4).bfloat16(),
               "i64": torch.tensor([[-1, 2 ** 40]]), "i32": torch.tensor([7], dtype=torch.int32),
               "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 3)}
    u16 = np.array([0, 1, 65535], dtype=np.uint16)
    save_safetensors(path, {**tensors, "u16": u16}, {"note": "x"})
    loaded, metadata = read_safetensors(path)
    assert metadata == {"note": "x"}, metadata
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
    assert loaded["u16"].tolist() == [0, 1, 65535], loaded["u16"]

    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + bytes(8))
    try:
        read_safetensors(path)
    except SafetensorsError:
        return
    raise AssertionError("overlapping tensors were accepted")


def main():
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randint(0, V, (B, T), generator=generator)
    targets = torch.randint(0, V, (B, T), generator=generator)
    untied = random_weights(generator, tied=False)
    tied = random_weights(generator, tied=True)
    # The tied model is stored as BF16, so strait's side sees the rounded weights too.
    tied_rounded = {k: v.bfloat16().float() for k, v in tied.items()}
    untied_expected = naive_expected(untied, inputs, targets, tied=False)
    tied_expected = naive_expected(tied_rounded, inputs, targets, tied=True)
    grad_name = "grad.model.layers.1.mlp.up_proj.weight"

    results = []
    root = tempfile.mkdtemp(prefix="strait-parity-selftest-")
    try:
        def case(name, weights, is_tied, expected, want_code, store_bf16=False,
                 want_text=None, as_cli=False):
            directory = os.path.join(root, name)
            write_case(directory, weights, is_tied, store_bf16, inputs, targets, expected)
            if as_cli:
                proc = subprocess.run([sys.executable, os.path.join(HERE, "check_parity.py"),
                                       directory], capture_output=True, text=True)
                code, text = proc.returncode, proc.stdout + proc.stderr
            else:
                code, text = run_check(directory)
            ok = code == want_code and (want_text is None or want_text in text)
            results.append(ok)
            print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {code} (want {want_code})")
            if not ok:
                print("    " + text.strip().replace("\n", "\n    "))

        case("untied-f32-passes", untied, False, untied_expected, 0,
             want_text="PARITY OK", as_cli=True)
        case("tied-bf16-passes", tied, True, tied_expected, 0, store_bf16=True,
             want_text="PARITY OK")

        perturbed = dict(untied_expected)
        perturbed[grad_name] = perturbed[grad_name] * (1 + 1e-3)
        case("perturbed-grad-fails", untied, False, perturbed, 1,
             want_text=f"PARITY FAILED: {grad_name}")

        interleaved = naive_expected(untied, inputs, targets, tied=False, interleaved=True)
        case("interleaved-rotary-fails", untied, False, interleaved, 1,
             want_text="PARITY FAILED: loss, logits")

        missing = {k: v for k, v in untied_expected.items() if k != grad_name}
        case("missing-grad-fails", untied, False, missing, 1, want_text=grad_name)

        reshaped = dict(untied_expected)
        reshaped[grad_name] = reshaped[grad_name].t().contiguous()
        case("wrong-shape-grad-fails", untied, False, reshaped, 1, want_text=grad_name)

        extra = dict(tied_expected)
        extra["grad.lm_head.weight"] = tied_expected["grad.model.embed_tokens.weight"]
        case("tied-extra-lm-head-grad-fails", tied, True, extra, 1, store_bf16=True,
             want_text="grad.lm_head.weight")

        broken = os.path.join(root, "truncated-model-exits-2")
        write_case(broken, untied, False, False, inputs, targets, untied_expected)
        weights_file = os.path.join(broken, "model", "model.safetensors")
        os.truncate(weights_file, os.path.getsize(weights_file) - 4)
        code, text = run_check(broken)
        results.append(code == 2)
        print(f"{'ok  ' if code == 2 else 'FAIL'} truncated-model-exits-2: exit {code}")

        try:
            check_safetensors_io(root)
            results.append(True)
            print("ok   safetensors-io")
        except AssertionError as e:
            results.append(False)
            print(f"FAIL safetensors-io: {e}")
    finally:
        shutil.rmtree(root)

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
