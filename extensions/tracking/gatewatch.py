"""Watching a gate probe's child: read its result channel and stderr, bounded, until it ends.

One loop (:func:`supervise`) for both ways :mod:`.gatesandbox` runs a child: a child of this
process (:class:`LocalChild`: ours to kill and reap) and a child of the runner service
(:class:`RunnerChild`: the service answers how it ended on our connection, and kills it when we
hang up). What it returns is a :class:`.gateverdict.ChildRun` for the verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import time
from typing import Any

from .gateverdict import MAX_RESULT_BYTES, MAX_STDERR_BYTES, ChildRun

# after the child exits or sends its result, how long grandchildren may keep the pipes open
EXIT_GRACE_S = 1.0
MAX_ANSWER = 64 << 10


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its pid, which is also its process
    group's id, cannot be reused before we kill the group)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalChild:
    """A child this process started: it is ours to watch, kill and reap."""

    control = None
    timed_out = False
    refused = None

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def exited(self) -> bool:
        return _exited(self.proc.pid)

    def finish(self, wait: bool) -> int | None:
        # The leader is not reaped yet, so its pid still names the group: kill everything in it
        kill_group(self.proc.pid)
        self.proc.wait()
        return self.proc.returncode


class RunnerChild:
    """A child the runner service started for us: it answers on ``conn`` how the child ended,
    and kills the child's process group when we hang up."""

    def __init__(self, conn: socket.socket):
        self.control = conn
        self.done = False
        self.returncode: int | None = None
        self.timed_out = False
        self.refused: str | None = None

    def exited(self) -> bool:
        return self.done

    def on_control(self) -> bool:
        """Read one answer; False once the runner service hung up."""
        try:
            data = self.control.recv(MAX_ANSWER)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return True
        except OSError:
            data = b""
        if not data:
            if not self.done:
                self.done = True
                self.refused = (
                    "the gate's sandbox (the runner service) stopped before the model "
                    "finished; publish again"
                )
            return False
        try:
            answer = json.loads(data)
        except ValueError:
            return True
        if not isinstance(answer, dict):
            return True
        if "error" in answer:
            self.done = True
            self.refused = f"the runner service refused the gate probe: {answer['error']}"
        elif "exit" in answer:
            self.done = True
            code = answer["exit"]
            self.returncode = code if isinstance(code, int) and not isinstance(code, bool) else None
            self.timed_out = answer.get("timed_out") is True
        return True

    def finish(self, wait: bool) -> int | None:
        deadline = time.monotonic() + (EXIT_GRACE_S if wait else 0)
        # its answer may come just after the pipes closed
        while not self.done and (left := deadline - time.monotonic()) > 0:
            self.control.settimeout(left)
            if not self.on_control():
                break
        self.control.close()  # the runner service kills what is left of the child
        return self.returncode


def supervise(out_fd: int, err_fd: int, child, timeout_s: float) -> ChildRun:
    """Read the child's result channel and stderr until both close (or the child ended a
    grace period ago, or ``timeout_s`` passed), then end it."""
    started = time.monotonic()
    deadline = started + timeout_s
    messages: list[dict[str, Any]] = []
    pending = bytearray()
    received = 0
    stderr = bytearray()
    timed_out = overflow = False
    done_at = None  # when the child exited or sent its result
    sel = selectors.DefaultSelector()
    sel.register(out_fd, selectors.EVENT_READ, "out")
    sel.register(err_fd, selectors.EVENT_READ, "err")
    if child.control is not None:
        sel.register(child.control, selectors.EVENT_READ, "control")
    open_pipes = 2
    returncode = None
    try:
        while open_pipes:
            now = time.monotonic()
            if done_at is None and child.exited():
                done_at = now
            if done_at is not None and now >= done_at + EXIT_GRACE_S:
                break  # a grandchild holds the pipes open: the group is killed below
            if now >= deadline:
                timed_out = done_at is None
                break
            for key, _ in sel.select(min(deadline - now, 0.2)):
                if key.data == "control":
                    if not child.on_control():
                        sel.unregister(key.fileobj)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                if key.data == "err":
                    stderr += data
                    del stderr[:-MAX_STDERR_BYTES]
                    continue
                received += len(data)
                if received > MAX_RESULT_BYTES:
                    overflow = True
                    break
                pending += data
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # not ours: the result is checked for shape later
                    if isinstance(message, dict):
                        messages.append(message)
                        if "result" in message and done_at is None:
                            done_at = time.monotonic()
            if overflow:
                break
    finally:
        sel.close()
        returncode = child.finish(wait=not (timed_out or overflow))
    return ChildRun(
        messages,
        bytes(stderr),
        returncode,
        timed_out or child.timed_out,
        overflow,
        round(time.monotonic() - started, 3),
        refused=child.refused,
    )
