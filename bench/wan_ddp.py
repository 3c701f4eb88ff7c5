#!/usr/bin/python3
"""strait's DDP against PyTorch DDP across shaped links: both sides on the scripts/wan testbed
(every node a network namespace behind a tc tbf link), side by side. Run as root.

Usage:
  bench/wan_ddp.py --strait build/strait --data DIR [--preset small] [--nodes 2]
      [--nproc-per-node 2] [--link 100mbit] [--batch-size 4] [--seq-len 256] [--steps 8]
      [--warmup-steps 1] [--rounds 5] [--warmup-runs 1] [--out bench/out/wan_ddp.json]

Setting (the defaults): 2 nodes x 2 ranks, 100 Mbit/s per node each way, the small preset, fp32,
batch 4 x 256 per rank, 8 steps of which the first is untimed (it is also the learning-rate
warmup), threads per rank K = max(1, cores // (nodes x ranks per node)) on both sides.

  strait:  scripts/wan --nodes N --link RATE --nproc-per-node P --strait STRAIT --results R --
             --quiet train --data DIR --preset NAME --steps S --batch-size B --seq-len T
             --threads K --eval-every 0 --eval-batches 1 --checkpoint-every 0
             --warmup-steps W --lr 3e-4 --precision fp32 --out RUNDIR --overwrite
           (scripts/wan runs `strait launch --nnodes N --node-rank i ...` in node i's namespace
           and appends --gloo-interface)
  pytorch: scripts/wan --nodes N --link RATE --results R --run-cmd -- env OMP_NUM_THREADS=K
             bash -c '<torchrun with the node's NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT>'
             PYTHON -m torch.distributed.run --nnodes N --node_rank i --nproc_per_node P
             --master_addr A --master_port Q --redirects 1 --tee 1 --log_dir LOGDIR/node<i>
             bench/ddp_ref.py --config RUNDIR/config.json --data DIR --batch-size B
             --seq-len T --steps S --threads K --warmup-steps-excluded W --lr 3e-4 --warmup W
             --seed 1337 --precision fp32
           (GLOO_SOCKET_IFNAME is the node's interface: scripts/wan sets it in --run-cmd mode)

--warmup-runs discarded runs per side (strait first: its config.json gives the reference its
dims), then --rounds rounds of one run per side, the first side alternating (A B, B A, ...).
tokens/s = N x P x B x T per timed step / rank 0's summed time of the timed steps (strait: its
metrics.jsonl; PyTorch: ddp_ref.py's own timing). Per round ratio = strait tok/s / PyTorch
tok/s; the report gives their median and min-max.

Bytes: each side's kernel counters of every node's interface over the whole run (testbed.json
of scripts/wan; they include the start-up, the rendezvous store and TCP/IP headers), shown per
node and step as total / steps (the most loaded node and direction).

strait's overlap bound per step = forward + max(backward, link), each term from the run:
forward and backward = medians over the timed steps of rank 0's forward_ms and backward_ms
(metrics.jsonl); link = the most loaded node's and direction's cross-node bytes per step / link
rate, where the bytes per step come from the kernel counters: the node's kernel bytes over the
run x (the node's ledger bytes per step / its ledger bytes over the run), i.e. the counters'
share of the steps, apportioned by the ledger. The node's ledger bytes per step = P x rank 0's
median per-step cross-node bytes (DDP's ranks send alike); its ledger bytes over the run = the
sum of its ranks' summary.json traffic_by_rank totals. The report gives strait's median step
time / bound (1.00 = at the bound).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import ddp_throughput as ddp  # noqa: E402  (parse_rank0_result, DDP_REF)
import throughput as tp  # noqa: E402  (shared harness pieces)
from throughput import BenchError, progress, warn_if_busy  # noqa: E402

WAN = os.path.join(REPO, "scripts", "wan")
PRECISION = "fp32"
SIDES = ("strait", "pytorch")
DIRECTIONS = (("sent", "tx_bytes"), ("received", "rx_bytes"))
TORCHRUN = ('exec "$0" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" '
            '--nproc_per_node "$NPROC_PER_NODE" --master_addr "$MASTER_ADDR" '
            '--master_port "$MASTER_PORT" --log_dir "$1/node$NODE_RANK" "${@:2}"')


def wan_command(args, results):
    return [WAN, "--nodes", str(args.nodes), "--link", args.link,
            "--nproc-per-node", str(args.nproc_per_node), "--iface-names", args.iface_names,
            "--results", results]


def read_testbed(path, args, label):
    testbed = tp.read_json(path, label)
    if testbed.get("exit_status") != 0 or len(testbed.get("nodes", [])) != args.nodes:
        raise BenchError(f"{label}: unexpected testbed.json {path}")
    return testbed


def kernel_bytes(testbed):
    """[{"sent": B, "received": B}] per node: its interface's counters over the run."""
    return [{d: node["delta"][key] for d, key in DIRECTIONS} for node in testbed["nodes"]]


