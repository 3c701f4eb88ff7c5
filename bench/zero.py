#!/usr/bin/python3
"""ZeRO-3 and ZeRO++ against DDP: peak memory per rank on one node, step time and cross-node bytes
on the shaped-link testbed, and validation loss at equal steps. Run as root (the testbed phases
use scripts/wan).

Usage:
  bench/zero.py --strait build/strait --data data/brown-byte [--phases memory,step,quality]
      [--memory-rounds 2] [--step-rounds 3] [--links 100mbit,20mbit]
      [--work bench/out/zero/runs] [--out bench/out/zero/zero.json]

memory phase: `strait launch --nproc-per-node 4` on one node, no shaping, --preset base, fp32,
batch 2 x 128 per rank, 4 steps, threads 1, --eval-every 0 --eval-batches 1 --checkpoint-every 0
(the last step is still checkpointed: DDP's rank 0 writes the whole model, ZeRO's ranks their
shards). MEMORY_METHODS (DDP, ZeRO-3 with an fp32 wire, ZeRO++ on one node: qwZ + hpZ k=4 +
qgZ, which falls back to the reduce-scatter on one node) run --memory-rounds times, the order
rotating each round. Per run: every rank's peak_resident_bytes (summary.json traffic_by_rank;
getrusage's maximum resident set, so a high-water mark over the whole process, start-up
included). One extra run of DDP on --preset nano --context-length 128 (0.1M parameters) gives the floor of a rank
that holds almost no model (LibTorch, Gloo, data, the start-up matmul probe). Beside each
figure: the model-state arithmetic, DDP = 16 bytes/param (fp32 weights, gradients, 2 AdamW
moments) + 4 bytes/param of fp32 all-reduce buckets; ZeRO-3 = 16/N bytes/param + the units in
flight (a gathered fp32 unit being used, the next one prefetched, and in backward a full
fp32 gradient of the unit before its reduce-scatter: 3 x the largest unit x 4 bytes).

step phase: scripts/wan --nodes 2 --nproc-per-node 2 --link RATE, --preset micro, bf16-mixed,
batch 4 x 128 per rank, 12 steps (2 untimed: --warmup-steps 2), threads 1, STEP_METHODS. Each
of --step-rounds rounds runs every link of --links and, per link, every method, the order of
the methods rotating each round. Per run: the median of rank 0's step_ms over the timed steps;
cross-node bytes per step per node = the sum of node 0's ranks' traffic_by_rank cross_node.sent
/ steps (ledger) and node 0's interface tx_bytes / steps (kernel, testbed.json); both include
the start-up (DDP's weight broadcast) and the final one-batch validation. "steps only" = the
ledger figure x the steps' share of rank 0's cross-node bytes (its metrics.jsonl per-step traffic
against its summary totals; sent bytes for DDP, whose ranks send alike; sent + received for
ZeRO, whose ring has rank 1 send what rank 0 receives). link term = the steps-only bytes per step x 8 / rate.
For hpZ runs: zero_hpz_secondary_wait_s (rank 0's summary) / the run's summed step_ms. Per
round the ratio of each method's step time to ZeRO-3's (bf16 wire) at the same link; the
report gives its median and min-max over the rounds.

quality phase: scripts/wan --nodes 2 --nproc-per-node 2 --link 1gbit, --preset micro,
bf16-mixed, batch 4 x 128 per rank, --steps 200 --lr 2e-3 --warmup-steps 20 --eval-every 50
--eval-batches 8, QUALITY_METHODS, once each: final validation loss and its difference from
ZeRO-3's.

Finished runs are kept in --work and not rerun when their command is unchanged (bench/diloco.py's
run_once), so an interrupted benchmark continues where it stopped and --step-rounds can be
raised later. The JSON at --out holds every run, the machine, date, git commit and this command
line; markdown tables for BENCHMARKS.md go to stdout; progress to stderr.
"""

