#!/usr/bin/python3
"""Training throughput of N sides (strait and/or the PyTorch reference, each at a precision),
run in rotation on the same model, batch and data.

Usage:
  bench/throughput.py --strait build/strait --data DIR --presets small,base \
      --sides strait:bf16-mixed,strait:fp32,pytorch:bf16-autocast [--baseline SIDE] \
      --rounds 5 --steps 30 --warmup-steps 5 --threads 1,2 --batch-size 8 --seq-len 256 \
      --out bench/out/throughput.json

A side is IMPL:PRECISION: strait:fp32, strait:bf16-mixed (strait's --precision, always
passed explicitly since strait's own default is auto), pytorch:fp32 or pytorch:bf16-autocast
(reference/train_ref.py's --precision). Default: strait:fp32,pytorch:fp32.

For each thread count of --threads and each preset: every side runs once as a discarded
warm-up (strait sides first: the first strait run supplies the model config that the
reference reads), then --rounds rounds each run every side once, one process each, the
starting side rotated from round to round (A B C, B C A, C A B, ...) so slow drifts of the
machine hit all sides alike and none always runs first. All sides get the same model dims,
batch, sequence length, steps, threads and environment. Every side's tokens/s is computed
the same way: tokens of the steps after the first --warmup-steps, divided by the summed time
of those steps (for strait, from the "tokens" and "step_ms" of its metrics.jsonl).
--warmup-steps is also each side's learning-rate warmup length.

Each round gives, for every side but the baseline (--baseline, default the last side),
ratio = side tok/s / baseline tok/s. MFU = model FLOPs/s / measured matmul rate, with model
FLOPs per token = 6*(L*(4C^2 + 3CF) + V*C) + 12*L*T*C (strait's formula). A strait side's
MFU comes from its metrics.jsonl "mfu" (its own matmul rate for its precision); a PyTorch
side's uses the same formula divided by the matmul rate (fp32, or bf16 for bf16-autocast)
that the strait run(s) of the same round measured (their median when several; none when
no strait side is benchmarked). The JSON written to --out holds every run, per-side and
per-ratio medians and ranges, the machine, date, git commit and this command line. A
markdown table for BENCHMARKS.md is printed on stdout; progress goes to stderr.
"""

import argparse
import collections
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
BUSY_LOADAVG = 0.5

# IMPL -> {PRECISION: dtype of the matrix products, which picks the matmul rate for MFU}
PRECISIONS = {
    "strait": {"fp32": "fp32", "bf16-mixed": "bf16"},
    "pytorch": {"fp32": "fp32", "bf16-autocast": "bf16"},
}
DEFAULT_SIDES = "strait:fp32,pytorch:fp32"


class BenchError(Exception):
    """A child process failed or broke the protocol; the message says how."""


class Side(collections.namedtuple("Side", "impl precision")):
    """One benchmarked configuration: an implementation at a precision."""
    __slots__ = ()

    @property
    def name(self):
        return f"{self.impl}:{self.precision}"

    @property
    def dtype(self):
        """Dtype of the matrix products, which picks the matmul rate for MFU."""
        return PRECISIONS[self.impl][self.precision]


def parse_side(text):
    impl, sep, precision = text.strip().partition(":")
    if not sep or impl not in PRECISIONS or precision not in PRECISIONS[impl]:
        choices = ", ".join(f"{i}:{p}" for i in PRECISIONS for p in PRECISIONS[i])
        raise ValueError(f"bad side '{text}' (expected one of {choices})")
    return Side(impl, precision)


def progress(message):
    print(message, file=sys.stderr, flush=True)


def warn_if_busy(context):
    """Other work on the machine (a compile, another benchmark) skews multi-threaded runs
    far more than single-threaded ones, so say so."""
    load = os.getloadavg()[0]
    if load >= BUSY_LOADAVG:
        progress(f"warning: load average is {load:.2f} {context}; the machine is not idle, "
                 "so the numbers may be unrepresentative")


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


def read_json(path, label):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{label}: cannot read {os.path.basename(path)}: {e}") from None


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
        if record["step_ms"] <= 0:
            raise BenchError(f"{path}: step {record['step']} has step_ms {record['step_ms']}")
    records.sort(key=lambda r: r["step"])
    if len(records) != steps or len({r["step"] for r in records}) != steps:
        raise BenchError(f"{path}: expected {steps} distinct steps, found "
                         f"{len(records)} records")
    return records


