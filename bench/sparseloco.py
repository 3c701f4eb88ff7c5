#!/usr/bin/python3
"""SparseLoCo against DiLoCo: what one outer sync puts on the wire, what the ledger counts per
rank at 4 and 8 replicas, the loss each reaches at equal tokens, and on the shaped-link testbed
the wall time to DDP's final validation loss + 3% next to the same run's time on loopback.
Run as root (the testbed phase needs network namespaces).

Usage:
  bench/sparseloco.py --strait build/strait --data DIR [--phases payload,ledger,quality,testbed]
      [--links 20mbit] [--work bench/out/diloco-runs] [--out bench/out/sparseloco.json]
      (and bench/diloco.py's model, batch and schedule options, same defaults)

payload phase: a single-process run of the benchmark's model saves checkpoints H = 15 steps
apart (steps 45 and 60); their difference is a real pseudo-gradient. `strait codec --delta`
compresses it once per k in {64, 96} per 4096 and index coding in {fixed, rice, bitmap, auto}
and reports the payload's bytes, bits per index and its ratio to the dense float32 tensor.
The paper's accounting for comparison: 32 / (k / 4096 x (12 + 2)) (12-bit index, 2-bit code),
and the same accounting over the measured bits (index and code bits only, no side information
or headers).

ledger phase: `strait launch` with R in {4, 8} one-rank replicas, diloco (fp32) and sparseloco
(k = 64, fixed index coding, so all payloads have one size), H = 5, 10 steps (2 outer syncs): the bytes each rank sent to other replicas
(summary.json cross_replica_bytes_sent / R / syncs) against the collectives' formulas: DiLoCo's
exchange moves 2 (R - 1) / R of the dense tensor per rank (all-to-all of slices, all-gather of
their means), SparseLoCo's all-gather sends the rank's payload to each of the R - 1 others
(an 8-byte count, then the payload padded to the largest); both add the 8-byte weight hash
to each other replica.

quality and testbed phases: bench/diloco.py's, over METHODS and TESTBED_METHODS below (its
cached runs in --work are reused: the same command is not rerun). The last link of --links
(default 10gbit, where the exchanges cost next to nothing) stands for compute-only: the same
runs on the same testbed, so the ratio of wall times is what the slow link costs.

The JSON written to --out holds every run, the machine, date, git commit and this command
line; markdown tables for BENCHMARKS.md are printed on stdout; progress goes to stderr.
"""

import argparse
import json
import os
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import diloco  # noqa: E402  (quality_run, testbed_run, run_once, ...)
import throughput as tp  # noqa: E402
from throughput import progress  # noqa: E402

METHODS = {
    "ddp": [],
    "diloco H=15": ["--strategy", "diloco", "--sync-every", "15"],
    "diloco H=50": ["--strategy", "diloco", "--sync-every", "50"],
    "sparseloco H=15": ["--strategy", "sparseloco", "--sync-every", "15"],
    "sparseloco H=50": ["--strategy", "sparseloco", "--sync-every", "50"],
    "sparseloco H=15 k=128": ["--strategy", "sparseloco", "--sync-every", "15", "--topk", "128"],
    "sparseloco H=50 k=256": ["--strategy", "sparseloco", "--sync-every", "50", "--topk", "256"],
}
TESTBED_METHODS = ["diloco H=15", "sparseloco H=15", "sparseloco H=50"]
PAYLOAD_TOPK = [64, 96]
CODINGS = ["fixed", "rice", "bitmap", "auto"]
LEDGER_REPLICAS = [4, 8]