import argparse
import hashlib
import os
import statistics
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import diloco  # noqa: E402  (run_once, metrics, new_report, write_report, run)
import throughput as tp  # noqa: E402  (run_child, read_json, read_strait_metrics, ...)
from ddp_throughput import free_port  # noqa: E402
from throughput import BenchError, progress  # noqa: E402

WAN = os.path.join(REPO, "scripts", "wan")
ZERO = ["--strategy", "zero3"]
BF16 = ZERO + ["--zero-wire-dtype", "bf16"]
QWZ = ["--zero-quantized-weights"]
QGZ = ["--zero-quantized-gradients"]


def hpz(k):
    return ["--zero-hpz-partition-size", str(k)]


MEMORY_METHODS = {
    "ddp": ["--strategy", "ddp"],
    "zero3 fp32": ZERO,
    "zero++ 1 node (qwZ+hpZ k=4)": ZERO + QWZ + hpz(4) + QGZ,
}
STEP_METHODS = {
    "ddp": ["--strategy", "ddp"],
    "zero3 bf16": BF16,
    "+qwZ": BF16 + QWZ,
    "+hpZ": BF16 + hpz(2),
    "+qgZ": BF16 + QGZ,
    "+hpZ+qwZ": BF16 + hpz(2) + QWZ,
    "zero++ (hpZ+qwZ+qgZ)": BF16 + hpz(2) + QWZ + QGZ,
}
QUALITY_METHODS = {
    "zero3 bf16": BF16,
    "+qwZ": BF16 + QWZ,
    "+qgZ": BF16 + QGZ,
    "zero++ (hpZ+qwZ+qgZ)": BF16 + hpz(2) + QWZ + QGZ,
}
BASELINE = "zero3 bf16"
NODES, PER_NODE = 2, 2


def common(data, out, preset, batch, seq, steps, precision):
    return ["--quiet", "train", "--data", data, "--out", out, "--overwrite", "--preset", preset,
            "--batch-size", str(batch), "--seq-len", str(seq), "--steps", str(steps),
            "--threads", "1", "--precision", precision, "--seed", str(tp.SEED),
            "--checkpoint-every", "0"]


def rotated(items, r):
    items = list(items)
    r %= len(items)
    return items[r:] + items[:r]


def run_dir(args, *parts):
    return os.path.join(args.work, *[diloco.slug(p) for p in parts], "run")


def peaks(summary, label):
    by_rank = summary.get("traffic_by_rank") or []
    values = [r.get("peak_resident_bytes") for r in by_rank]
    if not values or None in values:
        raise BenchError(f"{label}: summary.json lacks traffic_by_rank[].peak_resident_bytes")
    return values


# ---------------------------------------------------------------- memory


def memory_run(args, name, options, preset, tag):
    label = f"memory {tag} {name}"
    run = run_dir(args, "memory", tag, name)
    command = [args.strait, "launch", "--nproc-per-node", "4", "--master-port", str(free_port()),
               "--"] + common(args.data, run, preset, 2, 128, 4, "fp32") + \
        ["--eval-every", "0", "--eval-batches", "1", "--warmup-steps", "1"] + options
    diloco.run_once(label, command, os.path.dirname(run))
    summary = tp.read_json(os.path.join(run, "summary.json"), label)
    tp.check_fields(summary, {"world_size": 4, "precision": "fp32", "steps": 4}, label)
    p = peaks(summary, label)
    progress(f"{label}: peak resident per rank (MB) {[round(v / 1e6) for v in p]}")
    return {"method": name, "options": options, "preset": preset, "run_dir": run, "peaks": p,
            "max": max(p), "mean": statistics.mean(p), "parameters": summary["parameters"],
            "wall_time_s": summary["wall_time_s"], "command": command,
            "zero": {k: v for k, v in summary.items() if k.startswith("zero")}}


def unit_sizes(config):
    c, f = config["hidden_size"], config["intermediate_size"]
    v, layers = config["vocab_size"], config["num_hidden_layers"]
    layer = 4 * c * c + 3 * c * f + 2 * c
    head = c + (0 if config.get("tie_word_embeddings") else v * c)
    return {"embedding": v * c, "layer": layer, "layers": layers, "head": head}


