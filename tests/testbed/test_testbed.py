#!/usr/bin/python3
"""ctest driver for scripts/wan, the shaped-link testbed (network namespaces + tc tbf).

  /usr/bin/python3 tests/testbed/test_testbed.py --strait build/strait

Exits 77 (ctest's SKIP_RETURN_CODE) with the reason when this machine cannot run the testbed:
not root, `ip netns add` fails, or the tbf qdisc is missing. Otherwise it checks:

1. usage errors exit 2 with a message; as a non-root user (setpriv) the script exits 2 saying
   "needs root: network namespaces and tc"; so do --queue-ms 0 and a malformed
   --congestion-control;
2. a failing node: in --run-cmd mode node 1 exits 7 while the others sleep 120 s; the run must
   end with status 7 well before the sleepers would, and leave no namespace behind; its
   testbed.json records --queue-ms 100 as tbf's limit, the default congestion control (cubic,
   whatever this kernel's default) and tbf's drops; with --congestion-control inherit it records
   the kernel's default;
3. training across nodes: 2 nodes x 2 ranks, nodes with DIFFERENTLY NAMED interfaces (eth0 and
   ens5), each node's link shaped to 50 Mbit/s both ways, `--preset nano`, 6 steps, 1 thread
   per rank. The run must succeed (this needs the configuration hash to ignore
   gloo_interface, which differs between the nodes), and for each node and direction the
   ledger's cross-node bytes must equal the kernel's counters of the node's interface:

     kernel payload = bytes - 66 x packets        (tx for sent, rx for received)
     |kernel payload - ledger| <= 5% x ledger

   66 bytes per packet = Ethernet 14 + IPv4 20 + TCP 20 + TCP timestamp option 12, the
   headers of every TCP segment Linux sends here (IPv6 is off inside the testbed). The kernel
   counts each packet as the skb handed to the veth; under GSO one skb of up to 64 kB carries
   one set of headers and counts as one packet, so the subtraction holds whatever the
   segmentation. What is left beyond the ledger is traffic the ledger does not count: the
   rendezvous store (TCPStore on node 0), Gloo's connection set-up, TCP retransmissions
   (reported), SYN options and ARP; all small next to the gradients. A node's ledger bytes =
   the sum over its ranks of summary.json's traffic_by_rank[r].cross_node (global rank r is on
   node r // ranks_per_node).
4. SIGTERM to scripts/wan during training: every rank gets it once (through its launcher),
   checkpoints the step and exits; the script exits 143.

"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAN = os.path.join(REPO, "scripts", "wan")
SKIP = 77
HEADER_BYTES_PER_PACKET = 66  # Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12
TOLERANCE = 0.05
NODES, RANKS_PER_NODE = 2, 2
IFACES = ("eth0", "ens5")
LINK = "50mbit"

failures = []


def check(condition, message):
    print(("ok:   " if condition else "FAIL: ") + message, flush=True)
    if not condition:
        failures.append(message)
    return condition


def skip_reason():
    """Why this machine cannot run the testbed, or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces and tc (running as uid %d)" % os.geteuid()
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (Debian package iproute2)"
    probe = f"strait-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces do not work here: ip netns add: {made.stderr.strip()}"
    try:
        tbf = subprocess.run(["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf",
                              "rate", "1mbit", "burst", "16384", "limit", "65536"],
                             capture_output=True, text=True)
        if tbf.returncode != 0:
            return f"the tbf qdisc does not work here: {tbf.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def run(command, timeout=300, **kwargs):
    print("$ " + " ".join(command), flush=True)
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    proc.seconds = time.monotonic() - start
    return proc


def show(proc, lines=60):
    text = (proc.stdout + proc.stderr).rstrip().splitlines()
    print("\n".join("    " + line for line in text[-lines:]), flush=True)


def test_usage_and_root():
    bad = run([WAN, "--nodes", "2", "--link", "100xyz", "--", "--data", "x"])
    check(bad.returncode == 2 and "is not a rate" in bad.stderr,
          f"a bad --link is a usage error (exit 2): got {bad.returncode}, {bad.stderr.strip()!r}")
    names = run([WAN, "--nodes", "3", "--link", "1mbit", "--iface-names", "eth0,ens5", "--run-cmd",
                 "--", "true"])
    check(names.returncode == 2 and "names 2 interfaces for 3 nodes" in names.stderr,
          f"--iface-names must name one or N interfaces: got {names.returncode}")
    queue = run([WAN, "--nodes", "2", "--link", "1mbit", "--queue-ms", "0", "--run-cmd", "--", "true"])
    check(queue.returncode == 2 and "--queue-ms must be" in queue.stderr,
          f"--queue-ms 0 is a usage error (exit 2): got {queue.returncode}, {queue.stderr.strip()!r}")
    cc = run([WAN, "--nodes", "2", "--link", "1mbit", "--congestion-control", "Bad-Name", "--run-cmd", "--", "true"])
    check(cc.returncode == 2 and "is not a congestion control name" in cc.stderr,
          f"a malformed --congestion-control is a usage error (exit 2): got {cc.returncode}")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        print("note: no setpriv; the non-root check is left out")
        return
    # A copy the unprivileged user can reach: the checkout may sit in a directory only root may
    # enter (mktemp -d makes them 0700), which would fail with "Permission denied" instead.
    reachable = tempfile.mkdtemp(prefix="strait-wan-")
    try:
        os.chmod(reachable, 0o755)
        wan = shutil.copy(WAN, os.path.join(reachable, "wan"))
        os.chmod(wan, 0o755)
        user = run([setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
                    wan, "--nodes", "2", "--link", "10mbit", "--run-cmd", "--", "true"])
    finally:
        shutil.rmtree(reachable)
    check(user.returncode == 2 and "needs root: network namespaces and tc" in user.stderr,
          f"not root: exit 2 and says why: got {user.returncode}, {user.stderr.strip()!r}")


