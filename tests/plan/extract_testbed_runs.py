#!/usr/bin/env python3
"""Extracts the few measured figures of strait's recorded testbed runs that test_plan.cpp checks
`strait plan` against, into tests/plan/testbed_runs.json (checked in; the runs themselves live in
the gitignored bench/out/).

The runs were produced by (BENCHMARKS.md, sections of issues 9, 10 and 11):
    bench/wan_ddp.py --strait build/strait --data data/brown-byte --rounds 5 --out bench/out/wan_ddp.json
    bench/diloco.py --strait build/strait --data data/brown-byte --out bench/out/diloco.json
    bench/sparseloco.py --strait build/strait --data data/brown-byte --out bench/out/sparseloco.json
    bench/sparseloco.py ... --steps 1200 --work bench/out/sparseloco-1200-runs ... (and --steps 2400)
    the ~5M-parameter runs of "Time to DDP + 3% at ~5M parameters" (bench/out/small-2400-runs)
each testbed run being `scripts/wan --nodes N --nproc-per-node K --link RATE -- train ...` (its exact
command is kept as `command` below).

The step compute time is measured in each run the way `strait plan --measured RUN_DIR` does
(src/strait/plan/plan.cpp, read_measured_run): the median step_ms of the steps that sent nothing
across nodes, else the median forward_ms + backward_ms; so is SparseLoCo's codec time per
parameter (the median over the syncs of codec_ms per value coded, from runs that record it).
The measured time to compare with is the training steps' time, the sum of step_ms (evaluation
every 25 steps is not training and is left out; `elapsed_s` has it too).

Usage: python3 tests/plan/extract_testbed_runs.py [--bench-out bench/out] [--out tests/plan/testbed_runs.json]
"""
import argparse
import glob
import json
import os
import statistics


def measured_compute_s(lines):
    quiet = [l["step_ms"] for l in lines
             if l.get("traffic", {}).get("cross_node", {}).get("sent", 0) == 0 and "outer_sync" not in l]
    # median_high: the element plan.cpp's nth_element at n / 2 picks.
    if quiet:
        return statistics.median_high(quiet) / 1000
    return statistics.median_high([l["forward_ms"] + l["backward_ms"] for l in lines]) / 1000


def model_shape(config):
    """The Hugging Face config's dimensions, from which the test rebuilds the tensors' shapes."""
    return {k: config[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "tie_word_embeddings")}


def method_of(config):
    strategy = config["strategy"]
    if strategy in ("auto", "ddp"):
        return {"kind": "ddp", "bucket_mb": config["bucket_mb"]}
    method = {"kind": strategy, "sync_every": config["sync_every"]}
    if strategy == "sparseloco":
        method.update(topk=config["topk"], index_coding=config["index_coding"])
    else:
        method["outer_dtype"] = config["outer_dtype"]
        if config["fragments"] > 1:
            method.update(kind="streaming-diloco", fragments=config["fragments"], overlap_steps=config["overlap_steps"])
    return method


# Recorded while other testbed runs shared the machine's 2 cores (BENCHMARKS.md, "An outer step that
# applies the pseudo-gradient once": the 4-node DiLoCo runs beside a 4-node DDP run): their steps
# hold the other runs' compute, which no prediction from the run's own compute can see.
SHARED_MACHINE = ("diloco-2400-runs",)

# The TCP congestion control of runs recorded before testbed.json named it, or before scripts/wan
# set CUBIC by default: the machine's BBR, which scripts/wan inherited then.
INHERITED_CONGESTION_CONTROL = "bbr"