def memory_phase(args):
    floor = memory_run(args, "ddp", MEMORY_METHODS["ddp"] + ["--context-length", "128"], "nano",
                       "floor")
    rounds = []
    for r in range(args.memory_rounds):
        rounds.append({name: memory_run(args, name, MEMORY_METHODS[name], "base", f"round{r + 1}")
                       for name in rotated(MEMORY_METHODS, r)})
    config = tp.read_json(os.path.join(rounds[0]["ddp"]["run_dir"], "config.json"), "memory")
    params = rounds[0]["ddp"]["parameters"]
    units = unit_sizes(config)
    largest = max(units["embedding"], units["layer"], units["head"])
    state = {"ddp": 20 * params, "zero3": 16 * params / 4 + 3 * 4 * largest}
    return {"floor": floor, "rounds": rounds, "parameters": params, "units": units,
            "state_arithmetic": state}


# ---------------------------------------------------------------- step time


def step_run(args, name, link, tag):
    label = f"step {tag} {link} {name}"
    run = run_dir(args, "step", tag, link, name)
    results = os.path.join(os.path.dirname(run), "testbed.json")
    steps, warmup = args.step_steps, 2
    command = [WAN, "--nodes", str(NODES), "--nproc-per-node", str(PER_NODE), "--link", link,
               "--strait", args.strait, "--results", results, "--"] + \
        common(args.data, run, "micro", 4, 128, steps, args.precision) + \
        ["--eval-every", "0", "--eval-batches", "1", "--warmup-steps", str(warmup)] + \
        STEP_METHODS[name]
    diloco.run_once(label, command, os.path.dirname(run))
    summary = tp.read_json(os.path.join(run, "summary.json"), label)
    tp.check_fields(summary, {"world_size": NODES * PER_NODE, "precision": args.precision,
                              "nodes": NODES}, label)
    records = tp.read_strait_metrics(os.path.join(run, "metrics.jsonl"), steps,
                                     NODES * PER_NODE * 4 * 128)
    testbed = tp.read_json(results, label)
    if testbed.get("exit_status") != 0:
        raise BenchError(f"{label}: the testbed run failed ({results})")
    by_rank = summary["traffic_by_rank"]
    ledger = sum(by_rank[k]["cross_node"]["sent"] for k in range(PER_NODE))
    kernel = testbed["nodes"][0]["delta"]["tx_bytes"]
    # The steps' share of the run's bytes, from rank 0's per-step ledger (metrics.jsonl) against
    # its totals: it leaves out the start-up (DDP's weight broadcast) and the final validation.
    # Rank 0's sent bytes where it sends its share (DDP: the node's ranks send alike); its sent +
    # received where it sends next to nothing (ZeRO's ring: rank 1 sends what rank 0 receives).
    rank0 = by_rank[0]["cross_node"]
    directions = ("sent",) if rank0["sent"] > 0.1 * ledger else ("sent", "received")
    rank0_steps = sum(r["traffic"]["cross_node"][d] for r in records for d in directions)
    share = rank0_steps / sum(rank0[d] for d in directions)
    timed = records[warmup:]
    step_ms = statistics.median(r["step_ms"] for r in timed)
    total_step_s = sum(r["step_ms"] for r in records) / 1000.0
    link_ms = ledger * share / steps * 8 / testbed["link_bits_per_s"] * 1000
    result = {
        "method": name, "link": link, "round": tag, "run_dir": run, "command": command,
        "step_ms_median": step_ms,
        "forward_ms_median": statistics.median(r["forward_ms"] for r in timed),
        "backward_ms_median": statistics.median(r["backward_ms"] for r in timed),
        "update_ms_median": statistics.median(r["update_ms"] for r in timed),
        "comm_blocked_ms_median": statistics.median(r.get("comm_blocked_ms", 0) for r in timed),
        "ledger_node0_sent_per_step": ledger / steps,
        "kernel_node0_tx_per_step": kernel / steps,
        "steps_share": share,
        "ledger_node0_sent_per_step_steps_only": ledger * share / steps,
        "tcp_retrans_segs": [n["delta"]["tcp_retrans_segs"] for n in testbed["nodes"]],
        "tbf_dropped": [n.get("tbf_dropped") for n in testbed["nodes"]],
        "link_ms": link_ms, "total_step_s": total_step_s,
        "final_loss": records[-1]["loss"], "wall_s": testbed.get("duration_s"),
        "zero": {k: v for k, v in summary.items() if k.startswith("zero")},
        "operations": {op: v["cross_node"] for op, v in
                       summary["traffic"]["operations"].items()},
    }
    wait = summary.get("zero_hpz_secondary_wait_s")
    if wait is not None and summary.get("zero_hpz_partition_size", 1) > 1:
        result["hpz_wait_fraction"] = wait / total_step_s
    progress(f"{label}: step {step_ms:.0f} ms, node 0 sent {ledger / steps / 1e6:.2f} MB/step "
             f"(ledger), {kernel / steps / 1e6:.2f} MB/step (kernel), link {link_ms:.0f} ms")
    return result