def strait_timing(records, warmup_steps):
    """tokens/s, median step time and final loss of strait's records (read_strait_metrics),
    timing the steps after the first warmup_steps."""
    timed = records[warmup_steps:]
    step_ms = sum(r["step_ms"] for r in timed)
    return {
        "tokens_per_s": sum(r["tokens"] for r in timed) / (step_ms / 1000.0),
        "step_ms_median": statistics.median(r["step_ms"] for r in timed),
        "final_loss": records[-1]["loss"],
    }


def check_fields(actual, expected, what):
    """Raises BenchError "WHAT {wrong fields}, expected {...}" unless actual (a dict) has
    every field of expected with its value."""
    wrong = {k: actual.get(k) for k, v in expected.items() if actual.get(k) != v}
    if wrong:
        raise BenchError(f"{what} {wrong}, expected { {k: expected[k] for k in wrong} }")


def flops_per_token(config, seq_len):
    """strait's training_flops_per_token (src/strait/train/efficiency.cpp) from an HF-style
    config.json: 6 x the parameters used in matrix products + 12 L T C for attention."""
    C, F = config["hidden_size"], config["intermediate_size"]
    L, V = config["num_hidden_layers"], config["vocab_size"]
    return 6.0 * (L * (4 * C * C + 3 * C * F) + V * C) + 12.0 * L * seq_len * C


def strait_run(args, side, preset, threads, run_dir, label):
    command = [args.strait, "--quiet", "train", "--data", args.data, "--preset", preset,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--threads", str(threads),
               "--eval-every", "0", "--eval-batches", "1", "--checkpoint-every", "0",
               "--warmup-steps", str(args.warmup_steps), "--lr", str(LR),
               "--out", run_dir, "--overwrite", "--precision", side.precision]
    loadavg = os.getloadavg()[0]
    run_child(label, command)
    config = read_json(os.path.join(run_dir, "config.json"), label)
    summary = read_json(os.path.join(run_dir, "summary.json"), label)
    if summary.get("precision") != side.precision:
        raise BenchError(f"{label}: asked for precision {side.precision}, summary.json says "
                         f"{summary.get('precision')}")
    records = read_strait_metrics(os.path.join(run_dir, "metrics.jsonl"), args.steps,
                                  args.batch_size * args.seq_len)
    timed = records[args.warmup_steps:]
    step_ms = sum(r["step_ms"] for r in timed)
    # Time-weighted mean of the per-step MFU = timed model FLOPs / timed seconds / rate.
    mfu = (sum(r["mfu"] * r["step_ms"] for r in timed) / step_ms
           if all("mfu" in r for r in timed) else None)
    rates = summary.get("matmul_gflops")
    if rates is not None and not (isinstance(rates, dict) and {"fp32", "bf16"} <= set(rates)):
        raise BenchError(f"{label}: summary.json has unexpected matmul_gflops {rates}")
    return config, {
        "side": side.name,
        **strait_timing(records, args.warmup_steps),
        "mfu": mfu,
        "matmul_gflops": rates,
        "model_flops_per_token": summary.get("model_flops_per_token"),
        "params": summary.get("parameters"),
        "loadavg_1m_before": loadavg,
    }


def reference_run(args, side, config_path, threads, label):
    command = [args.python, TRAIN_REF, "--config", config_path, "--data", args.data,
               "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
               "--steps", str(args.steps), "--threads", str(threads),
               "--lr", str(LR), "--warmup", str(args.warmup_steps), "--seed", str(SEED),
               "--warmup-steps-excluded", str(args.warmup_steps),
               "--precision", side.precision]
    loadavg = os.getloadavg()[0]
    proc = run_child(label, command)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"{label}: last stdout line is not JSON:\n{proc.stdout[-2000:]}") \
            from None
    if not isinstance(result, dict) or result.get("impl") != "pytorch" \
            or "tokens_per_s" not in result:
        raise BenchError(f"{label}: unexpected result {result}")
    expected = {"steps": args.steps, "threads": threads, "precision": side.precision,
                "batch_size": args.batch_size, "seq_len": args.seq_len,
                "warmup_steps_excluded": args.warmup_steps}
    check_fields(result, expected, f"{label}: the reference reports")
    result.update(side=side.name, mfu=None, loadavg_1m_before=loadavg)
    return result


