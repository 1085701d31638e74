"""Parse py-spy's collapsed ("raw") stacks.

py-spy writes one line per distinct stack: frames from the root to the leaf joined by
``;``, a space, and the number of samples. Recorded with ``--threads`` each stack starts
with a thread pseudo-frame ``thread (<tid>): <name>``, and with ``--subprocesses`` the
thread frame is preceded by the process chain, outermost first::

    process 8632:"python train.py";process 8689:"python train.py";thread (8689): MainThread;\
<module> (train.py:15);decode (PIL/Image.py:812) 132

Python frames read ``function (file:line)``. Native frames (``--native``) may lack the
file or the line. A process command line may itself hold ``;``: process frames are
recognised by their quoting, not by splitting blindly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_PROCESS = re.compile(r'process (\d+):"(.*?)"(?:;|$)', re.DOTALL)
_THREAD = re.compile(r"thread \((?:0x)?([0-9A-Fa-f]+)\)(?::\s?([^;]*))?(?:;|$)")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str  # "" when unknown (a native frame without symbols)
    line: int  # 0 when unknown

    def label(self) -> str:
        """``function (file:line)``, the way py-spy prints a frame."""
        if not self.file:
            return self.function
        return f"{self.function} ({self.file}:{self.line})" if self.line else f"{self.function} ({self.file})"


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    cmdline: str


@dataclass(frozen=True)
class Stack:
    processes: tuple[ProcessRef, ...]  # outermost (the profiled process) first; empty without --subprocesses
    tid: int | None
    thread_name: str
    frames: tuple[Frame, ...]  # root first, leaf last
    count: int

    @property
    def process(self) -> ProcessRef | None:
        return self.processes[-1] if self.processes else None

    def key(self) -> str:
        """The collapsed line's stack part, as py-spy writes it."""
        parts = [f'process {p.pid}:"{p.cmdline}"' for p in self.processes]
        if self.tid is not None:
            parts.append(
                f"thread ({self.tid}): {self.thread_name}" if self.thread_name else f"thread ({self.tid})"
            )
        parts.extend(f.label() for f in self.frames)
        return ";".join(parts)


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "", 0)
    line = match.group("line")
    return Frame(match.group("name"), match.group("file"), int(line) if line else 0)


def parse_line(line: str) -> Stack | None:
    line = line.rstrip("\r\n")
    stack_text, sep, count_text = line.rpartition(" ")
    if not sep or not count_text.isdigit():
        return None
    rest = stack_text
    processes: list[ProcessRef] = []
    while rest.startswith("process "):
        match = _PROCESS.match(rest)
        if match is None:
            break
        processes.append(ProcessRef(int(match.group(1)), match.group(2)))
        rest = rest[match.end() :]
    tid: int | None = None
    thread_name = ""
    match = _THREAD.match(rest)
    if match is not None:
        raw_tid = match.group(1)
        # py-spy prints the OS thread id in decimal, or the pthread id in hex where it has no OS id.
        tid = int(raw_tid, 16) if rest.startswith("thread (0x") else int(raw_tid)
        thread_name = (match.group(2) or "").strip()
        rest = rest[match.end() :]
    frames = tuple(parse_frame(part) for part in rest.split(";") if part) if rest else ()
    return Stack(tuple(processes), tid, thread_name, frames, int(count_text))


def parse_collapsed(lines: Iterable[str]) -> Iterator[Stack]:
    for line in lines:
        if line.strip():
            stack = parse_line(line)
            if stack is not None:
                yield stack


def parse_text(text: str) -> list[Stack]:
    return list(parse_collapsed(text.splitlines()))
