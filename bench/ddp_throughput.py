#!/usr/bin/python3
"""Data-parallel training throughput: strait's DDP (`strait launch`) against PyTorch's
DistributedDataParallel (bench/ddp_ref.py under torchrun, gloo backend), side by side.

Usage:
  bench/ddp_throughput.py --strait build/strait --data DIR --preset small --ranks 2,4 \
      --rounds 5 --steps 20 --warmup-steps 5 --batch-size 4 --seq-len 256 \
      --out bench/out/ddp.json

For each rank count P of --ranks, both sides run P local ranks of
K = max(1, cores // P) threads each (cores: the CPUs this process may use), each rank on its
own --batch-size x --seq-len batch, read llm.c style from the same shards (rank r takes the
r-th of P consecutive blocks at each global position), with the same model dims (the
reference builds its model from the config.json of a strait run), init seed, AdamW, learning-
rate schedule (--warmup-steps of warmup), gradient clipping and fp32 precision:

  strait:  STRAIT launch --nproc-per-node P --master-port PORT -- --quiet train --data DIR
             --preset NAME --steps N --batch-size B --seq-len T --threads K --eval-every 0
             --eval-batches 1 --checkpoint-every 0 --warmup-steps W --lr 3e-4
             --precision fp32 --out RUNDIR --overwrite
  pytorch: env OMP_NUM_THREADS=K PYTHON -m torch.distributed.run --nproc_per_node P
             --master_port PORT --redirects 1 --tee 1 --log_dir LOGDIR bench/ddp_ref.py
             --config RUNDIR/config.json --data DIR --batch-size B --seq-len T --steps N
             --threads K --warmup-steps-excluded W --lr 3e-4 --warmup W --seed 1337

(`--redirects 1 --tee 1` works around torchrun 1.13 on Python 3.11, where the default
`--redirects 0` fails to parse; rank 0's stdout still reaches the harness, prefixed
"[default0]:". OMP_NUM_THREADS=K matches what `strait launch` sets for its ranks.) Every run
gets a fresh free port (a socket bound to port 0).

Each P gets one discarded warm-up run of each side (strait first: it writes the config the
reference reads), then --rounds rounds of one run per side, the starting side alternating
(strait first in odd rounds, PyTorch first in even ones). Both sides' global tokens/s are
computed alike: P x B x T tokens for each step after the first --warmup-steps, divided by the
summed time of those steps (strait: "tokens" and "step_ms" of rank 0's metrics.jsonl, where
"tokens" is already the global count; PyTorch: rank 0's own step timing in ddp_ref.py). Each
round gives ratio = strait tok/s / PyTorch tok/s; the report gives their median and range,
each side's median tokens/s, strait's measured per-step bytes sent by rank 0 across nodes and
within the node (the metrics' "traffic" field; median over the timed steps), and PyTorch's
gradient bytes per step per rank as a computed figure, 4 x parameters x 2(P-1)/P (what a ring
all-reduce of the fp32 gradients sends; not measured). The JSON at --out holds every run, the
machine, date, git commit and this command line; a markdown table for BENCHMARKS.md goes to
stdout, progress to stderr.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import throughput as tp  # noqa: E402  (bench/throughput.py: shared harness pieces)
from throughput import BenchError, progress, warn_if_busy  # noqa: E402

DDP_REF = os.path.join(BENCH, "ddp_ref.py")
PRECISION = "fp32"
SIDES = ("strait", "pytorch")
TORCHRUN_RANK0_PREFIX = "[default0]:"


def free_port():
    """A port nothing listens on now (the kernel's pick for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ring_gradient_bytes(params, ranks):
    """Bytes each rank sends per step for a ring all-reduce of fp32 gradients (computed)."""
    return 4.0 * params * 2.0 * (ranks - 1) / ranks


def strait_run(args, ranks, threads, run_dir, label):
    command = [args.strait, "launch", "--nproc-per-node", str(ranks),
               "--master-port", str(free_port()), "--",
               "--quiet", "train", "--data", args.data, "--preset", args.preset,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--threads", str(threads),
               "--eval-every", "0", "--eval-batches", "1", "--checkpoint-every", "0",
               "--warmup-steps", str(args.warmup_steps), "--lr", str(tp.LR),
               "--precision", PRECISION, "--out", run_dir, "--overwrite"]
    loadavg = os.getloadavg()[0]
    tp.run_child(label, command)
    config = tp.read_json(os.path.join(run_dir, "config.json"), label)
    summary = tp.read_json(os.path.join(run_dir, "summary.json"), label)
    expected = {"precision": PRECISION, "world_size": ranks, "strategy": "ddp"}
    tp.check_fields(summary, expected, f"{label}: strait's summary.json says")
    global_tokens = ranks * args.batch_size * args.seq_len
    records = tp.read_strait_metrics(os.path.join(run_dir, "metrics.jsonl"), args.steps,
                                     global_tokens)
    timed = records[args.warmup_steps:]
    if not all("traffic" in r for r in timed):
        raise BenchError(f"{label}: metrics.jsonl lacks the per-step \"traffic\" field")

    def bytes_per_step(link, direction):
        return statistics.median(r["traffic"][link][direction] for r in timed)

    return config, {
        "side": "strait",
        **tp.strait_timing(records, args.warmup_steps),
        "params": summary.get("parameters"),
        "bytes_per_step": {link: {d: bytes_per_step(link, d) for d in ("sent", "received")}
                           for link in ("cross_node", "intra_node")},
        "loadavg_1m_before": loadavg,
    }


def parse_rank0_result(stdout, label):
    """The JSON line rank 0 of ddp_ref.py prints (torchrun's --tee prefixes it)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith(TORCHRUN_RANK0_PREFIX):
            line = line[len(TORCHRUN_RANK0_PREFIX):]
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise BenchError(f"{label}: found no JSON result line from rank 0 in:\n{stdout[-2000:]}")


def reference_run(args, ranks, threads, config_path, log_dir, label):
    command = ["env", f"OMP_NUM_THREADS={threads}", args.python, "-m", "torch.distributed.run",
               "--nproc_per_node", str(ranks), "--master_port", str(free_port()),
               "--redirects", "1", "--tee", "1", "--log_dir", log_dir,
               DDP_REF, "--config", config_path, "--data", args.data,
               "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
               "--steps", str(args.steps), "--threads", str(threads),
               "--warmup-steps-excluded", str(args.warmup_steps), "--lr", str(tp.LR),
               "--warmup", str(args.warmup_steps), "--seed", str(tp.SEED),
               "--precision", PRECISION]
    loadavg = os.getloadavg()[0]
    proc = tp.run_child(label, command)
    result = parse_rank0_result(proc.stdout, label)
    if result.get("impl") != "pytorch-ddp" or "tokens_per_s" not in result:
        raise BenchError(f"{label}: unexpected result {result}")
    expected = {"ranks": ranks, "steps": args.steps, "threads": threads,
                "precision": PRECISION, "batch_size": args.batch_size,
                "seq_len": args.seq_len, "warmup_steps_excluded": args.warmup_steps,
                "backend": "gloo", "bucket_cap_mb": 25.0}
    tp.check_fields(result, expected, f"{label}: ddp_ref reports")
    result.update(side="pytorch", loadavg_1m_before=loadavg)
    return result


class Case(tp.CaseBase):
    """One rank count: its threads per rank, the model config and how to run each side."""

    def __init__(self, args, ranks, threads, work_dir):
        super().__init__(args, threads, os.path.join(work_dir, f"p{ranks}"))
        self.ranks = ranks
        self.run_dir = os.path.join(self.dir, "strait")
        self.log_dir = os.path.join(self.dir, "torchrun-logs")
        os.makedirs(self.log_dir, exist_ok=True)

    def run(self, side, label):
        if side == "pytorch":
            self.require_config(label)
            return reference_run(self.args, self.ranks, self.threads, self.config_path,
                                 self.log_dir, label)
        config, result = strait_run(self.args, self.ranks, self.threads, self.run_dir, label)
        self.keep_config(config, self.run_dir, label)
        return result


def describe(result):
    return f"{result['tokens_per_s']:.0f} tok/s, final loss {result['final_loss']:.4f}"


def bench_case(args, ranks, cores, work_dir):
    threads = max(1, cores // ranks)
    case = Case(args, ranks, threads, work_dir)
    where = f"[{args.preset} P{ranks} x t{threads}]"
    warn_if_busy(f"before {where}")
    if ranks * threads > cores:
        progress(f"warning: {where} {ranks} ranks x {threads} thread(s) oversubscribe the "
                 f"{cores} CPUs this process may use")

    warmups = {}
    for side in SIDES:  # strait first: it supplies the config
        warmups[side] = case.run(side, f"{where} warm-up {side}")
        progress(f"{where} warm-up {side}: {describe(warmups[side])}")
    params = warmups["strait"]["params"]
    if warmups["pytorch"]["params"] != params:
        raise BenchError(f"{where}: PyTorch's model has {warmups['pytorch']['params']} "
                         f"parameters, strait's {params}; the dims differ")

    rounds = []
    for r in range(args.rounds):
        order = SIDES if r % 2 == 0 else SIDES[::-1]
        tag = f"{where} round {r + 1}/{args.rounds}"
        runs = {}
        for side in order:
            runs[side] = case.run(side, f"{tag} {side}")
            progress(f"{tag} {side}: {describe(runs[side])}")
        ratio = runs["strait"]["tokens_per_s"] / runs["pytorch"]["tokens_per_s"]
        loss_diff = abs(runs["strait"]["final_loss"] - runs["pytorch"]["final_loss"])
        progress(f"{tag} strait/pytorch: {ratio:.3f} (final losses differ by {loss_diff:.2e})")
        rounds.append({"order": list(order), "runs": runs, "ratio": ratio,
                       "final_loss_abs_diff": loss_diff})

    sides = {side: tp.side_summary([rd["runs"][side] for rd in rounds]) for side in SIDES}
    strait_runs = [rd["runs"]["strait"] for rd in rounds]
    sides["strait"]["bytes_sent_per_step_rank0"] = {
        link: statistics.median(x["bytes_per_step"][link]["sent"] for x in strait_runs)
        for link in ("cross_node", "intra_node")}
    sides["pytorch"]["gradient_bytes_sent_per_step_per_rank_computed"] = \
        ring_gradient_bytes(params, ranks)
    ratios = [rd["ratio"] for rd in rounds]
    return {
        "preset": args.preset,
        "ranks": ranks,
        "threads_per_rank": threads,
        "global_tokens_per_step": ranks * args.batch_size * args.seq_len,
        "config": case.config,
        "params": params,
        "pytorch_version": warmups["pytorch"].get("torch"),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "final_loss_abs_diff_max": max(rd["final_loss_abs_diff"] for rd in rounds),
        "sides": sides,
        "warmup": warmups,
        "rounds": rounds,
    }


def format_bytes(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def markdown(report):
    m, s = report["machine"], report["settings"]
    torch_versions = sorted({r["pytorch_version"] for r in report["results"]
                             if r["pytorch_version"]})
    rounds = s["rounds"]
    lines = [
        f"{m['cpu_model']}, {m['nproc']} CPUs; strait {report['git_commit']}"
        f"{' (dirty)' if report['git_dirty'] else ''}; PyTorch {', '.join(torch_versions)} "
        f"DDP (gloo, 25 MB buckets); {report['date'][:10]}; {s['steps']} steps, first "
        f"{s['warmup_steps']} untimed; {rounds} round{'s' if rounds != 1 else ''} after one "
        "warm-up run per side, starting side alternated; fp32; threads per rank = "
        "cores ÷ ranks (at least 1).",
        "",
        f"`{report['command']}`",
        "",
        "| preset | params | ranks × threads | batch × seq per rank | strait tok/s (median) "
        "| PyTorch DDP tok/s (median) | strait/PyTorch (median) | strait/PyTorch (min–max) "
        "| strait bytes sent/step, cross-node / intra-node (measured) "
        "| PyTorch gradient bytes sent/step (computed) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        st, pt = r["sides"]["strait"], r["sides"]["pytorch"]
        sent = st["bytes_sent_per_step_rank0"]
        lines.append(
            f"| {r['preset']} | {tp.format_params(r['params'])} "
            f"| {r['ranks']} × {r['threads_per_rank']} | {s['batch_size']} × {s['seq_len']} "
            f"| {st['tokens_per_s_median']:,.0f} | {pt['tokens_per_s_median']:,.0f} "
            f"| {r['ratio_median']:.2f}× | {r['ratio_min']:.2f}–{r['ratio_max']:.2f}× "
            f"| {format_bytes(sent['cross_node'])} / {format_bytes(sent['intra_node'])} "
            f"| {format_bytes(pt['gradient_bytes_sent_per_step_per_rank_computed'])} |")
    max_diff = max(r["final_loss_abs_diff_max"] for r in report["results"])
    lines += ["", "tok/s are global (all ranks: ranks × batch × seq tokens per step) over the "
              "timed steps, from rank 0's step times. strait's bytes are those rank 0 sent per "
              "step, from its metrics.jsonl (gradient all-reduce plus the 8-byte loss mean). "
              "PyTorch's are computed, not measured: 4 × params × 2(P−1)/P, what a ring "
              "all-reduce of the fp32 gradients sends per rank. The two sides' final losses "
              f"differ by at most {max_diff:.1e}."]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Data-parallel training throughput: strait's DDP vs PyTorch DDP (gloo).")
    parser.add_argument("--strait", required=True, help="the strait binary")
    parser.add_argument("--data", required=True, help="prepared data dir (train_*.bin)")
    parser.add_argument("--preset", default="small", help="strait model preset (default small)")
    parser.add_argument("--ranks", default="2,4",
                        help="comma list of local rank counts, each >= 2 (default 2,4)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds after the warm-up, each running both sides once")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="leading steps left out of the timing (and LR warmup length)")
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="interpreter for torchrun and ddp_ref.py (needs torch)")
    parser.add_argument("--out", default=os.path.join("bench", "out", "ddp.json"))
    args = parser.parse_args(argv)
    try:
        args.rank_list = [int(x) for x in args.ranks.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--ranks must be a comma list of integers, not '{args.ranks}'")
    if not args.rank_list:
        parser.error("--ranks names no rank count")
    if len(set(args.rank_list)) != len(args.rank_list):
        parser.error("--ranks names a count twice")
    if min(args.rank_list) < 2:
        parser.error("every rank count must be at least 2 (strait runs 1 rank without DDP)")
    if min(args.rounds, args.steps, args.batch_size, args.seq_len) < 1:
        parser.error("--rounds, --steps, --batch-size and --seq-len must be >= 1")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error("need 0 <= --warmup-steps < --steps")
    return args


def main(argv):
    args = parse_args(argv)
    machine = tp.machine_info()
    cores = machine["nproc"]
    settings = {"preset": args.preset, "ranks": args.rank_list,
                "threads_per_rank": {p: max(1, cores // p) for p in args.rank_list},
                "rounds": args.rounds, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "batch_size": args.batch_size,
                "seq_len": args.seq_len, "lr": tp.LR, "seed": tp.SEED,
                "precision": PRECISION, "backend": "gloo",
                "data": os.path.abspath(args.data),
                "strait": os.path.abspath(args.strait), "python": args.python}
    report = tp.new_report(machine, settings)
    warn_if_busy("before starting")
    try:
        with tempfile.TemporaryDirectory(prefix="strait-ddp-bench-") as work_dir:
            for ranks in args.rank_list:
                report["results"].append(bench_case(args, ranks, cores, work_dir))
    except BenchError as e:
        print(f"ddp_throughput: {e}", file=sys.stderr)
        return 1
    tp.write_report(report, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