def test_failing_node(scratch):
    results = os.path.join(scratch, "failing.json")
    before = namespaces()
    proc = run([WAN, "--nodes", "3", "--link", "10mbit", "--grace", "5", "--queue-ms", "100", "--results", results,
                "--run-cmd", "--", "sh", "-c",
                'echo "node $NODE_RANK on $IFACE"; [ "$NODE_RANK" != 1 ] || exit 7; exec sleep 120'],
               timeout=120)
    ok = check(proc.returncode == 7, f"a failing node's status is the run's: got {proc.returncode}")
    ok &= check("[node 1] node 1 on eth0" in proc.stdout, "node output is prefixed [node i]")
    ok &= check(proc.seconds < 60, f"the other nodes were stopped (run took {proc.seconds:.1f} s)")
    with open(results, encoding="utf-8") as f:
        report = json.load(f)
    check(report["exit_status"] == 7 and report["first_failure_node"] == 1,
          "testbed.json records the first failure")
    check(report["tbf"]["queue_ms"] == 100 and report["tbf"]["limit_bytes"] == 125000
          and report["tcp_congestion_control"] == "cubic" and all("upload" in n["tbf_dropped"] for n in report["nodes"]),
          f"testbed.json records --queue-ms 100 (125 kB at 10 Mbit/s), the default congestion control (cubic) and "
          f"tbf's drops: {report['tbf']}, {report.get('tcp_congestion_control')!r}")
    ours = {n["namespace"] for n in report["nodes"]}
    left = (namespaces() - before) | (ours & namespaces())
    ok &= check(not left, f"no namespace left behind after a failure: {sorted(left)}")
    if not ok:
        show(proc)
    inherited = os.path.join(scratch, "inherited.json")
    proc = run([WAN, "--nodes", "1", "--link", "10mbit", "--congestion-control", "inherit", "--results", inherited,
                "--run-cmd", "--", "true"])
    with open("/proc/sys/net/ipv4/tcp_congestion_control", encoding="utf-8") as f:
        kernel_default = f.read().strip()
    with open(inherited, encoding="utf-8") as f:
        recorded = json.load(f)["tcp_congestion_control"]
    check(proc.returncode == 0 and recorded == kernel_default,
          f"--congestion-control inherit keeps the kernel's default ({kernel_default}): got {recorded!r}")


def prepare_data(strait, scratch):
    corpus = os.path.join(scratch, "corpus")
    os.makedirs(corpus)
    words = ("the jury said it found no evidence that any irregularities took place in the "
             "election of the city which was held on a bright morning in early spring").split()
    for d in range(8):
        with open(os.path.join(corpus, f"doc{d}.txt"), "w", encoding="utf-8") as f:
            for s in range(400):
                f.write(" ".join(words[(s * 7 + d + k) % len(words)] for k in range(12)) + ".\n")
    data = os.path.join(scratch, "data")
    proc = run([strait, "-q", "prepare", corpus, "--out", data, "--format", "text",
                "--val-fraction", "0.125"])
    if proc.returncode != 0:
        show(proc)
        raise SystemExit("cannot prepare the test data")
    return data