def per_step_most_loaded(per_node, steps):
    """Bytes per step of the most loaded node and direction, from totals over the run."""
    return max(n[d] for n in per_node for d in ("sent", "received")) / steps


def ledger_totals_by_node(summary, args, label):
    """{"sent", "received"} cross-node ledger totals per node: the sum over its ranks of
    summary.json's traffic_by_rank; None (with a warning) without traffic_by_rank."""
    by_rank = summary.get("traffic_by_rank")
    p = args.nproc_per_node
    if by_rank is None:
        progress(f"{label}: warning: summary.json has no traffic_by_rank; the link term and "
                 "the overlap bound are n/a")
        return None
    if len(by_rank) != args.nodes * p:
        raise BenchError(f"{label}: traffic_by_rank has {len(by_rank)} entries, expected "
                         f"{args.nodes * p}")
    return [{d: sum(by_rank[n * p + k]["cross_node"][d] for k in range(p))
             for d in ("sent", "received")} for n in range(args.nodes)]


def median_field(records, key):
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if len(values) == len(records) and values else None


def strait_run(args, threads, run_dir, label):
    results = os.path.join(os.path.dirname(run_dir), "strait-testbed.json")
    command = wan_command(args, results) + [
        "--strait", args.strait, "--",
        "--quiet", "train", "--data", args.data, "--preset", args.preset,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--seq-len", str(args.seq_len), "--threads", str(threads),
        "--eval-every", "0", "--eval-batches", "1", "--checkpoint-every", "0",
        "--warmup-steps", str(args.warmup_steps), "--lr", str(tp.LR),
        "--precision", PRECISION, "--out", run_dir, "--overwrite", "--bucket-mb", str(args.bucket_mb)]
    loadavg = os.getloadavg()[0]
    tp.run_child(label, command)
    ranks = args.nodes * args.nproc_per_node
    config = tp.read_json(os.path.join(run_dir, "config.json"), label)
    summary = tp.read_json(os.path.join(run_dir, "summary.json"), label)
    tp.check_fields(summary, {"precision": PRECISION, "world_size": ranks, "strategy": "ddp"},
                    f"{label}: strait's summary.json says")
    records = tp.read_strait_metrics(os.path.join(run_dir, "metrics.jsonl"), args.steps,
                                     ranks * args.batch_size * args.seq_len)
    timed = records[args.warmup_steps:]
    if not all("traffic" in r for r in timed):
        raise BenchError(f"{label}: metrics.jsonl lacks the per-step \"traffic\" field")
    testbed = read_testbed(results, args, label)
    kernel = kernel_bytes(testbed)
    ledger = ledger_totals_by_node(summary, args, label)
    # The node's ledger bytes per step: P x rank 0's (DDP's ranks send alike).
    ledger_step = {d: args.nproc_per_node * statistics.median(r["traffic"]["cross_node"][d]
                                                              for r in timed)
                   for d in ("sent", "received")}
    kernel_step = link_bytes = link_ms = None
    if ledger is not None:
        kernel_step = [{d: kernel[n][d] * ledger_step[d] / ledger[n][d] if ledger[n][d] else 0.0
                        for d in ("sent", "received")} for n in range(args.nodes)]
        link_bytes = max(k[d] for k in kernel_step for d in ("sent", "received"))
        link_ms = link_bytes * 8.0 / testbed["link_bits_per_s"] * 1000.0
    forward_ms, backward_ms = median_field(timed, "forward_ms"), median_field(timed, "backward_ms")
    if forward_ms is None or backward_ms is None:
        progress(f"{label}: warning: metrics.jsonl lacks forward_ms/backward_ms; the overlap "
                 "bound is n/a")
    timing = tp.strait_timing(records, args.warmup_steps)
    bound_ms = (forward_ms + max(backward_ms, link_ms)
                if None not in (forward_ms, backward_ms, link_ms) else None)
    return config, {
        "side": "strait",
        **timing,
        "params": summary.get("parameters"),
        "forward_ms_median": forward_ms,
        "backward_ms_median": backward_ms,
        "kernel_bytes_by_node": kernel,
        "kernel_packets_by_node": [{d: node["delta"][key.replace("bytes", "packets")]
                                    for d, key in DIRECTIONS} for node in testbed["nodes"]],
        "tcp_retrans_segs_by_node": [node["delta"]["tcp_retrans_segs"]
                                     for node in testbed["nodes"]],
        "kernel_bytes_per_step_whole_run": per_step_most_loaded(kernel, args.steps),
        "ledger_bytes_by_node": ledger,
        "ledger_bytes_per_step_node": ledger_step,
        "kernel_bytes_per_step_by_node": kernel_step,
        "link_bytes_per_step": link_bytes,
        "link_ms": link_ms,
        "overlap_bound_ms": bound_ms,
        "step_over_bound": timing["step_ms_median"] / bound_ms if bound_ms else None,
        "wall_s": testbed.get("duration_s"),
        "loadavg_1m_before": loadavg,
    }


