"""The local Ray instance dies with its driver: a watchdog process that stops what it started.

A driver that starts a local Ray instance (:func:`sweeps.runtime.cluster.start_ray`) is the parent of its
GCS, raylet, agents and workers. When the driver ends normally ``ray.shutdown()`` stops them;
when it is killed (SIGKILL, the OOM killer), Ray's own clean-up does not run and its dashboard
and runtime-env agents outlive it (measured with Ray 2.60; its workers follow their raylet
within seconds). :func:`watch` starts ``python -m sweeps.runtime.reaper <driver pid>`` in a session of
its own (so a signal to the driver's process group does not reach it): it notes the driver's
descendants every second while the driver lives and, once it is gone, stops those that are
still running, SIGTERM first, SIGKILL after :data:`GRACE_S`. Processes are known by PID *and*
start time (``/proc/<pid>/stat``), so a PID the system reuses is never touched, and nothing
that is not a descendant of the driver (a user's own ``ray start`` cluster, another sweep) is
ever signalled. Linux only (``/proc``); elsewhere :func:`watch` does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Seconds between two looks at the driver's descendants.
POLL_S = 1.0
#: Seconds between SIGTERM and SIGKILL.
GRACE_S = 3.0

Identity = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # NOTE: the name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def alive(ident: Identity) -> bool:
    """True while the process ``ident`` (pid, start time) runs."""
    st = _stat(ident[0])
    return st is not None and st[1] == ident[1]


def descendants(root: int) -> set[Identity]:
    """Every live descendant of ``root`` (children, their children, ...)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append((int(entry), st[1]))
    out: set[Identity] = set()
    frontier = [root]
    while frontier:
        for ident in children.get(frontier.pop(), []):
            if ident not in out:
                out.add(ident)
                frontier.append(ident[0])
    return out


def stop(processes: set[Identity], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM the processes still running, SIGKILL those left after ``grace_s``; their pids."""
    left = [p for p in processes if alive(p)]
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid, _ in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return sorted(pid for pid, _ in processes)


def reap(driver: Identity, poll_s: float = POLL_S) -> list[int]:
    """Note ``driver``'s descendants while it lives; stop them when it is gone."""
    known: set[Identity] = set()
    while alive(driver):
        known |= {p for p in descendants(driver[0]) if p[0] != os.getpid()}
        time.sleep(poll_s)
    return stop(known)


def watch(driver_pid: int | None = None) -> subprocess.Popen | None:
    """Start the watchdog of ``driver_pid`` (default: this process); None without ``/proc``."""
    pid = driver_pid or os.getpid()
    st = _stat(pid)
    if st is None:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.runtime.reaper", str(pid), str(st[1])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    reap((int(sys.argv[1]), int(sys.argv[2])))