def payload_phase(args):
    """Compresses a real pseudo-gradient (15 inner steps) with every k and index coding."""
    run = os.path.join(args.work, "payload", "run")
    command = [args.strait, "--quiet", "train", "--data", args.data, "--out", run, "--overwrite",
               "--preset", args.preset, "--batch-size", str(args.batch_size), "--seq-len",
               str(args.seq_len), "--steps", "60", "--lr", str(args.lr), "--warmup-steps",
               str(args.warmup_steps), "--eval-every", "0", "--checkpoint-every", "15",
               "--keep-checkpoints", "0", "--threads", "2", "--precision", args.precision,
               "--seed", str(tp.SEED)]
    diloco.run_once("payload run", command, os.path.dirname(run))
    newer = os.path.join(run, "checkpoints", "step-000060", "model.safetensors")
    older = os.path.join(run, "checkpoints", "step-000045", "model.safetensors")
    results = []
    for topk in PAYLOAD_TOPK:
        for coding in CODINGS:
            out = os.path.join(args.work, "payload", f"decoded-k{topk}-{coding}.safetensors")
            printed = subprocess.run([args.strait, "codec", "--delta", newer, older, "--out", out, "--overwrite",
                                      "--topk", str(topk), "--index-coding", coding],
                                     check=True, capture_output=True, text=True).stdout
            total = json.loads(printed.strip().splitlines()[-1])["total"]
            result = {"topk": topk, "coding": coding, "payload_bytes": total["payload_bytes"],
                      "bits_per_index": total["bits_per_index"], "ratio_to_fp32": total["ratio_fp32"],
                      "kept": total["kept"], "elements": total["elements"],
                      "paper_ratio": 32 / (topk / 4096 * 14)}
            results.append(result)
            progress(f"payload k={topk} {coding}: {result}")
    return results


