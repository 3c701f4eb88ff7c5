#!/usr/bin/python3
"""Reference PyTorch trainer for the side-by-side throughput benchmark (bench/throughput.py).

It trains llama_ref's model with the same data order, optimizer and schedule as strait,
so the two runs do the same work per step, and prints one JSON line at the end:
  {"impl": "pytorch", "tokens_per_s": ..., "step_ms_median": ..., "steps": N,
   "final_loss": ..., "threads": K, "precision": ..., ...}

Data: DIR/train_*.bin shards in the llm.c format (256 little-endian int32 header
[20240520, 1, token_count, ...], then token_count uint16 tokens), read sequentially:
the batch at position p is tokens[p : p + B*T + 1] (inputs = all but the last, targets =
all but the first, as B rows of T), then p += B*T; when p + B*T + 1 would pass the end of
the shard, the next shard (wrapping around) starts at p = 0.

Schedule (0-based step s of N): lr * (s + 1) / W for s < W, then cosine from lr down to
0.1 * lr, reached at s = N. AdamW(betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on 2-D
weights (embeddings included) and 0 on norm weights; gradient global norm clipped to 1.0.
Init: N(0, 0.02) for every matrix, ones for norm weights, after torch.manual_seed(seed).

Timing covers whole steps (batch loading, forward, backward, clipping, optimizer step and
reading the loss); the first E steps are excluded. tokens_per_s = timed tokens / timed
seconds, the same way the harness computes strait's from its metrics.jsonl.
"""

import argparse
import contextlib
import glob
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

from llama_ref import LlamaConfig, LlamaForCausalLM

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256


class ShardLoader:
    """llm.c-style sequential batches over DIR/train_*.bin."""

    def __init__(self, directory, batch_size, seq_len, vocab_size):
        self.paths = sorted(glob.glob(os.path.join(directory, "train_*.bin")))
        if not self.paths:
            raise ValueError(f"no train_*.bin shards in {directory}")
        self.batch_tokens = batch_size * seq_len
        self.shape = (batch_size, seq_len)
        self.vocab_size = vocab_size
        self.shard = 0
        self._open(0)

    def _open(self, index):
        path = self.paths[index]
        header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
        if len(header) != SHARD_HEADER_INTS or header[0] != SHARD_MAGIC \
                or header[1] != SHARD_VERSION:
            raise ValueError(f"{path}: not an llm.c token shard (magic/version)")
        count = int(header[2])
        expected_size = SHARD_HEADER_INTS * 4 + 2 * count
        if os.path.getsize(path) != expected_size:
            raise ValueError(f"{path}: header says {count} tokens, size does not match")
        if count < self.batch_tokens + 1:
            raise ValueError(f"{path}: {count} tokens cannot fill one batch of "
                             f"{self.batch_tokens} + 1")
        self.tokens = np.memmap(path, dtype="<u2", mode="r",
                                offset=SHARD_HEADER_INTS * 4, shape=(count,))
        self.position = 0

    @property
    def batch_offset(self):
        """Where this reader's batch starts, in tokens past the position (RankShardLoader)."""
        return 0

    @property
    def global_tokens(self):
        """How far the position advances per batch: one batch here, P batches in RankShardLoader."""
        return self.batch_tokens

    def next_batch(self):
        start = self.position + self.batch_offset
        chunk = self.tokens[start:start + self.batch_tokens + 1]
        buf = torch.from_numpy(chunk.astype(np.int64))
        if buf.max().item() >= self.vocab_size:
            raise ValueError(f"{self.paths[self.shard]}: token id {buf.max().item()} is "
                             f"outside the model's vocabulary of {self.vocab_size}")
        self.position += self.global_tokens
        if self.position + self.global_tokens + 1 > len(self.tokens):
            self.shard = (self.shard + 1) % len(self.paths)
            self._open(self.shard)
        return buf[:-1].view(self.shape), buf[1:].view(self.shape)


def init_weights(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)


