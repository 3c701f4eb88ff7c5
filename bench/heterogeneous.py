#!/usr/bin/python3
"""DiLoCo with one slow replica: fixed H, where the fast replicas wait for the slowest at every
sync, against time-boxed inner phases (--sync-every-seconds), where each replica runs as many
steps as fit and the outer average weights the replicas by the tokens they trained.

Usage:
  bench/heterogeneous.py --strait build/strait --data DIR [--slow-replica 3] [--slowdown 2]
      [--base-throttle 4] [--sync-every 50] [--seconds S] [the run options of bench/diloco.py]
      [--work bench/out/heterogeneous-runs] [--out bench/out/heterogeneous.json]

Three runs of `strait launch --nproc-per-node R` on loopback (the network is not the point
here), the same model, data, seed and inner schedule as bench/diloco.py's, equal tokens:
  equal      fixed H, every replica at the same speed (what the job would take without a slow one)
  fixed      fixed H, replica --slow-replica --slowdown times slower (--throttle R:F)
  time-boxed --sync-every-seconds S, the same slow replica
Replicas that share cores are no model of machines of their own: a replica that waits or
sleeps gives its core to the others. --base-throttle B slows every replica B times (the slow
one B x --slowdown), so that R replicas of one thread need R / B cores and do not contend for
them (B >= R / cores); --base-throttle 1 runs them at the machine's full speed.
S defaults to H times the mean time of a step without a sync in the `equal` run, so that a
phase holds about H steps of a full-speed replica. The target is the fixed run's final
validation loss; for each run the wall time (rank 0's elapsed_s, start-up excluded) of its
first validation at or below it. Validation runs every --eval-every steps (time-boxed: at the
syncs that pass a multiple of it). Finished runs are kept and not rerun when their command is
unchanged. The JSON written to --out holds every run's validation curve; a markdown table is
printed on stdout. `strait report` on the three run directories draws the curves.
"""

import argparse
import os

import diloco
import throughput as tp
from throughput import BenchError, progress


def run_dir(args, name):
    return os.path.join(args.work, name, "run")


def launch(args, name, options, port):
    run = run_dir(args, name)
    diloco.METHODS[name] = ["--strategy", "diloco"] + options
    command = [args.strait, "launch", "--nproc-per-node", str(args.replicas), "--master-port", str(port),
               "--"] + diloco.train_args(args, name, run)
    diloco.run_once(name, command, os.path.dirname(run))
    summary = tp.read_json(os.path.join(run, "summary.json"), name)
    lines = diloco.metrics(run, name)
    return {"name": name, "options": options, "run_dir": run, "final_val_loss": summary["final_val_loss"],
            "wall_time_s": summary["wall_time_s"], "last_step": summary["last_step"],
            "outer_syncs": summary["outer_syncs"], "replica_steps": summary.get("replica_steps"),
            "val_curve": [[line["step"], line["elapsed_s"], line["val_loss"]] for line in lines if "val_loss" in line],
            "quiet_step_ms": mean([line["step_ms"] for line in lines if "outer_sync" not in line and "val_loss" not in line])}


def mean(values):
    if not values:
        raise BenchError("no step without a sync to time")
    return sum(values) / len(values)


def seconds_to(curve, target):
    for _, elapsed, loss in curve:
        if loss <= target:
            return elapsed
    return None


def markdown(report):
    target = report["target"]
    rows = ["| run | strait options | final val loss | last step | replica steps | wall s | s to target | fixed ÷ run |",
            "|---|---|---:|---:|---|---:|---:|---:|"]
    fixed = report["runs"]["fixed"]["seconds_to_target"]
    for r in report["runs"].values():
        reach = r["seconds_to_target"]
        rows.append(f"| {r['name']} | `{' '.join(r['options'])}` | {r['final_val_loss']:.4f} | {r['last_step']} | "
                    f"{r['replica_steps'] or '—'} | {r['wall_time_s']:.1f} | "
                    f"{'not reached' if reach is None else f'{reach:.1f}'} | "
                    f"{'—' if reach is None else f'{fixed / reach:.2f}×'} |")
    return f"target: the fixed run's final validation loss, {target:.4f}\n\n" + "\n".join(rows)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    diloco.add_run_arguments(p)
    p.add_argument("--slow-replica", type=int, default=3)
    p.add_argument("--slowdown", type=float, default=2.0)
    p.add_argument("--base-throttle", type=float, default=4.0)
    p.add_argument("--sync-every", type=int, default=50)
    p.add_argument("--seconds", type=float, default=0.0, help="S (default: H x the equal run's quiet step time)")
    p.add_argument("--out", default=os.path.join(diloco.BENCH, "out", "heterogeneous.json"))
    p.set_defaults(work=os.path.join(diloco.BENCH, "out", "heterogeneous-runs"))
    p.add_argument("--phases", default="runs")
    args = diloco.finish_args(p, p.parse_args(argv), {"runs"})
    report = diloco.new_report(args, argv)
    def throttle_of(slowdown):
        factors = [f"{r}:{args.base_throttle * (slowdown if r == args.slow_replica else 1):g}"
                   for r in range(args.replicas)]
        factors = [f for f in factors if not f.endswith(":1")]
        return ["--throttle", ",".join(factors)] if factors else []
    throttle = throttle_of(args.slowdown)
    runs = {"equal": launch(args, "equal", ["--sync-every", str(args.sync_every)] + throttle_of(1), args.port)}
    seconds = args.seconds or args.sync_every * runs["equal"]["quiet_step_ms"] / 1000.0
    runs["fixed"] = launch(args, "fixed", ["--sync-every", str(args.sync_every)] + throttle, args.port + 1)
    runs["time-boxed"] = launch(args, "time-boxed", ["--sync-every-seconds", f"{seconds:.3f}"] + throttle,
                                args.port + 2)
    report["seconds"] = seconds
    report["target"] = runs["fixed"]["final_val_loss"]
    for r in runs.values():
        r["seconds_to_target"] = seconds_to(r["val_curve"], report["target"])
        progress(f"{r['name']}: final val loss {r['final_val_loss']:.4f}, {r['wall_time_s']:.1f} s")
    report["runs"] = runs
    diloco.write_report(args, report, markdown)


if __name__ == "__main__":
    diloco.run(main)
