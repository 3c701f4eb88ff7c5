#!/usr/bin/python3
"""ctest driver for scripts/compare on loopback (no namespaces needed, so it runs everywhere).

  /usr/bin/python3 tests/compare/test_compare.py --strait build/strait

On a tiny byte-level corpus, `nano`, 2 nodes x 1 rank, DDP, DiLoCo and ZeRO++ for 6 steps:
1. the comparison runs both cells on loopback (saying that every method looks fast there),
   leaves OUT/2x1/loopback/<method>/ with run/, log.txt, command.json and done, writes
   OUT/report.html and prints the report's table with both methods and the report's path;
   --outer-lr and --outer-momentum reach DiLoCo's cell alone, and its row in the table;
2. the same command again runs nothing: both cells are reported kept and no file in them
   changes (mtimes);
3. a cell that did not finish (its done stamp, summary and newest checkpoint removed) continues
   from its newest remaining checkpoint (train --resume), and the other cell stays untouched;
4. a cell that fails (an unknown strait train flag after --) stops the comparison with exit
   status 1 naming the cell and its log;
5. an unknown method is a usage error (status 2) with a did-you-mean and the known methods,
   before anything is written.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPARE = os.path.join(REPO, "scripts", "compare")
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

# check(), run(), show() and the tiny corpus are the testbed test's.
from test_testbed import check, failures, prepare_data, run, show  # noqa: E402


def mtimes(root):
    """{path: mtime_ns} of every file under root."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            found[path] = os.stat(path).st_mtime_ns
    return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strait", required=True)
    strait = os.path.abspath(p.parse_args().strait)
    scratch = tempfile.mkdtemp(prefix="strait-compare-test-")
    try:
        data = prepare_data(strait, scratch)
        out = os.path.join(scratch, "out")
        command = [COMPARE, "--loopback", "--strait", strait, "--data", data, "--out", out,
                   "--methods", "ddp,diloco,zero++", "--topologies", "2x1", "--preset", "nano",
                   "--steps", "6", "--batch-size", "2", "--seq-len", "32", "--warmup-steps", "1",
                   "--eval-every", "3", "--eval-batches", "2", "--sync-every", "3", "--outer-lr", "0.5",
                   "--outer-momentum", "0.5", "--checkpoint-every", "3", "--precision", "fp32", "--threads", "1"]
        cells = {m: os.path.join(out, "2x1", "loopback", m) for m in ("ddp", "diloco", "zero++")}

        # 1. Both cells run, the report is written and its table printed.
        first = run(command)
        print(f"first comparison took {first.seconds:.1f} s", flush=True)
        if not check(first.returncode == 0, f"the comparison succeeds (exit {first.returncode})"):
            show(first)
            return
        check("every method looks fast" in first.stderr, "the loopback note says every method looks fast")
        for method, cell in cells.items():
            check(all(os.path.exists(os.path.join(cell, f))
                      for f in ("run/summary.json", "run/metrics.jsonl", "log.txt", "command.json", "done")),
                  f"cell {method} holds run/summary.json, log.txt, command.json and done")
        report = os.path.join(out, "report.html")
        check(os.path.isfile(report), "OUT/report.html is written")
        rows = [line.split() for line in first.stdout.splitlines()]
        check(any(r[:2] == ["ddp", "ddp"] for r in rows), "the report's table lists DDP")
        check(any(r[:2] == ["diloco", "diloco"] and "lr=0.5" in r and "μ=0.5" in r for r in rows),
              "the report's table lists DiLoCo with the outer step that --outer-lr and --outer-momentum set")
        for method, cell in cells.items():
            with open(os.path.join(cell, "command.json"), encoding="utf-8") as f:
                words = json.load(f)[0]
            outer = method == "diloco"
            check(("--outer-lr" in words and "--outer-momentum" in words) == outer,
                  f"cell {method}'s command {'carries' if outer else 'leaves out'} the outer step's flags")
        # One rank a node: ZeRO++ without hpZ (its copies are per node), bf16 on the wire.
        check(any(r[:5] == ["zero++", "zero3", "+qwZ", "+qgZ", "bf16"] for r in rows),
              "the report's table lists ZeRO++ with its switches")
        check(f"report: {report}" in first.stdout, "the report's path is printed last")

        # 2. The same command again runs nothing.
        before = {m: mtimes(cell) for m, cell in cells.items()}
        second = run(command)
        if not check(second.returncode == 0, f"the second comparison succeeds (exit {second.returncode})"):
            show(second)
        for method, cell in cells.items():
            check(f"2x1/loopback/{method}: finished earlier with the same command, kept" in second.stderr,
                  f"the second comparison says cell {method} was kept")
            check(mtimes(cell) == before[method], f"no file of cell {method} changed")
        check(second.seconds < first.seconds, f"nothing ran again ({second.seconds:.1f} s vs {first.seconds:.1f} s)")

        # 3. An unfinished cell continues from its newest checkpoint.
        run_dir = os.path.join(cells["diloco"], "run")
        os.remove(os.path.join(cells["diloco"], "done"))
        os.remove(os.path.join(run_dir, "summary.json"))
        shutil.rmtree(os.path.join(run_dir, "checkpoints", "step-000006"))
        third = run(command)
        if not check(third.returncode == 0, f"the interrupted cell finishes (exit {third.returncode})"):
            show(third)
        check("2x1/loopback/diloco: continues from its newest checkpoint" in third.stderr,
              "the comparison says the unfinished cell continues from its checkpoint")
        with open(os.path.join(cells["diloco"], "log.txt"), encoding="utf-8") as f:
            log = f.read()
        check("--resume" in log and "resumed from" in log and "step-000003" in log,
              "the cell ran with --resume from step-000003 (its log)")
        check(os.path.exists(os.path.join(run_dir, "summary.json")), "the resumed cell has its summary")
        check(mtimes(cells["ddp"]) == before["ddp"], "the finished cell stayed untouched")

        # 4. A failing cell names itself and its log.
        failed_out = os.path.join(scratch, "failed")
        failing = [failed_out if word == out else word for word in command]
        failing[failing.index("ddp,diloco,zero++")] = "ddp"
        fourth = run(failing + ["--", "--no-such-flag", "1"])
        check(fourth.returncode == 1, f"a failing cell ends the comparison with status 1 ({fourth.returncode})")
        ddp_log = os.path.join(failed_out, "2x1", "loopback", "ddp", "log.txt")
        check("cell 2x1/loopback/ddp failed" in fourth.stderr and ddp_log in fourth.stderr,
              "the message names the failed cell and its log")

        # 5. An unknown method is a usage error with a did-you-mean.
        bad_out = os.path.join(scratch, "bad")
        bad = [bad_out if word == out else word for word in command]
        bad[bad.index("ddp,diloco,zero++")] = "ddp,dilco"
        fifth = run(bad)
        check(fifth.returncode == 2, f"an unknown method is a usage error (exit {fifth.returncode})")
        check("unknown method 'dilco' (did you mean 'diloco'?)" in fifth.stderr,
              "the message suggests 'diloco'")
        check("known methods: ddp, zero3, zero++, local-sgd, diloco, streaming-diloco, sparseloco" in fifth.stderr,
              "the message lists the known methods")
        check(not os.path.exists(bad_out), "nothing is written for a usage error")
        if fifth.returncode != 2:
            show(fifth)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        sys.exit(1)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
