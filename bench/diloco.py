#!/usr/bin/python3
"""DDP against local SGD, DiLoCo and streaming DiLoCo at equal tokens: the loss each reaches, the
bytes its replicas exchange, and on the shaped-link testbed the wall time each needs to reach
DDP's final validation loss + 3%. Run as root (the testbed phase needs network namespaces).

Usage:
  bench/diloco.py --strait build/strait --data DIR [--preset micro] [--replicas 4]
      [--batch-size 4] [--seq-len 128] [--steps 600] [--lr 2e-3] [--warmup-steps 30]
      [--eval-every 25] [--eval-batches 8] [--links 100mbit,20mbit]
      [--phases quality,testbed] [--work bench/out/diloco-runs] [--out bench/out/diloco.json]
      [--methods M1,M2,...] [--testbed-methods ddp,M1,...] [--testbed-only M1,...]

Every run trains the same model from the same seed on the same data with the same inner
AdamW schedule; every one of the --replicas ranks reads --batch-size x --seq-len tokens per
step, so all methods see the same tokens. The methods (METHODS below) differ only in their
strait options.

quality phase: each method once on loopback, `strait launch --nproc-per-node R -- train ...`
(one host, R ranks = R replicas of one rank; DDP: one replica of R ranks). Per method: final
validation loss, the step at which the validation loss first reaches the target (DDP's final
validation loss x 1.03; validation every --eval-every steps), and bytes per token trained:
"outer" = the bytes every rank sent to other replicas in outer exchanges (summary.json
cross_replica_bytes_sent; for DDP every gradient byte, as each of its ranks is a worker of its
own), and "all" = every byte every rank sent (ledger totals, metrics scalars included).

testbed phase: two targets, "ddp+3%" (above) and "common" = the highest final validation loss
among the --testbed-methods (a loss every one of them reaches), or ddp+3% when that is higher.
For each link rate and each method of --testbed-methods (or of --testbed-only, to run some of
them now and the rest in another invocation), scripts/wan --nodes R --nproc-per-node 1
--link RATE (every replica a node behind its own shaped link) runs the same training with --stop-after S, S = the last of the
steps at which the method's quality run reached the targets, or to the end when it missed one
(the runs are deterministic: the script checks every validation loss against the quality
run's). Time to a target = rank 0's elapsed_s at the step where the quality run reached it
(metrics.jsonl: seconds since training started, rendezvous and start-up excluded). The
kernel's counters give each node's bytes on its link.

Finished runs are kept in --work and not rerun when their command is unchanged, so an
interrupted benchmark continues where it stopped. The JSON written to --out holds every run,
the machine, date, git commit and this command line; a markdown table for BENCHMARKS.md is
printed on stdout; progress goes to stderr.
"""

import argparse
import json
import os
import shlex
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import throughput as tp  # noqa: E402  (run_child, read_json, machine_info, git_state, ...)
from throughput import BenchError, progress  # noqa: E402

WAN = os.path.join(REPO, "scripts", "wan")
TARGET_FACTOR = 1.03

