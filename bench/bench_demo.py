"""Does ``gpulse demo --speed 20`` keep up? Run the default scenario for 30 s of wall time and measure.

Prints:
* the simulated-clock drift: how far the agent's samples fell behind the scaled clock,
  as 1 - (simulated time the samples advanced) / (speed x wall time), over the run;
* the samples taken against those expected (simulated span / sampling interval);
* the demo process's CPU as % of one core (the whole process: agent, fake NVML and physics) and RSS.

Usage: python bench/bench_demo.py [--speed 20] [--seconds 30] [--scenario default]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from agent.sim.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sampled_at(url: str) -> float:
    gpus = _get(url + "api/v1/gpus")
    assert isinstance(gpus, list) and gpus
    return float(gpus[0]["sampled_at"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="wall seconds to run")
    parser.add_argument("--scenario", default="default")
    args = parser.parse_args()

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        "demo",
        "--scenario",
        args.scenario,
        "--speed",
        f"{args.speed:g}",
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = None
        start = time.monotonic()
        while url is None and time.monotonic() - start < 120:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"the demo exited: rc {proc.poll()}")
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url is not None
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never let a full pipe block it
        while True:  # wait for the first complete sample
            try:
                urllib.request.urlopen(url + "readyz", timeout=5).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)
        wall0, sim0, cpu0 = time.monotonic(), _sampled_at(url), _cpu_seconds(proc.pid)
        time.sleep(args.seconds)
        wall1, sim1, cpu1 = time.monotonic(), _sampled_at(url), _cpu_seconds(proc.pid)
        rss = _rss_mib(proc.pid)
        span = sim1 - sim0
        history = _get(url + f"api/v1/gpus/0/history?seconds={min(span, 900.0):.3f}")
        assert isinstance(history, dict)
        samples = len(history["readings"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    wall = wall1 - wall0
    expected = args.speed * wall
    drift = 1.0 - span / expected
    interval = 1.0
    print(f"scenario {args.scenario}, speed {args.speed:g}x, {wall:.1f} s wall, {os.cpu_count()} CPUs")
    print(
        f"simulated time sampled: {span:.1f} s of {expected:.1f} s -> drift {100 * drift:+.2f} % "
        f"(target within 2 %)"
    )
    print(f"samples of GPU 0: {samples} of {min(span, 900.0) / interval:.0f} expected")
    print(f"demo process CPU: {100 * (cpu1 - cpu0) / wall:.1f} % of one core; RSS {rss:.0f} MiB")
    return 0 if abs(drift) <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