def step_phase(args):
    links = args.links.split(",")
    rounds = []
    for r in range(args.step_rounds):
        runs = {}
        for link in (links if r % 2 == 0 else links[::-1]):
            runs[link] = {name: step_run(args, name, link, f"round{r + 1}")
                          for name in rotated(STEP_METHODS, r)}
            base = runs[link][BASELINE]["step_ms_median"]
            for result in runs[link].values():
                result["ratio_to_zero3"] = result["step_ms_median"] / base
        rounds.append(runs)
    return {"links": links, "rounds": rounds}


# ---------------------------------------------------------------- quality


def quality_run(args, name):
    label = f"quality {name}"
    run = run_dir(args, "quality", name)
    results = os.path.join(os.path.dirname(run), "testbed.json")
    command = [WAN, "--nodes", str(NODES), "--nproc-per-node", str(PER_NODE), "--link",
               args.quality_link, "--strait", args.strait, "--results", results, "--"] + \
        common(args.data, run, "micro", 4, 128, args.quality_steps, args.precision) + \
        ["--lr", "2e-3", "--warmup-steps", "20", "--eval-every", "50", "--eval-batches", "8"] + \
        QUALITY_METHODS[name]
    diloco.run_once(label, command, os.path.dirname(run))
    summary = tp.read_json(os.path.join(run, "summary.json"), label)
    lines = diloco.metrics(run, label)
    progress(f"{label}: final validation loss {summary['final_val_loss']:.4f}")
    return {"method": name, "run_dir": run, "command": command,
            "final_val_loss": summary["final_val_loss"], "final_loss": summary["final_loss"],
            "wall_time_s": summary["wall_time_s"],
            "cross_node_bytes_sent_per_rank_per_step":
                summary.get("cross_node_bytes_sent_per_rank_per_step"),
            "val_curve": [[x["step"], x["val_loss"]] for x in lines if "val_loss" in x]}


def quality_phase(args):
    return {name: quality_run(args, name) for name in QUALITY_METHODS}


# ---------------------------------------------------------------- report


def mb(n):
    return f"{n / 1e6:.0f}"