# name -> strait options. H = --sync-every.
METHODS = {
    "ddp": [],
    "local-sgd H=10": ["--strategy", "local-sgd", "--sync-every", "10"],
    "diloco H=10": ["--strategy", "diloco", "--sync-every", "10"],
    "diloco H=50 lr 0.5": ["--strategy", "diloco", "--sync-every", "50", "--outer-lr", "0.5"],
    "diloco H=50": ["--strategy", "diloco", "--sync-every", "50"],
    "diloco H=50 lr 1.0": ["--strategy", "diloco", "--sync-every", "50", "--outer-lr", "1.0"],
    "diloco H=50 lr 1.0 mom 0.5": ["--strategy", "diloco", "--sync-every", "50", "--outer-lr", "1.0",
                                   "--outer-momentum", "0.5"],
    "local-sgd H=50": ["--strategy", "local-sgd", "--sync-every", "50"],
    "diloco H=50 bf16": ["--strategy", "diloco", "--sync-every", "50", "--outer-dtype", "bf16"],
    "diloco H=50 int4": ["--strategy", "diloco", "--sync-every", "50", "--outer-dtype", "int4"],
    "streaming H=50 P=4 tau=5": ["--strategy", "diloco", "--sync-every", "50", "--fragments", "4",
                                 "--overlap-steps", "5", "--fragment-mix", "0.5"],
}
# The outer step that applies a steady pseudo-gradient once (lr / (1 - momentum) = 1) instead of
# the paper's 7 times (lr 0.7, momentum 0.9): what small models and short runs need (BENCHMARKS.md).
ONCE = ["--outer-lr", "0.5", "--outer-momentum", "0.5"]
METHODS.update({
    "diloco H=10 once": METHODS["diloco H=10"] + ONCE,
    "diloco H=10 int4 once": METHODS["diloco H=10"] + ["--outer-dtype", "int4"] + ONCE,
    "diloco H=15 once": ["--strategy", "diloco", "--sync-every", "15"] + ONCE,
    "diloco H=15 int4 once": ["--strategy", "diloco", "--sync-every", "15", "--outer-dtype", "int4"] + ONCE,
    "diloco H=50 once": METHODS["diloco H=50"] + ONCE,
    "diloco H=50 lr 0.7 mom 0.3": METHODS["diloco H=50"] + ["--outer-lr", "0.7", "--outer-momentum", "0.3"],
    "diloco H=50 bf16 once": METHODS["diloco H=50 bf16"] + ONCE,
    "diloco H=50 int4 once": METHODS["diloco H=50 int4"] + ONCE,
    "streaming H=50 P=4 tau=5 once": METHODS["streaming H=50 P=4 tau=5"] + ONCE,
})
TESTBED_METHODS = ["ddp", "diloco H=50", "diloco H=50 int4", "streaming H=50 P=4 tau=5"]


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def train_args(args, method, out):
    return ["--quiet", "train", "--data", args.data, "--out", out, "--overwrite",
            "--preset", args.preset, "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--lr", str(args.lr),
            "--warmup-steps", str(args.warmup_steps), "--eval-every", str(args.eval_every),
            "--eval-batches", str(args.eval_batches), "--checkpoint-every", "0",
            "--threads", "1", "--precision", args.precision, "--seed", str(tp.SEED)] + METHODS[method]


def without_port(command):
    """The command without its --master-port (which only has to be free), for comparing runs."""
    if "--master-port" not in command:
        return command
    i = command.index("--master-port")
    return command[:i] + command[i + 2:]


def run_once(label, command, run_dir):
    """Runs `command` unless run_dir holds a finished run of the same command."""
    stamp = os.path.join(run_dir, "bench-command.json")
    if os.path.exists(stamp) and without_port(tp.read_json(stamp, label)) == without_port(command) and \
            os.path.exists(os.path.join(run_dir, "done")) and \
            os.path.exists(os.path.join(run_dir, "run", "summary.json")):
        progress(f"{label}: finished earlier, kept")
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(stamp, "w") as f:
        json.dump(command, f)
    done = os.path.join(run_dir, "done")
    if os.path.exists(done):
        os.remove(done)
    tp.run_child(label, command)
    open(done, "w").close()


def metrics(run, label):
    path = os.path.join(run, "metrics.jsonl")
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines:
        raise BenchError(f"{label}: {path} is empty")
    return lines


def first_step_at_or_below(lines, target):
    for line in lines:
        if "val_loss" in line and line["val_loss"] <= target:
            return line["step"]
    return None


def quality_run(args, method, port):
    label = f"quality {method}"
    run = os.path.join(args.work, "quality", slug(method), "run")
    command = [args.strait, "launch", "--nproc-per-node", str(args.replicas),
               "--master-port", str(port), "--"] + train_args(args, method, run)
    run_once(label, command, os.path.dirname(run))
    summary = tp.read_json(os.path.join(run, "summary.json"), label)
    lines = metrics(run, label)
    tokens = summary["steps"] * summary["tokens_per_step"]
    sent = sum(r["intra_node"]["sent"] + r["cross_node"]["sent"] for r in summary["traffic_by_rank"])
    outer = summary.get("cross_replica_bytes_sent")
    if method == "ddp":
        gradients = summary["traffic"]["operations"]["allreduce_gradients"]
        outer = args.replicas * (gradients["intra_node"]["sent"] + gradients["cross_node"]["sent"])
    return {
        "method": method, "options": METHODS[method], "run_dir": run,
        "final_val_loss": summary["final_val_loss"], "parameters": summary["parameters"],
        "tokens": tokens, "wall_time_s": summary["wall_time_s"],
        "outer_bytes_per_token": outer / tokens, "all_bytes_per_token": sent / tokens,
        "outer_syncs": summary.get("outer_syncs"),
        "val_curve": [[line["step"], line["val_loss"]] for line in lines if "val_loss" in line],
    }