def make_optimizer(model, lr):
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def learning_rate(step, max_lr, warmup, total):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    min_lr = 0.1 * max_lr
    progress = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="HF-style config.json")
    parser.add_argument("--data", required=True, help="directory with train_*.bin shards")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=0, help="learning-rate warmup steps")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--warmup-steps-excluded", type=int, default=0,
                        help="leading steps left out of the timing")
    parser.add_argument("--precision", choices=["fp32", "bf16-autocast"], default="fp32")
    args = parser.parse_args(argv)
    for name in ("batch_size", "seq_len", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or not 0 <= args.warmup_steps_excluded < args.steps:
        parser.error("need --warmup >= 0 and 0 <= --warmup-steps-excluded < --steps")
    return args


def build_model(args):
    """The config at --config (checked against --seq-len) and its model, initialised from
    --seed and in training mode."""
    config = LlamaConfig.from_json(args.config)
    if args.seq_len > config.max_position_embeddings:
        raise ValueError(f"--seq-len {args.seq_len} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    model = LlamaForCausalLM(config)
    init_weights(model, args.seed)
    model.train()
    return config, model


def autocast(precision):
    if precision == "bf16-autocast":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_steps(args, model, optimizer, loader, forward=None, reduce_loss=None):
    """Runs the --steps training steps, timing each whole step; returns the step times in
    seconds and the last step's loss. forward is the module called on the inputs (default
    model itself; ddp_ref.py passes its DistributedDataParallel wrapper, whose backward
    averages the gradients over the ranks); reduce_loss, when given, maps each step's loss to
    the one reported (ddp_ref.py: the mean over the ranks), inside the timed step."""
    if forward is None:
        forward = model
    step_seconds = []
    for step in range(args.steps):
        start = time.perf_counter()
        inputs, targets = loader.next_batch()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.lr, args.warmup, args.steps)
        with autocast(args.precision):
            loss = model.loss(forward(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        if reduce_loss is not None:
            loss_value = reduce_loss(loss_value)
        step_seconds.append(time.perf_counter() - start)
        if not math.isfinite(loss_value):
            raise RuntimeError(f"loss became {loss_value} at step {step}")
    return step_seconds, loss_value


def result_record(impl, args, model, step_seconds, final_loss, ranks=None, **extra):
    """The JSON result line's fields. tokens_per_s counts ranks x B x T tokens (B x T without
    ranks) per step after the first --warmup-steps-excluded; with ranks the record also holds
    "ranks" and "tokens_per_step"; extra fields go just before "torch"."""
    tokens_per_step = (ranks or 1) * args.batch_size * args.seq_len
    timed = step_seconds[args.warmup_steps_excluded:]
    record = {"impl": impl}
    if ranks is not None:
        record["ranks"] = ranks
    record.update({
        "tokens_per_s": len(timed) * tokens_per_step / sum(timed),
        "step_ms_median": 1000.0 * statistics.median(timed),
        "steps": args.steps,
        "final_loss": final_loss,
        "threads": args.threads,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
    })
    if ranks is not None:
        record["tokens_per_step"] = tokens_per_step
    record.update(warmup_steps_excluded=args.warmup_steps_excluded,
                  params=sum(p.numel() for p in model.parameters()), **extra)
    record["torch"] = torch.__version__
    return record


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config, model = build_model(args)
    optimizer = make_optimizer(model, args.lr)
    loader = ShardLoader(args.data, args.batch_size, args.seq_len, config.vocab_size)
    step_seconds, loss_value = train_steps(args, model, optimizer, loader)
    print(json.dumps(result_record("pytorch", args, model, step_seconds, loss_value)))
    return 0


def run_cli(main_function, prog):
    """Exits with main_function(argv)'s status, or 2 after "PROG: error: ..." on stderr for an
    OSError or ValueError (bad options, files or data)."""
    try:
        sys.exit(main_function(sys.argv[1:]))
    except (OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_cli(main, "train_ref")
