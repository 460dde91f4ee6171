"""CPU training steps when processes share the cores: OpenMP's wait policy and the thread count per process.

A step of a small 2D U-Net (``ronneberger_unet`` at 16 features, batch 8 of 64², forward + backward + Adam) is
timed in child processes, each started fresh so the OpenMP runtime reads its environment:

* ``alone``: one process, the cores' count of threads (torch's default);
* ``shared``: two such processes at once (two runs on one node, or two DDP ranks with torch's default threads),
  each with every core's thread;
* ``shared, split``: the same two processes with ``cores // 2`` threads each (what Lightning's launchers give
  the ranks of a CPU DDP run, ``_set_num_threads_if_needed``, and what a joblib worker gets);

each under ``OMP_WAIT_POLICY`` unset (libgomp's default: spin, then sleep) and ``PASSIVE`` (sleep at once). With
spinning waits a process whose threads outnumber the cores it gets burns its time slices spinning for a thread
that is not running. Printed: median ms per step per process and the ratio to ``alone`` with the default policy,
measured in this run.

Why musclelab leaves the policy alone and splits threads instead (2 cores, load ~2.3 from other jobs, 2026-12-03):
alone 66 ms (PASSIVE 107 ms, 1.62x: the policy costs the single run); two processes with 2 threads each 191 ms
(2.89x, PASSIVE 164 ms); two with 1 thread each 113 ms (1.71x per process, i.e. 1.17x the throughput of one run
alone). A torch run beside another busy process on a machine it counts as its own (a shared node, concurrent test
runs) is the 8-15x slow-down seen in this project's sessions (a 5 min vs 24 s liver-smoke stage): give each
concurrent run ``cpu_threads=<its share of the cores>``.

    python benchmarks/bench_threads.py [--steps 30 --repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[1]))
from musclelab.models import build_model
m = build_model("ronneberger_unet", spatial_dims=2, in_channels=1, out_channels=2, img_size=64,
                features=16, depth=4, norm="batch")
opt = torch.optim.Adam(m.parameters(), 1e-3)
x, y = torch.randn(8, 1, 64, 64), torch.randint(0, 2, (8, 64, 64))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(3):
    step()
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[len(times) // 2] * 1000))
"""


def run(n_procs: int, threads: int, policy: str | None, steps: int) -> list[float]:
    """Median ms per step of each of ``n_procs`` processes started together."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(threads), str(steps)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(n_procs)]
    return [json.loads(p.communicate()[0]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    cases = [("alone", 1, cores), ("shared", 2, cores), ("shared, split", 2, max(1, cores // 2))]
    policies = [None, "PASSIVE"]
    results: dict[tuple[str, str | None], list[float]] = {}
    for _ in range(a.repeats):  # interleaved, so a change of the machine's load hits every case alike
        for name, n, threads in cases:
            for policy in policies:
                results.setdefault((name, policy), []).extend(run(n, threads, policy, a.steps))
    base = statistics.median(results[("alone", None)])
    print(f"{cores} cores, load {os.getloadavg()[0]:.2f}; ms per step per process (median), ratio to alone/default")
    for name, n, threads in cases:
        for policy in policies:
            ms = statistics.median(results[(name, policy)])
            print(f"  {name:14s} {n} x {threads} threads  OMP_WAIT_POLICY={policy or 'unset':7s}  "
                  f"{ms:7.1f} ms  {ms / base:5.2f}x")


if __name__ == "__main__":
    main()