def testbed_run(args, method, link, quality):
    label = f"testbed {link} {method}"
    run = os.path.join(args.work, "testbed", link, slug(method), "run")
    results = os.path.join(os.path.dirname(run), "testbed.json")
    steps = quality["target_steps"]
    stop = None if None in steps.values() else max(steps.values())
    extra = ["--stop-after", str(stop)] if stop is not None and stop < args.steps else []
    command = [WAN, "--nodes", str(args.replicas), "--nproc-per-node", "1", "--link", link,
               "--strait", args.strait, "--results", results, "--"] + \
        train_args(args, method, run) + extra
    run_once(label, command, os.path.dirname(run))
    lines = metrics(run, label)
    last = lines[-1]
    testbed = tp.read_json(results, label)
    if testbed.get("exit_status") != 0:
        raise BenchError(f"{label}: the testbed run failed ({results})")
    expected = dict((s, v) for s, v in quality["val_curve"])
    for line in lines:
        if "val_loss" in line and expected.get(line["step"]) != line["val_loss"]:
            raise BenchError(f"{label}: validation loss {line['val_loss']} at step {line['step']} "
                             f"differs from the loopback run's {expected.get(line['step'])}")
    elapsed = {line["step"]: line["elapsed_s"] for line in lines}
    busiest = max(max(n["delta"]["tx_bytes"], n["delta"]["rx_bytes"]) for n in testbed["nodes"])
    return {
        "method": method, "link": link, "run_dir": run, "last_step": last["step"],
        "seconds_to": {name: elapsed[step] if step is not None else None
                       for name, step in steps.items()},
        "seconds": last["elapsed_s"], "testbed_wall_s": testbed.get("duration_s"),
        "busiest_node_link_bytes": busiest,
        "seconds_per_step": last["elapsed_s"] / last["step"],
    }


