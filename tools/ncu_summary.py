#!/usr/bin/env python3
"""Sums an Nsight Compute CSV per kernel: where a training step's GPU time goes.

Input: `ncu --csv --print-units base --metrics gpu__time_duration.sum,...  PROGRAM` as written by
scripts/gpu_check.sh's `profile` step (the program's own output may be mixed in: only the lines of
ncu's table are read). Output: one line per kernel name, by total time, with its launches, the
time per step (--steps: how many steps the profiled run made) and the mean of every other metric
(e.g. DRAM and SM throughput, % of peak), then the total.

Usage: tools/ncu_summary.py FILE.csv [--steps N] [--top K]
"""
import argparse
import collections
import csv
import sys

TIME = "gpu__time_duration.sum"


def read_rows(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]
    header_at = next((i for i, line in enumerate(lines) if '"Kernel Name"' in line), None)
    if header_at is None:
        sys.exit(f"ncu_summary: no ncu CSV table (a \"Kernel Name\" header) in {path}")
    return list(csv.DictReader(lines[header_at:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    # (launch id, kernel) -> {metric: value}
    launches = collections.defaultdict(dict)
    for row in read_rows(args.csv):
        try:
            value = float(row["Metric Value"].replace(",", ""))
        except (KeyError, ValueError):
            continue
        launches[(row.get("ID", ""), row["Kernel Name"])][row["Metric Name"]] = value
    if not launches:
        sys.exit(f"ncu_summary: the table in {args.csv} has no metric values")

    per_kernel = collections.defaultdict(lambda: {"count": 0, "time": 0.0, "metrics": collections.defaultdict(list)})
    for (_, name), metrics in launches.items():
        k = per_kernel[name.split("(")[0].strip()]
        k["count"] += 1
        k["time"] += metrics.get(TIME, 0.0)
        for metric, value in metrics.items():
            if metric != TIME:
                k["metrics"][metric].append(value)

    total = sum(k["time"] for k in per_kernel.values())
    others = sorted({m for k in per_kernel.values() for m in k["metrics"]})
    short = [m.split("__")[0] + " " + m.split(".")[0].split("__")[-1] for m in others]
    print(f"{'kernel':60} {'launches':>8} {'ms/step':>9} {'share':>6}  " + "  ".join(f"{s:>22}" for s in short))
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1]["time"])
    for name, k in ranked[: args.top]:
        means = [sum(k["metrics"][m]) / len(k["metrics"][m]) if k["metrics"][m] else float("nan") for m in others]
        print(f"{name[:60]:60} {k['count']:>8} {k['time'] / 1e6 / args.steps:>9.3f} "
              f"{100.0 * k['time'] / total if total else 0:>5.1f}%  " + "  ".join(f"{v:>21.1f}%" for v in means))
    print(f"{'total':60} {sum(k['count'] for k in per_kernel.values()):>8} {total / 1e6 / args.steps:>9.3f}")


if __name__ == "__main__":
    main()
