#!/usr/bin/python3
"""Side-by-side training throughput of strait and the PyTorch reference (train_ref.py).

Usage:
  bench/throughput.py --strait build/strait --data DIR --presets small,base --pairs 5 \
      --steps 30 --warmup-steps 5 --threads 2 --batch-size 8 --seq-len 256 \
      [--precision fp32|bf16-autocast] --out bench/out/throughput.json

For each preset, strait runs once as a discarded warm-up (it also supplies the model
config), then strait and the reference alternate, one process each, `--pairs` times, so
slow drifts of the machine hit both sides alike. Both get the same model dims (the
reference reads the config.json strait wrote), batch, sequence length, steps, threads
and environment. Both sides' tokens/s are computed the same way: tokens of the steps after
the first --warmup-steps, divided by the summed time of those steps (for strait, from the
"tokens" and "step_ms" of its metrics.jsonl). --warmup-steps is also each side's
learning-rate warmup length.

Each pair gives ratio = strait tok/s / PyTorch tok/s; the JSON written to --out holds
every run, the per-preset median/min/max ratio, the machine, date, git commit and this
command line. A markdown table for BENCHMARKS.md is printed on stdout; progress goes to
stderr.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_REF = os.path.join(REPO, "reference", "train_ref.py")
LR = 3e-4
SEED = 1337
STDERR_TAIL_LINES = 40


class BenchError(Exception):
    """A child process failed or broke the protocol; the message says how."""


def progress(message):
    print(message, file=sys.stderr, flush=True)


def run_child(label, command):
    """Runs one benchmark process in the harness's own, unmodified environment."""
    progress(f"{label}: {shlex.join(command)}")
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        raise BenchError(f"{label} could not start: {e}") from None
    if proc.returncode != 0:
        tail_of = proc.stderr if proc.stderr.strip() else proc.stdout
        tail = "\n".join(tail_of.rstrip().splitlines()[-STDERR_TAIL_LINES:])
        raise BenchError(f"{label} failed with exit code {proc.returncode}\n"
                         f"command: {shlex.join(command)}\n"
                         f"--- last lines of its output ---\n{tail}")
    return proc


def read_strait_metrics(path, steps, batch_tokens):
    """strait's per-step records, ordered by step, after checking there is exactly one per
    step and that every step processed the batch it was asked for."""
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"cannot read strait metrics {path}: {e}") from None
    for record in records:
        missing = {"step", "loss", "step_ms", "tokens"} - set(record)
        if missing:
            raise BenchError(f"{path}: a record lacks {sorted(missing)}: {record}")
        if record["tokens"] != batch_tokens:
            raise BenchError(f"{path}: step {record['step']} processed {record['tokens']} "
                             f"tokens, expected batch-size x seq-len = {batch_tokens}")
    records.sort(key=lambda r: r["step"])
    if len(records) != steps or len({r["step"] for r in records}) != steps:
        raise BenchError(f"{path}: expected {steps} distinct steps, found "
                         f"{len(records)} records")
    return records


def strait_run(args, preset, run_dir, label):
    command = [args.strait, "--quiet", "train", "--data", args.data, "--preset", preset,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--threads", str(args.threads),
               "--eval-every", "0", "--checkpoint-every", "0",
               "--warmup-steps", str(args.warmup_steps), "--lr", str(LR),
               "--out", run_dir, "--overwrite"]
    if args.precision is not None:
        command += ["--precision", args.precision]
    run_child(label, command)
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{label}: cannot read its config.json: {e}") from None
    records = read_strait_metrics(os.path.join(run_dir, "metrics.jsonl"), args.steps,
                                  args.batch_size * args.seq_len)
    timed = records[args.warmup_steps:]
    seconds = sum(r["step_ms"] for r in timed) / 1000.0
    return config, {"tokens_per_s": sum(r["tokens"] for r in timed) / seconds,
                    "step_ms_median": statistics.median(r["step_ms"] for r in timed),
                    "final_loss": records[-1]["loss"]}


def reference_run(args, config_path, label):
    command = [args.python, TRAIN_REF, "--config", config_path, "--data", args.data,
               "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
               "--steps", str(args.steps), "--threads", str(args.threads),
               "--lr", str(LR), "--warmup", str(args.warmup_steps), "--seed", str(SEED),
               "--warmup-steps-excluded", str(args.warmup_steps),
               "--precision", args.precision or "fp32"]
    proc = run_child(label, command)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"{label}: last stdout line is not JSON:\n{proc.stdout[-2000:]}") \
            from None
    if result.get("impl") != "pytorch" or "tokens_per_s" not in result:
        raise BenchError(f"{label}: unexpected result {result}")
    return result


