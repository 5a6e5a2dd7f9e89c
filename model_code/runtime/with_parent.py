"""`python -m model_code.runtime.with_parent [--parent PID] MODULE ARGS...` runs `python -m MODULE
ARGS...` in a process that stops when the process that started it dies: on Linux it asks the
kernel for SIGTERM at its parent's death (prctl PR_SET_PDEATHSIG) before the module starts.
`--parent` is the starter's pid: if that one died before the request took effect (the process
was already handed to another parent), it stops at once instead of never.

The local training launcher runs torchrun this way. A run worker killed with `kill -9` takes
its step process with it (`stop_with_starter`), and torchrun, told by SIGTERM, stops its
ranks; without this they kept training, and could publish, on a device the `gpu` pool had
already given to the next run."""

from __future__ import annotations

import runpy
import signal
import sys


def stop_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask for `sig` when this process's parent dies (Linux; elsewhere a no-op). Returns
    whether it was set. `parent`: the pid that started this process, when known; if this
    process's parent is another one by the time the request took effect, the starter is gone
    already, and `sig` is sent now rather than never."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import os

    PR_SET_PDEATHSIG = 1
    parent = os.getppid() if parent is None else parent
    # the signal must be able to stop it: not ignored nor blocked, as a child inherits both
    if signal.getsignal(sig) == signal.SIG_IGN:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def stop_with_starter() -> bool:
    """In a process started by multiprocessing (a Dagster step process, forked by a forkserver
    for its run worker): SIGKILL it once the process that asked for it dies. Its parent in the
    kernel's sense is the forkserver, which outlives a killed run worker, so PR_SET_PDEATHSIG
    would never fire; multiprocessing's parent sentinel closes when the run worker dies.
    SIGKILL, as a Dagster step process only records a SIGTERM. Returns whether it watches."""
    import multiprocessing
    import os
    import threading
    from multiprocessing.connection import wait

    starter = multiprocessing.parent_process()
    if starter is None or starter.sentinel is None:
        return False

    def watch() -> None:
        wait([starter.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="stop-with-starter", daemon=True).start()
    return True


def main(argv: list[str]) -> None:
    parent = None
    if argv[:1] == ["--parent"] and len(argv) > 1:
        parent, argv = int(argv[1]), argv[2:]
    if not argv or argv[0].startswith("-"):
        raise SystemExit(
            "usage: python -m model_code.runtime.with_parent [--parent PID] MODULE [ARGS...]"
        )
    stop_with_parent(signal.SIGTERM, parent)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
