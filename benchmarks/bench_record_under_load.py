"""MapRecord.speedup against the measured one while other programs load the machine.

    python benchmarks/bench_record_under_load.py --busy 3 --session other
    python benchmarks/bench_record_under_load.py --busy 2 --session same

Starts ``--busy`` programs that spin, in a session of their own (``other``: as programs of other
terminals, services or containers, which Linux schedules as groups) or in this script's (``same``),
then times, round by round, a loop and a 2-worker process pool over the same 30 items of ~13 ms and
prints the measured speedup beside the record's. The busy programs are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings

from payoff import ParallelConfig, ParallelExecutor


def work(j: int) -> int:
    total = 0
    for k in range(300_000):
        total += k % (j + 2)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", type=int, default=3, help="programs that spin beside the run")
    parser.add_argument("--session", choices=["other", "same"], default="other")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=args.session == "other")
            for _ in range(args.busy)]
    try:
        with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2)) as ex:
            ex.map(work, range(4))
            for n in range(args.rounds):
                t = time.perf_counter()
                for j in range(30):
                    work(j)
                loop = time.perf_counter() - t
                t = time.perf_counter()
                ex.map(work, range(30))
                pool = time.perf_counter() - t
                rec = ex.last_record
                print(f"round {n}: loop {loop:.2f} s, pool {pool:.2f} s: measured {loop / pool:.2f}x, "
                      f"MapRecord.speedup {rec.speedup:.2f}x ({rec.speedup / (loop / pool) - 1:+.0%})", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