def testbed_run(bench_out, run_dir):
    cell = os.path.dirname(run_dir)
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    config = json.load(open(os.path.join(run_dir, "train_config.json")))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    testbed = json.load(open(os.path.join(cell, "testbed.json")))
    command = json.load(open(os.path.join(cell, "bench-command.json")))
    model = json.load(open(os.path.join(run_dir, "config.json")))
    syncs = [l["outer_sync"] for l in lines if "outer_sync" in l]
    record = {
        "name": os.path.relpath(cell, start=bench_out),
        # Paths relative to the checkout, as BENCHMARKS.md writes commands.
        "command": " ".join(c.replace(os.path.abspath(".") + "/", "") for c in command),
        "nodes": testbed["nnodes"],
        "ranks_per_node": testbed["nproc_per_node"],
        "link": testbed["link"],
        "tcp_congestion_control": testbed.get("tcp_congestion_control", INHERITED_CONGESTION_CONTROL),
        "params": summary["parameters"],
        "model": model_shape(model),
        "method": method_of(config),
        "steps": lines[-1]["step"],
        "step_compute_s": measured_compute_s(lines),
        "train_s": sum(l["step_ms"] for l in lines) / 1000,
        "elapsed_s": lines[-1]["elapsed_s"],
        "blocked_s": sum(s["blocked_ms"] for s in syncs) / 1000,
        "outer_syncs": len(syncs),
    }
    # What rank 0 (= its node: one rank a node here) sent across nodes: DDP, the ledger's bytes
    # of a typical step (the summary's average would add the start-up weight broadcast); outer
    # methods, the bytes_sent of the exchanges per window of H steps (every fragment once), before
    # the last step, which syncs every fragment once more.
    assert testbed["nproc_per_node"] == 1
    # SparseLoCo's codec time per value coded (what `strait plan --measured RUN_DIR` reads).
    codec = [s["codec_ms"] / (s["dense_bytes"] / 4) for s in syncs if "codec_ms" in s and s.get("dense_bytes", 0) > 0]
    if codec:
        record["sparse_codec_s_per_param"] = statistics.median_high(codec) / 1000
    if syncs:
        fragments = config["fragments"]
        sent = [s["bytes_sent"] for s in syncs if s["bytes_sent"] > 0 and s["step"] < record["steps"]]
        record["ledger_exchange_bytes_per_node_per_window"] = sum(sent) * fragments / len(sent)
        if fragments > 1:  # each fragment's exchange, from the syncs where it alone landed
            by_fragment = {s["fragments_applied"][0]: s["bytes_sent"] for s in syncs
                           if len(s.get("fragments_applied", [])) == 1 and s["bytes_sent"] > 0}
            record["ledger_fragment_exchange_bytes"] = [by_fragment[f] for f in range(fragments)]
    else:
        record["ledger_bytes_per_node_per_step"] = statistics.median_high(
            l["traffic"]["cross_node"]["sent"] for l in lines)
    return record


def wan_ddp_run(path):
    """bench/wan_ddp.py keeps medians over 5 rounds, not run directories."""
    data = json.load(open(path))
    settings, result = data["settings"], data["results"][0]
    side = result["sides"]["strait"]
    config = result["config"]
    return {
        "name": "wan_ddp/strait",
        "command": data["command"],
        "nodes": settings["nodes"],
        "ranks_per_node": settings["nproc_per_node"],
        "link": settings["link"],
        "params": result["params"],
        # The Llama shapes in strait's parameter order, for DDP's buckets.
        "model": model_shape(config),
        "method": {"kind": "ddp", "bucket_mb": settings["bucket_mb"]},
        "steps": settings["steps"] - settings["warmup_steps"],
        "step_compute_s": (side["forward_ms_median"] + side["backward_ms_median"]) / 1000,
        "train_s": side["step_ms_median"] * (settings["steps"] - settings["warmup_steps"]) / 1000,
        "ledger_bytes_per_node_per_step": result["rounds"][0]["runs"]["strait"]["ledger_bytes_per_step_node"]["sent"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench-out", default="bench/out")
    parser.add_argument("--out", default="tests/plan/testbed_runs.json")
    args = parser.parse_args()
    runs = []
    wan_ddp = os.path.join(args.bench_out, "wan_ddp.json")
    if os.path.exists(wan_ddp):
        runs.append(wan_ddp_run(wan_ddp))
    for run_dir in sorted(glob.glob(os.path.join(args.bench_out, "*-runs", "testbed", "*", "*", "run"))):
        if os.path.relpath(run_dir, args.bench_out).split(os.sep)[0] in SHARED_MACHINE:
            print(f"left out, recorded beside other runs: {os.path.relpath(os.path.dirname(run_dir), args.bench_out)}")
            continue
        runs.append(testbed_run(args.bench_out, run_dir))
    # A recorded run that bench/out no longer holds (another machine's, or one not rerun) stays
    # as it was recorded; a rerun replaces it.
    if os.path.exists(args.out):
        found = {run["name"] for run in runs}
        kept = [run for run in json.load(open(args.out))["runs"] if run["name"] not in found]
        for run in kept:
            run.setdefault("tcp_congestion_control", INHERITED_CONGESTION_CONTROL)
            print(f"kept as recorded before: {run['name']}")
        runs = kept + runs
    note = ("Measured figures of strait's recorded testbed runs (bench/out, gitignored), extracted by "
            "tests/plan/extract_testbed_runs.py; see its docstring and BENCHMARKS.md (issues 9, 10, 11) for the commands.")
    with open(args.out, "w") as out:
        json.dump({"note": note, "runs": runs}, out, indent=1)
        out.write("\n")
    print(f"{len(runs)} runs -> {args.out}")


if __name__ == "__main__":
    main()