def med_range(values, fmt="{:.2f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–" \
           f"{fmt.format(max(values))})"


def markdown(report):
    out = []
    if "memory" in report:
        m = report["memory"]
        rounds = m["rounds"]
        params = m["parameters"]
        ddp_mean = statistics.median(r["ddp"]["mean"] for r in rounds)
        out += [f"Memory: 4 ranks on one node, base preset ({params / 1e6:.2f}M parameters), "
                f"fp32. Floor (DDP, nano preset): per rank "
                f"{', '.join(mb(v) for v in m['floor']['peaks'])} MB.", "",
                "| method | round | peak resident per rank (MB) | max | mean | mean / DDP's "
                "| model state (arithmetic, MB) |", "|---|---|---|---|---|---|---|"]
        for i, rnd in enumerate(rounds):
            for name, r in rnd.items():
                state = m["state_arithmetic"]["ddp" if name == "ddp" else "zero3"]
                out.append(f"| {name} | {i + 1} | {', '.join(mb(v) for v in r['peaks'])} | "
                           f"{mb(r['max'])} | {mb(r['mean'])} | {r['mean'] / ddp_mean:.2f} | "
                           f"{mb(state)} |")
        out.append("")
    if "step" in report:
        s = report["step"]
        for link in s["links"]:
            runs = [rnd[link] for rnd in s["rounds"]]
            out += [f"Step time, 2 nodes x 2 ranks, {link} per node each way "
                    f"({len(runs)} rounds):", "",
                    "| method | step (ms), median of rounds (min–max) | / ZeRO-3 | node 0 sent "
                    "per step, ledger (MB) | kernel tx (MB) | steps only (MB) | link term (ms) | "
                    "hpZ wait / step time |", "|---|---|---|---|---|---|---|---|"]
            for name in STEP_METHODS:
                rs = [rnd[name] for rnd in runs]
                waits = [r["hpz_wait_fraction"] for r in rs if "hpz_wait_fraction" in r]
                wait = med_range([100 * w for w in waits], "{:.2f}%") if waits else "–"
                out.append(
                    f"| {name} | {med_range([r['step_ms_median'] for r in rs], '{:.0f}')} | "
                    f"{med_range([r['ratio_to_zero3'] for r in rs])} | "
                    f"{statistics.median(r['ledger_node0_sent_per_step'] for r in rs) / 1e6:.2f} | "
                    f"{statistics.median(r['kernel_node0_tx_per_step'] for r in rs) / 1e6:.2f} | "
                    f"{statistics.median(r['ledger_node0_sent_per_step_steps_only'] for r in rs) / 1e6:.2f} | "
                    f"{statistics.median(r['link_ms'] for r in rs):.0f} | {wait} |")
            out.append("")
    if "quality" in report:
        q = report["quality"]
        base = q[BASELINE]["final_val_loss"]
        out += ["Validation loss at equal steps (2 nodes x 2 ranks, 1gbit):", "",
                "| method | final val loss | vs ZeRO-3 | curve (step: val loss) |",
                "|---|---|---|---|"]
        for name, r in q.items():
            curve = ", ".join(f"{s}: {v:.3f}" for s, v in r["val_curve"])
            out.append(f"| {name} | {r['final_val_loss']:.4f} | "
                       f"{(r['final_val_loss'] / base - 1) * 100:+.2f}% | {curve} |")
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strait", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--phases", default="memory,step,quality")
    p.add_argument("--memory-rounds", type=int, default=2)
    p.add_argument("--step-rounds", type=int, default=3)
    p.add_argument("--step-steps", type=int, default=12)
    p.add_argument("--links", default="100mbit,20mbit")
    p.add_argument("--quality-steps", type=int, default=200)
    p.add_argument("--quality-link", default="1gbit")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--work", default=os.path.join(BENCH, "out", "zero", "runs"))
    p.add_argument("--out", default=os.path.join(BENCH, "out", "zero", "zero.json"))
    args = p.parse_args(argv)
    return diloco.finish_args(p, args, {"memory", "step", "quality"})


def main(argv):
    args = parse_args(argv)
    report = diloco.new_report(args, argv)
    with open(args.strait, "rb") as f:
        report["strait_sha256"] = hashlib.sha256(f.read()).hexdigest()
    tp.warn_if_busy("at the start")
    if "memory" in args.phases:
        report["memory"] = memory_phase(args)
    if "step" in args.phases:
        report["step"] = step_phase(args)
    if "quality" in args.phases:
        report["quality"] = quality_phase(args)
    diloco.write_report(args, report, markdown)


if __name__ == "__main__":
    diloco.run(main)