def ledger_by_node(summary):
    """{node: {"sent": B, "received": B}} of cross-node bytes from summary.json."""
    by_rank = summary.get("traffic_by_rank")
    if by_rank is None:
        check(False, "summary.json has traffic_by_rank (the ledger's totals of every rank)")
        return None
    if not check(len(by_rank) == NODES * RANKS_PER_NODE,
                 f"traffic_by_rank has one entry per rank ({len(by_rank)})"):
        return None
    nodes = {n: {"sent": 0, "received": 0} for n in range(NODES)}
    for rank, entry in enumerate(by_rank):
        for d in ("sent", "received"):
            nodes[rank // RANKS_PER_NODE][d] += entry["cross_node"][d]
    return nodes


def test_training(strait, scratch):
    data = prepare_data(strait, scratch)
    run_dir = os.path.join(scratch, "run")
    before = namespaces()
    proc = run([WAN, "--nodes", str(NODES), "--nproc-per-node", str(RANKS_PER_NODE),
                "--link", LINK, "--iface-names", ",".join(IFACES), "--strait", strait, "--",
                "train", "--data", data, "--preset", "nano", "--steps", "6", "--batch-size", "4",
                "--seq-len", "64", "--threads", "1", "--precision", "fp32",
                "--eval-every", "0", "--eval-batches", "1",
                "--checkpoint-every", "0", "--log-every", "1", "--out", run_dir],
               timeout=600)
    print(f"run took {proc.seconds:.1f} s", flush=True)
    if not check(proc.returncode == 0,
                 f"2 nodes x 2 ranks with interfaces {IFACES[0]} and {IFACES[1]} train together "
                 f"(exit {proc.returncode})"):
        show(proc)
        return
    check("[node 0] [rank 0] step 6/6" in proc.stdout + proc.stderr,
          "the ranks' output is prefixed [node i] [rank r]")
    with open(os.path.join(run_dir, "testbed.json"), encoding="utf-8") as f:
        testbed = json.load(f)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    check(summary.get("world_size") == NODES * RANKS_PER_NODE and summary.get("strategy") == "ddp",
          f"summary: world_size {summary.get('world_size')}, strategy {summary.get('strategy')}")
    check([n["iface"] for n in testbed["nodes"]] == list(IFACES),
          f"testbed.json names the interfaces {[n['iface'] for n in testbed['nodes']]}")
    ours = {n["namespace"] for n in testbed["nodes"]}
    left = (namespaces() - before) | (ours & namespaces())
    check(not left, f"no namespace left behind: {sorted(left)}")

    ledger = ledger_by_node(summary)
    if ledger is None:
        return
    print(f"header allowance: {HEADER_BYTES_PER_PACKET} bytes per packet; tolerance "
          f"{TOLERANCE:.0%} of the ledger")
    for node in testbed["nodes"]:
        n, delta = node["node"], node["delta"]
        for direction, key in (("sent", "tx"), ("received", "rx")):
            wire, packets = delta[f"{key}_bytes"], delta[f"{key}_packets"]
            payload = wire - HEADER_BYTES_PER_PACKET * packets
            expected = ledger[n][direction]
            off = payload - expected
            check(expected > 0 and abs(off) <= TOLERANCE * expected,
                  f"node {n} ({node['iface']}) {direction}: ledger {expected} B, kernel "
                  f"{wire} B in {packets} packets = {payload} B payload "
                  f"({off:+d} B, {100.0 * off / max(expected, 1):+.2f}%; "
                  f"{delta['tcp_retrans_segs']} TCP retransmissions)")


def test_sigterm_checkpoints(strait, data, scratch):
    """SIGTERM to scripts/wan reaches every rank once, through its node's launcher: the ranks
    finish the step, write a checkpoint and exit 143 (a second signal would make them exit at
    once, without one)."""
    run_dir = os.path.join(scratch, "stopped")
    command = [WAN, "--nodes", "2", "--link", LINK, "--strait", strait, "--", "train", "--data", data,
               "--preset", "nano", "--steps", "100000", "--batch-size", "4", "--seq-len", "64",
               "--threads", "1", "--eval-every", "0", "--checkpoint-every", "0", "--log-every", "1",
               "--out", run_dir]
    print("$ " + " ".join(command), flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in proc.stdout:
        output.append(line)
        if "step 3/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    output += proc.stdout.readlines()
    status = proc.wait(timeout=120)
    text = "".join(output)
    ok = check(status == 143, f"scripts/wan exits 143 after SIGTERM (got {status})")
    ok &= check("[rank 0] strait: stopped by SIGTERM after step" in text,
                "rank 0 (the writer) says at which step it stopped and which checkpoint it wrote")
    for rank in (0, 1):
        ok &= check(f"rank {rank} exited with status 143" in text, f"rank {rank} stopped on the signal (143)")
    ok &= check("second stop signal" not in text, "no rank got the signal twice")
    checkpoints = os.path.join(run_dir, "checkpoints")
    ok &= check(os.path.isdir(checkpoints) and any(name.startswith("step-") for name in os.listdir(checkpoints)),
                "the checkpoint written on the signal is there")
    if not ok:
        print("\n".join("    " + line for line in text.rstrip().splitlines()[-40:]), flush=True)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strait", required=True, help="the strait binary")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return SKIP
    strait = os.path.abspath(args.strait)
    with tempfile.TemporaryDirectory(prefix="strait-testbed-") as scratch:
        test_usage_and_root()
        test_failing_node(scratch)
        test_training(strait, scratch)
        test_sigterm_checkpoints(strait, os.path.join(scratch, "data"), scratch)
    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