class CaseBase:
    """What a benchmark case of this harness and of ddp_throughput.py shares: the model config
    that strait runs write (kept at DIR/config.json) and the reference reads."""

    def __init__(self, args, threads, case_dir):
        self.args, self.threads, self.dir = args, threads, case_dir
        self.config_path = os.path.join(case_dir, "config.json")
        self.config = None

    def require_config(self, label):
        """The reference reads the model config a strait run wrote; there must be one."""
        if self.config is None:
            raise BenchError(f"{label}: no model config yet (a strait run supplies it)")

    def keep_config(self, config, run_dir, label):
        """Keeps the first strait run's config, and a copy of its config.json at config_path
        (the next run of that side overwrites its run dir); a later run's must be the same.
        Returns whether this was the first."""
        if self.config is None:
            shutil.copyfile(os.path.join(run_dir, "config.json"), self.config_path)
            self.config = config
            return True
        if config != self.config:
            raise BenchError(f"{label}: strait's config.json differs from the first run's")
        return False


class Case(CaseBase):
    """One preset at one thread count: the config it trains and how to run each side."""

    def __init__(self, args, preset, threads, work_dir):
        super().__init__(args, threads, os.path.join(work_dir, f"{preset}-t{threads}"))
        self.preset = preset
        self.strait_flops_per_token = None
        os.makedirs(self.dir, exist_ok=True)

    def run(self, side, label):
        if side.impl == "pytorch":
            self.require_config(label)
            return reference_run(self.args, side, self.config_path, self.threads, label)
        run_dir = os.path.join(self.dir, f"strait-{side.precision}")
        config, result = strait_run(self.args, side, self.preset, self.threads, run_dir,
                                    label)
        if self.keep_config(config, run_dir, label):
            self.strait_flops_per_token = result["model_flops_per_token"]
        return result


def describe(result):
    mfu = "" if result["mfu"] is None else f", MFU {100 * result['mfu']:.1f}%"
    return f"{result['tokens_per_s']:.0f} tok/s{mfu}"


def side_summary(runs, **fields):
    """One side's summary over its runs of the rounds: fields first, then the median and range
    of tokens/s, the median step time, the median MFU (None unless every run has one; only
    where the runs carry an "mfu") and the median final loss."""
    tps = [x["tokens_per_s"] for x in runs]
    entry = dict(fields)
    entry.update({
        "tokens_per_s_median": statistics.median(tps),
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "step_ms_median": statistics.median(x["step_ms_median"] for x in runs),
    })
    if all("mfu" in x for x in runs):
        mfus = [x["mfu"] for x in runs]
        entry["mfu_median"] = None if None in mfus else statistics.median(mfus)
    entry["final_loss_median"] = statistics.median(x["final_loss"] for x in runs)
    return entry


def bench_case(args, preset, threads, work_dir):
    sides, baseline = args.side_list, args.baseline_side
    case = Case(args, preset, threads, work_dir)
    where = f"[{preset} t{threads}]"
    warn_if_busy(f"before {where}")

    warmups = {}
    if not any(s.impl == "strait" for s in sides):
        # Only the reference is benchmarked: one untimed strait run supplies the config.
        result = case.run(Side("strait", "fp32"), f"{where} config (strait:fp32)")
        warmups["strait:fp32 (config)"] = result
    for side in sorted(sides, key=lambda s: s.impl != "strait"):
        result = case.run(side, f"{where} warm-up {side.name}")
        warmups[side.name] = result
        progress(f"{where} warm-up {side.name}: {describe(result)}")

    fpt = flops_per_token(case.config, args.seq_len)
    if case.strait_flops_per_token is not None and \
            abs(fpt - case.strait_flops_per_token) > 1e-9 * fpt:
        raise BenchError(f"{where}: this harness counts {fpt:.0f} model FLOPs per token, "
                         f"strait {case.strait_flops_per_token:.0f}; the formulas drifted")

    rounds = []
    n = len(sides)
    for r in range(args.rounds):
        order = [sides[(r + k) % n] for k in range(n)]
        tag = f"{where} round {r + 1}/{args.rounds}"
        runs = {}
        for side in order:
            runs[side.name] = case.run(side, f"{tag} {side.name}")
            progress(f"{tag} {side.name}: {describe(runs[side.name])}")
        # PyTorch MFU against the matmul rates strait measured in this same round.
        strait_rates = [runs[s.name]["matmul_gflops"] for s in sides
                        if s.impl == "strait" and runs[s.name]["matmul_gflops"]]
        rates = ({d: statistics.median(x[d] for x in strait_rates) for d in ("fp32", "bf16")}
                 if strait_rates else None)
        for side in sides:
            if side.impl == "pytorch" and rates:
                result = runs[side.name]
                result["mfu"] = fpt * result["tokens_per_s"] / (rates[side.dtype] * 1e9)
                result["mfu_rate_gflops"] = rates[side.dtype]
                progress(f"{tag} {side.name}: MFU {100 * result['mfu']:.1f}% (against "
                         f"the {side.dtype} matmul rate strait measured this round, "
                         f"{rates[side.dtype]:.0f} GFLOP/s)")
        base = runs[baseline.name]["tokens_per_s"]
        ratios = {s.name: runs[s.name]["tokens_per_s"] / base for s in sides if s != baseline}
        if ratios:
            progress(f"{tag} vs {baseline.name}: " +
                     ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        rounds.append({"order": [s.name for s in order], "runs": runs, "ratios": ratios,
                       "matmul_gflops_for_pytorch": rates})

    summary = {}
    for side in sides:
        entry = side_summary([rd["runs"][side.name] for rd in rounds],
                             impl=side.impl, precision=side.precision)
        if side != baseline:
            ratios = [rd["ratios"][side.name] for rd in rounds]
            entry.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                         ratio_max=max(ratios))
        summary[side.name] = entry

    params = next((w["params"] for w in warmups.values() if w.get("params")), None)
    torch_version = next((w["torch"] for w in warmups.values() if "torch" in w), None)
    return {
        "preset": preset,
        "threads": threads,
        "config": case.config,
        "params": params,
        "model_flops_per_token": fpt,
        "pytorch_version": torch_version,
        "sides": summary,
        "warmup": warmups,
        "rounds": rounds,
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
            "amx_bf16": "amx_bf16" in flags,
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version()}