def markdown(report):
    q = report["quality"]
    ddp = q["ddp"]
    targets = report["targets"]
    out = [f"Targets: ddp+3% = DDP's final validation loss x {TARGET_FACTOR} = "
           f"{targets['ddp+3%']:.4f}; common = the highest final validation loss of the testbed "
           f"methods, or ddp+3% if higher = {targets['common']:.4f}.", "",
           "| method | final val loss | vs DDP | step at ddp+3% | outer bytes / token | "
           "vs DDP | all bytes / token |",
           "|---|---|---|---|---|---|---|"]
    for name, r in q.items():
        step = r["target_steps"]["ddp+3%"]
        step = step if step is not None else "not reached"
        out.append(f"| {name} | {r['final_val_loss']:.4f} | "
                   f"{(r['final_val_loss'] / ddp['final_val_loss'] - 1) * 100:+.1f}% | {step} | "
                   f"{r['outer_bytes_per_token']:.1f} | "
                   f"{ddp['outer_bytes_per_token'] / r['outer_bytes_per_token']:.0f}x fewer | "
                   f"{r['all_bytes_per_token']:.1f} |")
    for link, runs in report.get("testbed", {}).items():
        base = runs.get("ddp")
        out += ["", f"Testbed, {report['settings']['replicas']} nodes x 1 rank, {link} per node "
                    "each way:", "",
                "| method | s to ddp+3% | s to common | DDP / method (common) | s per step | "
                "steps run | busiest link (MB) |",
                "|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            to = r["seconds_to"]
            fmt = lambda t: f"{t:.1f}" if t is not None else "not reached"  # noqa: E731
            ratio = f"{base['seconds_to']['common'] / to['common']:.1f}x" \
                if base and None not in (base["seconds_to"]["common"], to["common"]) else "n/a"
            out.append(f"| {name} | {fmt(to['ddp+3%'])} | {fmt(to['common'])} | {ratio} | "
                       f"{r['seconds_per_step']:.3f} | {r['last_step']} | "
                       f"{r['busiest_node_link_bytes'] / 1e6:.1f} |")
    return "\n".join(out)


def add_run_arguments(p):
    """The options of the runs (model, batch, schedule, where they are kept); bench/sparseloco.py
    shares them."""
    p.add_argument("--strait", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", default="micro")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--port", type=int, default=29640)
    p.add_argument("--work", default=os.path.join(BENCH, "out", "diloco-runs"))


def finish_args(p, args, known_phases):
    args.strait = os.path.abspath(args.strait)
    args.data = os.path.abspath(args.data)
    args.work = os.path.abspath(args.work)
    phases = set(args.phases.split(","))
    if not phases <= known_phases:
        p.error(f"--phases: unknown phase in {args.phases}")
    args.phases = phases
    return args


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--links", default="100mbit,20mbit")
    p.add_argument("--phases", default="quality,testbed")
    p.add_argument("--out", default=os.path.join(BENCH, "out", "diloco.json"))
    p.add_argument("--methods", default=",".join(METHODS), help="the methods run on loopback, a subset of METHODS "
                   "that holds every --testbed-methods (they set the targets)")
    p.add_argument("--testbed-methods", default=",".join(TESTBED_METHODS),
                   help="the methods run on the testbed, a subset of METHODS with ddp")
    p.add_argument("--testbed-only", default=None,
                   help="run only these of --testbed-methods on the testbed now (the targets still come "
                        "from all of them), e.g. to run the link-bound DDP beside other runs")
    args = finish_args(p, p.parse_args(argv), {"quality", "testbed"})
    args.methods = method_list(p, "--methods", args.methods, METHODS)
    args.testbed_methods = method_list(p, "--testbed-methods", args.testbed_methods, METHODS)
    args.testbed_only = method_list(p, "--testbed-only", args.testbed_only, METHODS) \
        if args.testbed_only else args.testbed_methods
    if "ddp" not in args.testbed_methods:
        p.error("--testbed-methods must include ddp (its final loss sets the target)")
    if not set(args.testbed_methods) <= set(args.methods):
        p.error("--methods must include every --testbed-methods")
    if not set(args.testbed_only) <= set(args.testbed_methods):
        p.error("--testbed-only must be a subset of --testbed-methods")
    return args


def method_list(p, option, value, known):
    """The comma-separated method names of `option`, each one of `known`, or an argparse error."""
    methods = value.split(",")
    unknown = [m for m in methods if m not in known]
    if unknown:
        p.error(f"{option}: unknown {unknown}; known: {list(known)}")
    return methods


def main(argv):
    args = parse_args(argv)
    report = new_report(args, argv)
    report.update(quality_phase(args, args.methods, args.testbed_methods))
    if "testbed" in args.phases:
        report["testbed"] = testbed_phase(args, args.testbed_only, report["quality"])
    write_report(args, report, markdown)


def quality_phase(args, methods, testbed_methods):
    """Every method on loopback; the targets; the step at which each method reached them."""
    quality = {}
    for i, method in enumerate(methods):
        quality[method] = quality_run(args, method, args.port + i)
        progress(f"quality {method}: final val loss {quality[method]['final_val_loss']:.4f}")
    ddp_target = quality["ddp"]["final_val_loss"] * TARGET_FACTOR
    # A loss every testbed method reaches, for comparing those that miss DDP + 3%; DDP + 3%
    # itself when all of them reach it.
    targets = {"ddp+3%": ddp_target,
               "common": max([ddp_target] + [quality[m]["final_val_loss"] for m in testbed_methods])}
    for r in quality.values():
        curve = [{"step": s, "val_loss": v} for s, v in r["val_curve"]]
        r["target_steps"] = {name: first_step_at_or_below(curve, loss) for name, loss in targets.items()}
    return {"targets": targets, "quality": quality}


def testbed_phase(args, methods, quality, annotate=lambda result, quality_result: None):
    """Every method at every link rate of --links; annotate(result, quality result) may add
    figures to each result."""
    testbed = {}
    for link in args.links.split(","):
        testbed[link] = {}
        for method in methods:
            r = testbed_run(args, method, link, quality[method])
            annotate(r, quality[method])
            testbed[link][method] = r
            progress(f"testbed {link} {method}: {r['seconds']:.1f} s to step {r['last_step']}")
    return testbed


def new_report(args, argv):
    report = {"command": shlex.join([sys.argv[0]] + argv), "machine": tp.machine_info(),
              "git": tp.git_state(), "settings": {k: v for k, v in vars(args).items() if k != "phases"}}
    report["settings"]["phases"] = sorted(args.phases)
    return report


def write_report(args, report, to_markdown):
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(to_markdown(report))


def run(main):
    """Runs main(argv); a BenchError ends the benchmark with its message and status 1."""
    try:
        main(sys.argv[1:])
    except BenchError as error:
        progress(f"error: {error}")
        sys.exit(1)


if __name__ == "__main__":
    run(main)
