"""The collapsed-stack parser, on lines in the exact shape py-spy 0.4 writes."""

from __future__ import annotations

from agent.profiling.stacks import Frame, parse_frame, parse_line, parse_text

# Captured from `py-spy record --format raw --threads --subprocesses` on a fork()ed worker.
WORKER_LINE = (
    'process 8632:"/usr/bin/python3 hot.py";process 8689:"/usr/bin/python3 hot.py";'
    "thread (8689): MainThread;<module> (hot.py:15);BaseProcess._bootstrap (multiprocessing/process.py:314);"
    "worker_decode (hot.py:10);worker_decode.<locals>.<genexpr> (hot.py:10) 132"
)


def test_process_chain_thread_and_frames_are_separated() -> None:
    stack = parse_line(WORKER_LINE)
    assert stack is not None
    assert [(p.pid, p.cmdline) for p in stack.processes] == [
        (8632, "/usr/bin/python3 hot.py"),
        (8689, "/usr/bin/python3 hot.py"),
    ]
    assert stack.process is not None and stack.process.pid == 8689
    assert (stack.tid, stack.thread_name) == (8689, "MainThread")
    assert stack.frames[0] == Frame("<module>", "hot.py", 15)
    assert stack.frames[-1] == Frame("worker_decode.<locals>.<genexpr>", "hot.py", 10)
    assert stack.count == 132


def test_key_round_trips_to_the_same_line() -> None:
    stack = parse_line(WORKER_LINE)
    assert stack is not None
    assert f"{stack.key()} {stack.count}" == WORKER_LINE


def test_thread_names_with_spaces_and_parentheses() -> None:
    stack = parse_line(
        "thread (8690): Thread-1 (idle_thread);Thread.run (threading.py:982);idle_thread (hot.py:13) 99"
    )
    assert stack is not None
    assert stack.processes == ()
    assert (stack.tid, stack.thread_name) == (8690, "Thread-1 (idle_thread)")
    assert [f.function for f in stack.frames] == ["Thread.run", "idle_thread"]


def test_a_sample_with_no_python_frames() -> None:
    # py-spy writes this while an interpreter is shutting down.
    stack = parse_line("thread (10657): MainThread 1")
    assert stack is not None
    assert stack.frames == ()
    assert stack.thread_name == "MainThread" and stack.count == 1


def test_command_line_holding_a_semicolon() -> None:
    stack = parse_line('process 7:"sh -c a;b";thread (7): MainThread;f (x.py:1) 3')
    assert stack is not None
    assert stack.processes[0].cmdline == "sh -c a;b"
    assert stack.frames == (Frame("f", "x.py", 1),)


def test_hex_thread_id_and_native_frames() -> None:
    stack = parse_line("thread (0x7F3A): worker;PyEval_EvalFrameDefault (ceval.c:4200);memcpy (libc.so.6) 5")
    assert stack is not None
    assert stack.tid == 0x7F3A
    assert stack.frames[0] == Frame("PyEval_EvalFrameDefault", "ceval.c", 4200)
    assert stack.frames[1] == Frame("memcpy", "libc.so.6", 0)
    assert parse_frame("anonymous") == Frame("anonymous", "", 0)


def test_garbage_lines_are_skipped() -> None:
    stacks = parse_text("\nnot a stack\nthread (1): MainThread;f (a.py:2) 4\nf (a.py:3) x\n")
    assert len(stacks) == 1
    assert stacks[0].count == 4


def test_frame_label_matches_pyspy() -> None:
    assert Frame("decode", "PIL/Image.py", 812).label() == "decode (PIL/Image.py:812)"
    assert Frame("memcpy", "libc.so.6", 0).label() == "memcpy (libc.so.6)"
    assert Frame("??", "", 0).label() == "??"