def git_state():
    def git(*argv):
        proc = subprocess.run(["git", "-C", REPO, *argv], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None
    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit or "unknown", bool(status)


def new_report(machine, settings):
    """The report's head (date, git commit, this command line, machine_info(), settings),
    with an empty "results" list to fill."""
    commit, dirty = git_state()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": shlex.join(sys.argv),
        "machine": machine,
        "settings": settings,
        "results": [],
    }


def write_report(report, out_path, to_markdown):
    """Notes the load average at the end, writes the report as JSON to out_path (making its
    folder) and prints to_markdown(report) on stdout."""
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    progress(f"wrote {out_path}")
    print(to_markdown(report))


def format_params(n):
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def markdown(report):
    m, s = report["machine"], report["settings"]
    yes_no = {True: "yes", False: "no"}
    torch_versions = sorted({r["pytorch_version"] for r in report["results"]
                             if r["pytorch_version"]})
    torch_text = f"; PyTorch {', '.join(torch_versions)}" if torch_versions else ""
    lines = [
        f"{m['cpu_model']}, {m['nproc']} CPUs (avx512f {yes_no[m['avx512f']]}, "
        f"avx512_bf16 {yes_no[m['avx512_bf16']]}, amx_bf16 {yes_no[m['amx_bf16']]}); "
        f"strait {report['git_commit']}{' (dirty)' if report['git_dirty'] else ''}"
        f"{torch_text}; {report['date'][:10]}; {s['steps']} steps, first "
        f"{s['warmup_steps']} untimed; {s['rounds']} round{'s' if s['rounds'] != 1 else ''} "
        f"of {len(s['sides'])} side{'s' if len(s['sides']) != 1 else ''} after one "
        f"warm-up run each, starting side rotated; ratios vs {s['baseline']}.",
        "",
        f"`{report['command']}`",
        "",
        "| preset | params | batch × seq | threads | side | tok/s (median) | MFU (median) "
        f"| vs {s['baseline']} (median) | vs {s['baseline']} (min–max) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        for name, e in r["sides"].items():
            mfu = "n/a" if e["mfu_median"] is None else f"{100 * e['mfu_median']:.1f}%"
            if "ratio_median" in e:
                ratio = f"{e['ratio_median']:.2f}×"
                spread = f"{e['ratio_min']:.2f}–{e['ratio_max']:.2f}×"
            else:
                ratio, spread = "1.00× (baseline)", "—"
            lines.append(
                f"| {r['preset']} | {format_params(r['params'])} "
                f"| {s['batch_size']} × {s['seq_len']} | {r['threads']} | {name} "
                f"| {e['tokens_per_s_median']:,.0f} | {mfu} | {ratio} | {spread} |")
    note = ("MFU = model FLOPs/s (6·(L·(4C²+3CF) + V·C) + 12·L·T·C per token) ÷ strait's "
            "best 1024² matmul rate (over ~0.2 s at start-up) at the same thread count for the side's dtype (fp32; "
            "bf16 for bf16-mixed and bf16-autocast). strait sides use their own run's rate.")
    if len(s["sides"]) > s["strait_sides"]:
        if s["strait_sides"] == 0:
            note += " No strait side was benchmarked, so PyTorch MFU is n/a."
        else:
            note += (" PyTorch sides use the rate measured by the strait run"
                     + (("s of the same round (their median).") if s["strait_sides"] > 1
                        else " of the same round."))
    lines += ["", note]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Training throughput of strait and PyTorch sides, run in rotation.")
    parser.add_argument("--strait", required=True, help="the strait binary")
    parser.add_argument("--data", required=True, help="prepared data dir (train_*.bin)")
    parser.add_argument("--presets", required=True, help="comma-separated strait presets")
    parser.add_argument("--sides", default=DEFAULT_SIDES,
                        help="comma-separated IMPL:PRECISION sides: strait:fp32, "
                             "strait:bf16-mixed, pytorch:fp32, pytorch:bf16-autocast "
                             f"(default {DEFAULT_SIDES})")
    parser.add_argument("--baseline", help="side the ratios divide by (default: the last)")
    parser.add_argument("--rounds", type=int,
                        help="rounds, each running every side once (default 5)")
    parser.add_argument("--pairs", type=int, dest="pairs_deprecated", metavar="ROUNDS",
                        help="deprecated alias of --rounds")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="leading steps left out of the timing (and LR warmup length)")
    parser.add_argument("--threads", default="2",
                        help="thread count, or a comma list (e.g. 1,2) to repeat the "
                             "whole comparison per count (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="interpreter for the reference (needs torch)")
    parser.add_argument("--out", default=os.path.join("bench", "out", "throughput.json"))
    args = parser.parse_args(argv)

    if args.precision is not None:
        parser.error("--precision was removed: give each side's precision in --sides, "
                     "e.g. --sides strait:bf16-mixed,pytorch:bf16-autocast")
    if args.pairs_deprecated is not None:
        if args.rounds is not None:
            parser.error("give --rounds or its deprecated alias --pairs, not both")
        progress("warning: --pairs is deprecated; use --rounds")
        args.rounds = args.pairs_deprecated
    if args.rounds is None:
        args.rounds = 5

    args.preset_list = [p for p in args.presets.split(",") if p]
    if not args.preset_list:
        parser.error("--presets names no preset")
    if len(set(args.preset_list)) != len(args.preset_list):
        parser.error("--presets names a preset twice")
    try:
        args.side_list = [parse_side(t) for t in args.sides.split(",") if t.strip()]
        args.baseline_side = (parse_side(args.baseline) if args.baseline is not None
                              else (args.side_list or [None])[-1])
    except ValueError as e:
        parser.error(str(e))
    if not args.side_list:
        parser.error("--sides names no side")
    if len(set(args.side_list)) != len(args.side_list):
        parser.error("--sides names a side twice")
    if args.baseline_side not in args.side_list:
        parser.error(f"--baseline {args.baseline_side.name} is not one of --sides")
    try:
        args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be an integer or a comma list of them, not "
                     f"'{args.threads}'")
    if not args.thread_list:
        parser.error("--threads names no thread count")
    if len(set(args.thread_list)) != len(args.thread_list):
        parser.error("--threads names a count twice")
    if min(args.rounds, args.steps, args.batch_size, args.seq_len, *args.thread_list) < 1:
        parser.error("--rounds, --steps, --threads, --batch-size and --seq-len must be >= 1")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error("need 0 <= --warmup-steps < --steps")
    return args


def main(argv):
    args = parse_args(argv)
    settings = {"presets": args.preset_list,
                "sides": [s.name for s in args.side_list],
                "baseline": args.baseline_side.name,
                "strait_sides": sum(s.impl == "strait" for s in args.side_list),
                "rounds": args.rounds, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "threads": args.thread_list,
                "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": LR,
                "seed": SEED, "data": os.path.abspath(args.data),
                "strait": os.path.abspath(args.strait), "python": args.python}
    report = new_report(machine_info(), settings)
    warn_if_busy("before starting")
    nproc = report["machine"]["nproc"]
    for threads in args.thread_list:
        if threads > nproc:
            progress(f"warning: --threads {threads} exceeds the {nproc} CPUs this process "
                     "may use; those runs oversubscribe the cores")
    try:
        with tempfile.TemporaryDirectory(prefix="strait-bench-") as work_dir:
            for threads in args.thread_list:
                for preset in args.preset_list:
                    report["results"].append(bench_case(args, preset, threads, work_dir))
    except BenchError as e:
        print(f"throughput: {e}", file=sys.stderr)
        return 1
    write_report(report, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
