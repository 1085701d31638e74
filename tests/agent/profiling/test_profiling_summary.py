"""Summaries of collapsed stacks: self/total shares, per process and thread, the idle/active split."""

from __future__ import annotations

from agent.profiling.stacks import parse_text
from agent.profiling.summary import ThreadActivity, evidence, format_text, summarize

MAIN = 'process 100:"python train.py"'
WORKER = 'process 100:"python train.py";process 101:"python train.py"'

PROFILE = "\n".join(
    [
        f"{MAIN};thread (100): MainThread;<module> (train.py:50);train_step (train.py:20);"
        "forward (model.py:7) 30",
        f"{MAIN};thread (100): MainThread;<module> (train.py:50);train_step (train.py:21) 10",
        f"{WORKER};thread (101): MainThread;_worker_loop (worker.py:300);fetch (fetch.py:50);"
        "decode (PIL/Image.py:812) 93",
        f"{WORKER};thread (101): MainThread;_worker_loop (worker.py:300);fetch (fetch.py:50);"
        "decode (PIL/Image.py:815) 31",
        f"{WORKER};thread (101): MainThread;_worker_loop (worker.py:300);collate (collate.py:9) 26",
        # recursion: total counts a function once per sample
        f"{MAIN};thread (102): pin;loop (pin.py:1);loop (pin.py:1);loop (pin.py:2) 10",
    ]
)


def _summary(**kwargs: object) -> dict[str, object]:
    return summarize(parse_text(PROFILE), root_pid=100, rate_hz=100, duration_seconds=2.0, **kwargs)  # type: ignore[arg-type]


def test_totals_and_top_self() -> None:
    s = _summary()
    assert s["samples"] == 200
    top = s["top_self"]
    assert isinstance(top, list)
    # decode's two lines add up; the hottest line is the one shown.
    assert top[0]["function"] == "decode"
    assert top[0]["samples"] == 124
    assert top[0]["share"] == 0.62
    assert top[0]["label"] == "decode (PIL/Image.py:812)"
    assert [row["function"] for row in top[1:4]] == ["forward", "collate", "loop"]


def test_total_share_counts_each_sample_once() -> None:
    s = _summary()
    totals = {row["function"]: row for row in s["top_total"]}  # type: ignore[union-attr]
    assert totals["_worker_loop"]["samples"] == 150
    assert totals["<module>"]["samples"] == 40
    assert totals["train_step"]["samples"] == 40
    assert totals["loop"]["samples"] == 10  # not 30: recursion does not inflate it
    # a function that never ran itself shows the line it called from
    assert totals["fetch"]["label"] == "fetch (fetch.py:50)"


def test_per_process_and_thread() -> None:
    s = _summary()
    procs = {p["pid"]: p for p in s["processes"]}  # type: ignore[union-attr]
    assert procs[100]["role"] == "main" and procs[100]["samples"] == 50
    assert procs[101]["role"] == "worker" and procs[101]["samples"] == 150
    assert procs[101]["parent_pid"] == 100
    assert procs[101]["cmdline"] == "python train.py"
    threads = {t["tid"]: t for t in procs[100]["threads"]}
    assert threads[100]["samples"] == 40 and threads[102]["name"] == "pin"
    assert threads[100]["top_self"][0]["function"] == "forward"
    # 40 samples in 200 ticks (100 Hz x 2 s): py-spy saw it running a fifth of the time
    assert threads[100]["sampled_active_ratio"] == 0.2
    assert s["workers"]["samples"] == 150  # type: ignore[index]
    assert s["workers"]["pids"] == [101]  # type: ignore[index]


def test_idle_active_split_from_thread_cpu_time() -> None:
    activity = [
        ThreadActivity(100, 100, "python", cpu_seconds=0.4, wall_seconds=2.0),
        ThreadActivity(100, 102, "pin", cpu_seconds=0.0, wall_seconds=2.0),
        ThreadActivity(101, 101, "python", cpu_seconds=1.9, wall_seconds=2.0),
        # a thread that appeared half-way; CPU above its wall time is clamped
        ThreadActivity(101, 103, "helper", cpu_seconds=1.5, wall_seconds=1.0),
    ]
    s = _summary(activity=activity)
    split = s["activity"]
    assert split["active_seconds"] == 0.4 + 1.9 + 1.0  # type: ignore[index]
    assert split["idle_seconds"] == 1.6 + 2.0 + 0.1  # type: ignore[index]
    assert split["threads"] == 4  # type: ignore[index]
    procs = {p["pid"]: p for p in s["processes"]}  # type: ignore[union-attr]
    assert procs[101]["cpu_cores"] == 1.45  # 2.9 CPU-seconds over a 2 s capture
    threads = {t["tid"]: t for t in procs[100]["threads"]}
    assert threads[100]["active_ratio"] == 0.2
    assert threads[102]["active_ratio"] == 0.0
    # a thread py-spy never sampled still appears, from its CPU time
    assert any(t["tid"] == 103 and t["samples"] == 0 for t in procs[101]["threads"])


def test_evidence_quotes_worker_samples() -> None:
    # 124 of the 150 worker samples
    assert evidence(_summary()) == "83 % of worker samples in decode (PIL/Image.py:812)"


def test_evidence_without_workers_names_the_process() -> None:
    s = summarize(
        parse_text(
            "thread (7): MainThread;<module> (a.py:1);hot (a.py:3) 40\n"
            "thread (7): MainThread;cold (a.py:9) 10"
        ),
        root_pid=7,
        rate_hz=100,
        duration_seconds=1.0,
    )
    assert evidence(s) == "80 % of samples of pid 7 in hot (a.py:3)"


def test_no_evidence_from_too_few_samples() -> None:
    s = summarize(
        parse_text("thread (7): MainThread;hot (a.py:3) 3"), root_pid=7, rate_hz=100, duration_seconds=1
    )
    assert evidence(s) is None


def test_empty_capture() -> None:
    s = summarize([], root_pid=7, rate_hz=100, duration_seconds=1.0)
    assert s["samples"] == 0 and s["top_self"] == [] and s["processes"] == []
    assert evidence(s) is None


def test_text_rendering_names_the_hot_function() -> None:
    text = format_text(_summary())
    assert "200 samples at 100 Hz" in text
    assert "62.0 %      124  decode (PIL/Image.py:812)" in text
    assert "pid 101 (worker)" in text
    assert text.rstrip().endswith("In short: 83 % of worker samples in decode (PIL/Image.py:812)")
