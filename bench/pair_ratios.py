#!/usr/bin/env python3
"""Per-round ratios between any two sides of a bench/throughput.py report.

throughput.py reports every side against one baseline; other comparisons (strait bf16-mixed vs
strait fp32, strait bf16-mixed vs PyTorch autocast) come from the same rounds: each round ran
every side once, back to back, so the ratio of two sides within a round is a side-by-side one.

  bench/pair_ratios.py bench/out/throughput.json strait:bf16-mixed/strait:fp32 strait:bf16-mixed/pytorch:bf16-autocast
"""
import json
import statistics
import sys


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        report = json.load(f)
    print("| preset | threads | ratio | median | min–max | per round |")
    print("|---|---:|---|---:|---:|---|")
    for pair in argv[1:]:
        numerator, denominator = pair.split("/")
        for case in report["results"]:
            ratios = [r["runs"][numerator]["tokens_per_s"] / r["runs"][denominator]["tokens_per_s"]
                      for r in case["rounds"]]
            print(f"| {case['preset']} | {case['threads']} | {numerator} / {denominator} | "
                  f"{statistics.median(ratios):.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× | "
                  f"{', '.join(f'{x:.2f}' for x in ratios)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