def node0_stdout(stdout):
    """Node 0's lines of scripts/wan's stdout, without the "[node 0] " prefix."""
    prefix = "[node 0] "
    return "\n".join(line[len(prefix):] for line in stdout.splitlines()
                     if line.startswith(prefix))


def reference_run(args, threads, config_path, run_dir, label):
    os.makedirs(run_dir, exist_ok=True)
    results = os.path.join(run_dir, "testbed.json")
    log_dir = os.path.join(run_dir, "torchrun-logs")
    command = wan_command(args, results) + [
        "--run-cmd", "--", "env", f"OMP_NUM_THREADS={threads}", "bash", "-c", TORCHRUN,
        args.python, log_dir, "--redirects", "1", "--tee", "1",
        ddp.DDP_REF, "--config", config_path, "--data", args.data,
        "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
        "--steps", str(args.steps), "--threads", str(threads),
        "--warmup-steps-excluded", str(args.warmup_steps), "--lr", str(tp.LR),
        "--warmup", str(args.warmup_steps), "--seed", str(tp.SEED), "--precision", PRECISION,
        "--bucket-cap-mb", str(args.pytorch_bucket_mb)]
    loadavg = os.getloadavg()[0]
    proc = tp.run_child(label, command)
    result = ddp.parse_rank0_result(node0_stdout(proc.stdout), label)
    if result.get("impl") != "pytorch-ddp" or "tokens_per_s" not in result:
        raise BenchError(f"{label}: unexpected result {result}")
    expected = {"ranks": args.nodes * args.nproc_per_node, "steps": args.steps,
                "threads": threads, "precision": PRECISION, "batch_size": args.batch_size,
                "seq_len": args.seq_len, "warmup_steps_excluded": args.warmup_steps,
                "backend": "gloo"}
    tp.check_fields(result, expected, f"{label}: ddp_ref reports")
    testbed = read_testbed(results, args, label)
    kernel = kernel_bytes(testbed)
    result.update(side="pytorch", loadavg_1m_before=loadavg, kernel_bytes_by_node=kernel,
                  tcp_retrans_segs_by_node=[n["delta"]["tcp_retrans_segs"]
                                            for n in testbed["nodes"]],
                  kernel_bytes_per_step_whole_run=per_step_most_loaded(kernel, args.steps),
                  wall_s=testbed.get("duration_s"))
    return result


class Case(tp.CaseBase):
    def __init__(self, args, threads, work_dir):
        super().__init__(args, threads, work_dir)
        self.strait_dir = os.path.join(work_dir, "strait", "run")
        self.pytorch_dir = os.path.join(work_dir, "pytorch")
        os.makedirs(os.path.dirname(self.strait_dir), exist_ok=True)

    def run(self, side, label):
        if side == "pytorch":
            self.require_config(label)
            return reference_run(self.args, self.threads, self.config_path, self.pytorch_dir,
                                 label)
        config, result = strait_run(self.args, self.threads, self.strait_dir, label)
        self.keep_config(config, self.strait_dir, label)
        return result


def describe(result):
    text = (f"{result['tokens_per_s']:.0f} tok/s, step {result['step_ms_median']:.0f} ms, "
            f"{format_bytes(result['kernel_bytes_per_step_whole_run'])}/step on the busiest "
            f"link (kernel, whole run / steps)")
    if result["side"] == "strait" and result["link_ms"] is not None:
        text += f", link {result['link_ms']:.0f} ms/step"
        if result["overlap_bound_ms"]:
            text += (f", bound {result['overlap_bound_ms']:.0f} ms "
                     f"(step/bound {result['step_over_bound']:.2f})")
    return text + f", final loss {result['final_loss']:.4f}"