def bench_preset(args, preset, work_dir):
    run_dir = os.path.join(work_dir, preset, "strait-run")
    config_path = os.path.join(work_dir, preset, "config.json")
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)

    config, _ = strait_run(args, preset, run_dir, f"[{preset}] warm-up strait")
    # Keep the warm-up's config: the next strait run overwrites its run directory.
    shutil.copyfile(os.path.join(run_dir, "config.json"), config_path)

    pairs = []
    for i in range(1, args.pairs + 1):
        tag = f"[{preset}] pair {i}/{args.pairs}"
        pair_config, strait = strait_run(args, preset, run_dir, f"{tag} strait")
        if pair_config != config:
            raise BenchError(f"{tag}: strait's config.json changed between runs")
        progress(f"{tag} strait: {strait['tokens_per_s']:.0f} tok/s")
        reference = reference_run(args, config_path, f"{tag} pytorch")
        ratio = strait["tokens_per_s"] / reference["tokens_per_s"]
        progress(f"{tag} pytorch: {reference['tokens_per_s']:.0f} tok/s, ratio {ratio:.3f}")
        pairs.append({"strait": strait, "pytorch": reference, "ratio": ratio})

    ratios = [p["ratio"] for p in pairs]
    return {
        "preset": preset,
        "config": config,
        "params": pairs[0]["pytorch"]["params"],
        "pytorch_version": pairs[0]["pytorch"]["torch"],
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "strait_tokens_per_s_median":
            statistics.median(p["strait"]["tokens_per_s"] for p in pairs),
        "pytorch_tokens_per_s_median":
            statistics.median(p["pytorch"]["tokens_per_s"] for p in pairs),
        "strait_final_loss_median":
            statistics.median(p["strait"]["final_loss"] for p in pairs),
        "pytorch_final_loss_median":
            statistics.median(p["pytorch"]["final_loss"] for p in pairs),
        "pairs": pairs,
    }


def machine_info():
    model, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    flags = flags or set()
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "cpu_model": model or platform.processor() or "unknown",
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version()}


def git_state():
    def git(*argv):
        proc = subprocess.run(["git", "-C", REPO, *argv], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None
    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit or "unknown", bool(status)


def format_params(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def markdown(report):
    m, s = report["machine"], report["settings"]
    yes_no = {True: "yes", False: "no"}
    lines = [
        f"{m['cpu_model']}, {m['nproc']} CPUs (avx512f {yes_no[m['avx512f']]}, "
        f"avx512_bf16 {yes_no[m['avx512_bf16']]}); strait {report['git_commit']}"
        f"{' (dirty)' if report['git_dirty'] else ''}; PyTorch "
        f"{report['presets'][0]['pytorch_version']}; {report['date'][:10]}; "
        f"{s['steps']} steps, first {s['warmup_steps']} untimed, {s['pairs']} pairs.",
        "",
        f"`{report['command']}`",
        "",
        "| preset | params | batch × seq | threads | precision | strait tok/s "
        "| PyTorch tok/s | ratio (median) | ratio (min–max) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in report["presets"]:
        lines.append(
            f"| {p['preset']} | {format_params(p['params'])} "
            f"| {s['batch_size']} × {s['seq_len']} | {s['threads']} | {s['precision']} "
            f"| {p['strait_tokens_per_s_median']:,.0f} | {p['pytorch_tokens_per_s_median']:,.0f} "
            f"| {p['ratio_median']:.2f}× | {p['ratio_min']:.2f}–{p['ratio_max']:.2f}× |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Side-by-side training throughput of strait and PyTorch.")
    parser.add_argument("--strait", required=True, help="the strait binary")
    parser.add_argument("--data", required=True, help="prepared data dir (train_*.bin)")
    parser.add_argument("--presets", required=True, help="comma-separated strait presets")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="leading steps left out of the timing (and LR warmup length)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", choices=["fp32", "bf16-autocast"],
                        help="passed to both sides; strait's default (fp32) when omitted")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="interpreter for the reference (needs torch)")
    parser.add_argument("--out", default=os.path.join("bench", "out", "throughput.json"))
    args = parser.parse_args(argv)
    args.preset_list = [p for p in args.presets.split(",") if p]
    if not args.preset_list:
        parser.error("--presets names no preset")
    if min(args.pairs, args.steps, args.threads, args.batch_size, args.seq_len) < 1:
        parser.error("--pairs, --steps, --threads, --batch-size and --seq-len must be >= 1")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error("need 0 <= --warmup-steps < --steps")
    return args


def main(argv):
    args = parse_args(argv)
    commit, dirty = git_state()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": shlex.join(sys.argv),
        "machine": machine_info(),
        "settings": {"presets": args.preset_list, "pairs": args.pairs, "steps": args.steps,
                     "warmup_steps": args.warmup_steps, "threads": args.threads,
                     "batch_size": args.batch_size, "seq_len": args.seq_len,
                     "precision": args.precision or "fp32", "lr": LR,
                     "data": os.path.abspath(args.data)},
        "presets": [],
    }
    # Other work on the machine (a compile, another benchmark) skews multi-threaded runs
    # far more than it skews single-threaded ones, so say so up front.
    busy = report["machine"]["loadavg_at_start"][0]
    if busy >= 0.5:
        progress(f"warning: load average is {busy:.2f} before starting; the machine is "
                 "not idle, so the numbers may be unrepresentative")
    try:
        with tempfile.TemporaryDirectory(prefix="strait-bench-") as work_dir:
            for preset in args.preset_list:
                report["presets"].append(bench_preset(args, preset, work_dir))
    except BenchError as e:
        print(f"throughput: {e}", file=sys.stderr)
        return 1

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    progress(f"wrote {args.out}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
