#!/usr/bin/python3
"""PyTorch DistributedDataParallel reference trainer for bench/ddp_throughput.py.

Started by torchrun, one process per rank (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT), with exactly reference/train_ref.py's options:

  /usr/bin/python3 -m torch.distributed.run --nproc_per_node P --master_port PORT \\
      bench/ddp_ref.py --config C --data DIR --batch-size B --seq-len T --steps N \\
      --threads K --warmup-steps-excluded E --lr 3e-4 --warmup W

Every rank does what train_ref.py does (same LlamaForCausalLM, init, AdamW groups, learning-
rate schedule, gradient clipping at global norm 1.0 and step timing, all imported from
reference/), with --threads K threads of its own, the model wrapped in
torch.nn.parallel.DistributedDataParallel over the gloo backend (--bucket-cap-mb, default 25), so
the gradients clipped and stepped on are the mean over ranks. Data is read llm.c style, as
strait's DDP reads it: at global position p of a shard, rank r's batch is
tokens[p + r*B*T : p + (r+1)*B*T + 1], then p += P*B*T; when p + P*B*T + 1 would pass the end
of the shard, the next shard (wrapping around) starts at p = 0.

As strait does, each step's loss is averaged over the ranks (one all-reduce of a scalar,
inside the timed step). Rank 0 prints one JSON line at the end:
  {"impl": "pytorch-ddp", "ranks": P, "tokens_per_s": ..., "step_ms_median": ...,
   "final_loss": ..., ...}
where tokens_per_s is the global rate: P*B*T tokens per timed step / rank 0's summed time of
the steps after the first E, and final_loss is the last step's loss averaged over the ranks.
"""

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "reference"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import train_ref  # noqa: E402


class RankShardLoader(train_ref.ShardLoader):
    """train_ref's sequential shard reader, with the llm.c rank layout: rank r reads the r-th
    of P consecutive blocks of B*T tokens at each global position, which advances by P*B*T."""

    def __init__(self, directory, batch_size, seq_len, vocab_size, rank, world_size):
        self.rank, self.world_size = rank, world_size
        super().__init__(directory, batch_size, seq_len, vocab_size)

    @property
    def batch_offset(self):
        return self.rank * self.batch_tokens

    @property
    def global_tokens(self):
        return self.world_size * self.batch_tokens

    def _open(self, index):
        super()._open(index)
        if len(self.tokens) < self.global_tokens + 1:
            raise ValueError(f"{self.paths[index]}: {len(self.tokens)} tokens cannot fill one "
                             f"global batch of {self.world_size} x {self.batch_tokens} + 1")


def parse_args(argv):
    """train_ref.py's options, plus --bucket-cap-mb (DDP's bucket_cap_mb, default 25)."""
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print("Options: --bucket-cap-mb MB (default 25), then those of reference/train_ref.py:")
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--bucket-cap-mb", type=float, default=25.0)
    own, rest = extra.parse_known_args(argv)
    args = train_ref.parse_args(rest)
    args.bucket_cap_mb = own.bucket_cap_mb
    return args


def mean_over_ranks(value, world_size):
    scalar = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(scalar)
    return scalar.item() / world_size


def main(argv):
    args = parse_args(argv)
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"{name} is not set; start this under torchrun "
                             "(python3 -m torch.distributed.run)")
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()

    config, model = train_ref.build_model(args)
    # DDP broadcasts rank 0's weights at construction; every rank's are the same anyway.
    ddp_model = DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb)
    optimizer = train_ref.make_optimizer(model, args.lr)
    loader = RankShardLoader(args.data, args.batch_size, args.seq_len, config.vocab_size,
                             rank, world_size)
    step_seconds, loss_value = train_ref.train_steps(
        args, model, optimizer, loader, forward=ddp_model,
        reduce_loss=lambda value: mean_over_ranks(value, world_size))

    if rank == 0:
        result = train_ref.result_record(
            "pytorch-ddp", args, model, step_seconds, loss_value, ranks=world_size,
            backend=dist.get_backend(),
            bucket_cap_mb=getattr(ddp_model, "bucket_bytes_cap", 0) / 2**20 or None)
        print(json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    train_ref.run_cli(main, "ddp_ref")