def ledger_phase(args):
    results = []
    for replicas in LEDGER_REPLICAS:
        for method, options in [("diloco", ["--strategy", "diloco"]),
                                ("sparseloco", ["--strategy", "sparseloco", "--index-coding", "fixed"])]:
            label = f"ledger {method} R={replicas}"
            run = os.path.join(args.work, "ledger", f"{method}-R{replicas}", "run")
            command = [args.strait, "launch", "--nproc-per-node", str(replicas), "--master-port",
                       str(args.port + 100 + replicas), "--", "--quiet", "train", "--data", args.data,
                       "--out", run, "--overwrite", "--preset", args.preset, "--batch-size", "1",
                       "--seq-len", str(args.seq_len), "--steps", "10", "--sync-every", "5",
                       "--eval-every", "0", "--checkpoint-every", "0", "--threads", "1",
                       "--precision", args.precision, "--seed", str(tp.SEED)] + options
            diloco.run_once(label, command, os.path.dirname(run))
            summary = tp.read_json(os.path.join(run, "summary.json"), label)
            syncs = summary["outer_syncs"]
            per_sync = summary["cross_replica_bytes_sent"] / replicas / syncs
            parameters = summary["parameters"]
            lines = diloco.metrics(run, label)
            payloads = [line["outer_sync"]["payload_bytes"] for line in lines if "outer_sync" in line
                        and "payload_bytes" in line["outer_sync"]]
            hash_bytes = 8 * (replicas - 1)
            if method == "diloco":
                slice_elements = -(-parameters // replicas)
                formula = 2 * (replicas - 1) * 4 * slice_elements + hash_bytes
                upload = 4 * parameters
            else:
                # With the fixed coding every replica's payload has the same size (the gather pads
                # to the largest, so the formula is exact); auto's are smaller (payload phase).
                upload = sum(payloads) / len(payloads)
                formula = (replicas - 1) * (8 + upload) + hash_bytes
            results.append({"method": method, "replicas": replicas, "parameters": parameters,
                            "syncs": syncs, "ledger_bytes_per_rank_per_sync": per_sync,
                            "formula_bytes_per_rank_per_sync": formula, "upload_bytes": upload,
                            "run_dir": run})
            progress(f"{label}: {per_sync:.0f} bytes per rank per sync (formula {formula:.0f})")
    return results


def add_blocked(testbed, quality):
    """Adds to a testbed result the time its outer syncs blocked the training loop."""
    lines = diloco.metrics(testbed["run_dir"], "testbed " + testbed["method"])
    testbed["blocked_s"] = sum(line["outer_sync"]["blocked_ms"] for line in lines if "outer_sync" in line) / 1000


def markdown(report):
    out = []
    if "payload" in report:
        out += ["| k per 4096 | index coding | payload (bytes) | bits per index | dense fp32 / payload | "
                "dense fp32 / (index + code bits) | the paper's formula |", "|---|---|---|---:|---:|---:|---:|"]
        for r in report["payload"]:
            bits_only = 32 * r["elements"] / (r["kept"] * (r["bits_per_index"] + 2))
            out.append(f"| {r['topk']} | {r['coding']} | {r['payload_bytes']:,.0f} | "
                       f"{r['bits_per_index']:.2f} | {r['ratio_to_fp32']:.1f}x | {bits_only:.1f}x | "
                       f"{r['paper_ratio']:.1f}x |")
        out.append("")
    if "ledger" in report:
        out += ["| method | R | bytes per rank per sync (ledger) | formula | dense / this |",
                "|---|---|---|---|---|"]
        dense = {r["replicas"]: r["ledger_bytes_per_rank_per_sync"] for r in report["ledger"]
                 if r["method"] == "diloco"}
        for r in report["ledger"]:
            out.append(f"| {r['method']} | {r['replicas']} | {r['ledger_bytes_per_rank_per_sync']:.0f} | "
                       f"{r['formula_bytes_per_rank_per_sync']:.0f} | "
                       f"{dense[r['replicas']] / r['ledger_bytes_per_rank_per_sync']:.1f}x |")
        out.append("")
    if "quality" in report:
        out.append(diloco.markdown({k: report[k] for k in ("quality", "targets", "settings")}))
    testbed = report.get("testbed", {})
    if testbed:
        links = list(testbed)
        fast = links[-1]  # the compute-only reference: a link the exchanges barely use
        out += ["", f"Testbed, {report['settings']['replicas']} nodes x 1 rank; wall time of the same run on "
                    f"each link (rank 0's elapsed_s at the last step), {fast} standing for compute-only:", "",
                "| method | steps | " + " | ".join(f"s at {link}" for link in links) + " | " +
                " | ".join(f"{link} / {fast}" for link in links[:-1]) + " | " +
                " | ".join(f"blocked in outer syncs at {link} (s)" for link in links) + " | s to ddp+3% at " +
                links[0] + " |",
                "|---|---:|" + "---:|" * (3 * len(links))]
        for name in testbed[fast]:
            runs = [testbed[link][name] for link in links]
            to = runs[0]["seconds_to"]["ddp+3%"]
            out.append(f"| {name} | {runs[0]['last_step']} | " + " | ".join(f"{r['seconds']:.1f}" for r in runs) +
                       " | " + " | ".join(f"{r['seconds'] / runs[-1]['seconds']:.2f}" for r in runs[:-1]) + " | " +
                       " | ".join(f"{r['blocked_s']:.1f}" for r in runs) +
                       f" | {f'{to:.1f}' if to is not None else 'not reached'} |")
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    diloco.add_run_arguments(p)
    p.add_argument("--links", default="20mbit,10gbit")
    p.add_argument("--phases", default="payload,ledger,quality,testbed")
    p.add_argument("--out", default=os.path.join(BENCH, "out", "sparseloco.json"))
    p.add_argument("--methods", default=",".join(METHODS), help="a subset of METHODS (ddp is needed)")
    p.add_argument("--testbed-methods", default=",".join(TESTBED_METHODS), help="a subset of TESTBED_METHODS")
    args = diloco.finish_args(p, p.parse_args(argv), {"payload", "ledger", "quality", "testbed"})
    diloco.method_list(p, "--methods", args.methods, METHODS)
    diloco.method_list(p, "--testbed-methods", args.testbed_methods, TESTBED_METHODS)
    if "ddp" not in args.methods.split(","):
        p.error("--methods must include ddp (its final loss sets the target)")
    return args


def main(argv):
    args = parse_args(argv)
    diloco.METHODS.update(METHODS)
    methods = [m for m in METHODS if m in args.methods.split(",")]
    testbed_methods = [m for m in TESTBED_METHODS if m in args.testbed_methods.split(",")]
    report = diloco.new_report(args, argv)
    if "payload" in args.phases:
        report["payload"] = payload_phase(args)
    if "ledger" in args.phases:
        report["ledger"] = ledger_phase(args)
    if args.phases & {"quality", "testbed"}:
        report.update(diloco.quality_phase(args, methods, testbed_methods))
    if "testbed" in args.phases:
        report["testbed"] = diloco.testbed_phase(args, testbed_methods, report["quality"], add_blocked)
    diloco.write_report(args, report, markdown)


if __name__ == "__main__":
    diloco.run(main)
