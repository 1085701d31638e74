"""Measure what one ``HostBackend.read`` costs on this machine.

    python -m agent.host.bench [--children 19] [--threads 8] [--reads 300]

Starts a stand-in for a training job (one Python process with ``--threads`` threads
and ``--children`` child processes, each with a few threads of its own), reads the host
with that process as the GPU pid, and prints the wall time and CPU time per read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from agent.host.backend import HostBackend

_JOB = """
import os, sys, threading, time
children, threads = int(sys.argv[1]), int(sys.argv[2])
for _ in range(threads - 1):
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
for _ in range(children):
    if os.fork() == 0:
        for _ in range(2):
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        time.sleep(3600)
        os._exit(0)
print("ready", flush=True)
time.sleep(3600)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=19)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args(argv)

    job = subprocess.Popen(
        [sys.executable, "-c", _JOB, str(args.children), str(args.threads)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert job.stdout is not None
        job.stdout.readline()
        time.sleep(0.2)  # let the children start their threads
        backend = HostBackend()
        first = backend.read({job.pid: (0,)})
        walls: list[float] = []
        cpu0 = time.process_time()
        for _ in range(args.reads):
            t0 = time.perf_counter()
            backend.read({job.pid: (0,)})
            walls.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / args.reads
        threads = sum(p.threads_total for p in first.processes.values())
        host_processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
        walls.sort()
        print(
            f"tracked processes: {len(first.processes)} ({threads} threads); "
            f"processes on the host: {host_processes}; cpus: {first.cpu_count}"
        )
        print(
            f"read(): p50 {statistics.median(walls) * 1e3:.2f} ms, "
            f"p99 {walls[int(len(walls) * 0.99) - 1] * 1e3:.2f} ms, "
            f"CPU {cpu * 1e3:.2f} ms per read ({cpu * 100:.2f} % of a core at 1 s sampling)"
        )
        if first.errors:
            print(f"parts that failed: {first.errors}")
    finally:
        os.killpg(job.pid, 15)
        job.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