def format_bytes(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def bench(args, threads, work_dir):
    case = Case(args, threads, work_dir)
    for w in range(args.warmup_runs):
        for side in SIDES:  # strait first: it supplies the config
            result = case.run(side, f"warm-up {w + 1}/{args.warmup_runs} {side}")
            progress(f"warm-up {side}: {describe(result)}")
    rounds = []
    for r in range(args.rounds):
        order = SIDES if r % 2 == 0 else SIDES[::-1]
        tag = f"round {r + 1}/{args.rounds}"
        runs = {}
        for side in order:
            runs[side] = case.run(side, f"{tag} {side}")
            progress(f"{tag} {side}: {describe(runs[side])}")
        if runs["pytorch"]["params"] != runs["strait"]["params"]:
            raise BenchError(f"{tag}: PyTorch's model has {runs['pytorch']['params']} "
                             f"parameters, strait's {runs['strait']['params']}")
        ratio = runs["strait"]["tokens_per_s"] / runs["pytorch"]["tokens_per_s"]
        loss_diff = abs(runs["strait"]["final_loss"] - runs["pytorch"]["final_loss"])
        progress(f"{tag} strait/pytorch tok/s: {ratio:.3f} (final losses differ by "
                 f"{loss_diff:.2e})")
        rounds.append({"order": list(order), "runs": runs, "ratio": ratio,
                       "final_loss_abs_diff": loss_diff})

    def med(side, key):
        values = [rd["runs"][side][key] for rd in rounds]
        return None if None in values else statistics.median(values)

    sides = {side: tp.side_summary([rd["runs"][side] for rd in rounds]) for side in SIDES}
    for side in SIDES:
        sides[side]["kernel_bytes_per_step_whole_run_median"] = \
            med(side, "kernel_bytes_per_step_whole_run")
    for key in ("forward_ms_median", "backward_ms_median", "link_ms", "link_bytes_per_step",
                "overlap_bound_ms", "step_over_bound"):
        sides["strait"][key if key.endswith("_median") else key + "_median"] = med("strait", key)
    ratios = [rd["ratio"] for rd in rounds]
    return {
        "threads_per_rank": threads,
        "config": case.config,
        "params": rounds[0]["runs"]["strait"]["params"],
        "pytorch_version": rounds[0]["runs"]["pytorch"].get("torch"),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "final_loss_abs_diff_max": max(rd["final_loss_abs_diff"] for rd in rounds),
        "sides": sides,
        "rounds": rounds,
    }


def markdown(report):
    m, s = report["machine"], report["settings"]
    r = report["results"][0]
    st, pt = r["sides"]["strait"], r["sides"]["pytorch"]
    rounds = s["rounds"]

    def ms(x):
        return "n/a" if x is None else f"{x:,.0f} ms"

    bound = ("n/a (needs forward_ms/backward_ms in metrics.jsonl and traffic_by_rank in "
             "summary.json)" if st["overlap_bound_ms_median"] is None else
             f"{ms(st['overlap_bound_ms_median'])} = {ms(st['forward_ms_median'])} forward + "
             f"max({ms(st['backward_ms_median'])} backward, {ms(st['link_ms_median'])} link)")
    link = ("n/a" if st["link_bytes_per_step_median"] is None
            else format_bytes(st["link_bytes_per_step_median"]))
    over = "n/a" if st["step_over_bound_median"] is None else f"{st['step_over_bound_median']:.2f}×"
    lines = [
        f"{m['cpu_model']}, {m['nproc']} CPUs; strait {report['git_commit']}"
        f"{' (dirty)' if report['git_dirty'] else ''}; PyTorch {r['pytorch_version']} DDP (gloo); "
        f"{report['date'][:10]}; scripts/wan testbed: {s['nodes']} nodes × {s['nproc_per_node']} "
        f"ranks, {s['link']} per node each way (tc tbf, no added delay); {s['preset']} "
        f"({tp.format_params(r['params'])} parameters), fp32, batch {s['batch_size']} × "
        f"{s['seq_len']} per rank, {r['threads_per_rank']} thread(s) per rank, gradient buckets of "
        f"{s['bucket_mb']:g} MiB (strait) and {s['pytorch_bucket_mb']:g} MiB (PyTorch); {s['steps']} steps, "
        f"first {s['warmup_steps']} untimed; {rounds} round{'s' if rounds != 1 else ''} after "
        f"{s['warmup_runs']} warm-up run(s) per side, starting side alternated.",
        "",
        f"`{report['command']}`",
        "",
        "| side | step time (median) | tok/s (median) | kernel bytes/step, busiest node link "
        "(whole run ÷ steps) |",
        "|---|---:|---:|---:|",
        f"| strait DDP | {ms(st['step_ms_median'])} | {st['tokens_per_s_median']:,.0f} "
        f"| {format_bytes(st['kernel_bytes_per_step_whole_run_median'])} |",
        f"| PyTorch DDP | {ms(pt['step_ms_median'])} | {pt['tokens_per_s_median']:,.0f} "
        f"| {format_bytes(pt['kernel_bytes_per_step_whole_run_median'])} |",
        "",
        f"strait/PyTorch tok/s: median {r['ratio_median']:.2f}×, min–max "
        f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f}× over {rounds} round(s); final losses differ "
        f"by at most {r['final_loss_abs_diff_max']:.1e}.",
        "",
        f"strait overlap bound (forward + max(backward, link), medians): {bound}; link = "
        f"{link} per step (kernel counters apportioned to the steps by the ledger) at "
        f"{s['link']}. strait step time / bound: {over}.",
    ]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="strait DDP vs PyTorch DDP on the scripts/wan shaped-link testbed (root).")
    parser.add_argument("--strait", required=True, help="the strait binary")
    parser.add_argument("--data", required=True, help="prepared data dir (train_*.bin)")
    parser.add_argument("--preset", default="small", help="strait model preset (default small)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--nproc-per-node", type=int, default=2)
    parser.add_argument("--link", default="100mbit", help="per-node rate each way (tc units)")
    parser.add_argument("--iface-names", default="eth0",
                        help="scripts/wan --iface-names (default eth0)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-runs", type=int, default=1,
                        help="discarded runs per side before the rounds (default 1)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bucket-mb", type=float, default=1.0,
                        help="strait's gradient bucket size in MiB (default 1: on a slow link small "
                             "buckets let the transfer start early in backward)")
    parser.add_argument("--pytorch-bucket-mb", type=float, default=None,
                        help="PyTorch DDP's bucket_cap_mb (default: the same as --bucket-mb; 25 is "
                             "PyTorch's own default)")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="leading steps left out of the timing (and LR warmup length)")
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per rank (default: max(1, cores // all ranks))")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="interpreter for torchrun and ddp_ref.py (needs torch)")
    parser.add_argument("--out", default=os.path.join("bench", "out", "wan_ddp.json"))
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.nproc_per_node < 1:
        parser.error("need --nodes >= 2 and --nproc-per-node >= 1")
    if min(args.rounds, args.steps, args.batch_size, args.seq_len) < 1 or args.warmup_runs < 0:
        parser.error("--rounds, --steps, --batch-size, --seq-len must be >= 1, "
                     "--warmup-runs >= 0")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error("need 0 <= --warmup-steps < --steps")
    if args.pytorch_bucket_mb is None:
        args.pytorch_bucket_mb = args.bucket_mb
    args.strait = os.path.abspath(args.strait)
    args.data = os.path.abspath(args.data)
    return args


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("wan_ddp: needs root: network namespaces and tc (scripts/wan)", file=sys.stderr)
        return 2
    machine = tp.machine_info()
    cores = machine["nproc"]
    ranks = args.nodes * args.nproc_per_node
    threads = args.threads or max(1, cores // ranks)
    settings = {"preset": args.preset, "nodes": args.nodes,
                "nproc_per_node": args.nproc_per_node, "link": args.link,
                "iface_names": args.iface_names, "threads_per_rank": threads,
                "rounds": args.rounds, "warmup_runs": args.warmup_runs, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "batch_size": args.batch_size,
                "seq_len": args.seq_len, "lr": tp.LR, "seed": tp.SEED,
                "precision": PRECISION, "backend": "gloo", "bucket_mb": args.bucket_mb,
                "pytorch_bucket_mb": args.pytorch_bucket_mb, "data": args.data,
                "strait": args.strait, "python": args.python}
    report = tp.new_report(machine, settings)
    warn_if_busy("before starting")
    if ranks * threads > cores:
        progress(f"warning: {ranks} ranks x {threads} thread(s) oversubscribe the {cores} CPUs "
                 "(both sides alike)")
    try:
        with tempfile.TemporaryDirectory(prefix="strait-wan-bench-") as work_dir:
            report["results"].append(bench(args, threads, work_dir))
    except BenchError as e:
        print(f"wan_ddp: {e}", file=sys.stderr)
        return 1
    tp.write_report(report, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
