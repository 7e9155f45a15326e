#!/usr/bin/env python3
"""Independent oracle of UniPool-lock's coverage partition (model/lock_partition.h, coverage_partition).

Solves the same binary MILP with scipy.optimize.milp (HiGHS), exactly: the objective is the integer
tie-break tieint(l, e) = (rank_l(e) + 1)·(M + 1) + e + 1 and mip_rel_gap = 0 (HiGHS's absolute gap,
1e-6, is below the objective's step of 1), so the optimum value is proven. HiGHS's presolve is off:
with it, the HiGHS of Debian 12's scipy 1.10.1 returned a 16×64 pool's partition of tie sum 14560
as optimal (dual bound 14560) where one of 14430 exists (found by CBC and by HiGHS without presolve).

  minimise  Σ tieint(l, e)·x[l][e]   over x[l][e] ∈ {0, 1}
  s.t.      Σ_e x[l][e] = K,  Σ_l x[l][e] = 1,  Σ_e (C[l][e] / Σ_e C[l][e])·x[l][e] ≥ coverage
            (the last only for layers with a non-zero total)

rank_l(e): the position of e when layer l's counts are sorted descending, ties to the lower id.

stdin:  {"counts": [[...], ...], "coverage": 0.95}
        or {"problems": [{"counts": ..., "coverage": ...}, ...]} to solve several in one run
stdout: {"status": "optimal" | "infeasible", "sets": [[sorted ids], ...] (optimal only),
         "objective": Σ tieint of the sets (optimal only), "unique": whether no other partition has
         that objective (optimal only: a second solve with the sets cut off)},
        or {"results": [...]} for "problems".
Used by tests/test_lock_partition.cpp, which skips when scipy is missing.
"""
import json
import sys

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def tie_ints(counts):
    L, M = len(counts), len(counts[0])
    tie = np.zeros((L, M))
    for l in range(L):
        order = sorted(range(M), key=lambda e: -counts[l][e])  # stable: ties to the lower id
        for rank, e in enumerate(order):
            tie[l][e] = (rank + 1) * (M + 1) + e + 1
    return tie


def solve(problem):
    counts = problem["counts"]
    coverage = float(problem["coverage"])
    L, M = len(counts), len(counts[0])
    K = M // L
    tie = tie_ints(counts)
    n = L * M  # column l*M + e is x[l][e]
    rows, lb, ub = [], [], []
    for l in range(L):
        row = np.zeros(n)
        row[l * M:(l + 1) * M] = 1
        rows.append(row), lb.append(K), ub.append(K)
    for e in range(M):
        row = np.zeros(n)
        row[e::M] = 1
        rows.append(row), lb.append(1), ub.append(1)
    for l in range(L):
        total = sum(counts[l])
        if total > 0:
            row = np.zeros(n)
            row[l * M:(l + 1) * M] = np.array(counts[l], dtype=float) / total
            rows.append(row), lb.append(coverage), ub.append(np.inf)
    def run(rows, lb, ub):
        res = milp(c=tie.reshape(n), integrality=np.ones(n), bounds=Bounds(0, 1),
                   constraints=LinearConstraint(np.array(rows), lb, ub),
                   options={"mip_rel_gap": 0, "presolve": False, "disp": False})
        if res.status not in (0, 2):  # 2: infeasible
            raise SystemExit(f"partition_milp.py: HiGHS stopped without an optimum: {res.message}")
        return res

    res = run(rows, lb, ub)
    if res.status == 2:
        return {"status": "infeasible"}
    x = np.round(res.x).reshape(L, M)
    sets = [[int(e) for e in range(M) if x[l][e] > 0.5] for l in range(L)]
    objective = int(sum(tie[l][e] for l in range(L) for e in sets[l]))
    # Unique when every other partition (at most M − 1 of the chosen pairs) costs more.
    cut = np.round(res.x)
    second = run(rows + [cut], lb + [-np.inf], ub + [M - 1])
    unique = second.status == 2 or round(second.fun) > objective
    return {"status": "optimal", "sets": sets, "objective": objective, "unique": bool(unique)}


def main():
    request = json.load(sys.stdin)
    if "problems" in request:
        out = {"results": [solve(p) for p in request["problems"]]}
    else:
        out = solve(request)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
