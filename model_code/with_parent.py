"""`python -m model_code.with_parent MODULE ARGS...` runs `python -m MODULE ARGS...` in a process
that stops when the process that started it dies: on Linux it asks the kernel for SIGTERM at
its parent's death (prctl PR_SET_PDEATHSIG) before the module starts.

The local training launcher runs torchrun this way. A run worker killed with `kill -9` takes
its step process with it (see `stop_with_parent`), and torchrun, told by SIGTERM, stops its
ranks; without this they kept training, and could publish, on a device the `gpu` pool had
already given to the next run."""

from __future__ import annotations

import runpy
import signal
import sys


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask for `sig` when this process's parent dies (Linux; elsewhere a no-op). Returns
    whether it was set. If the parent is already gone, send it now rather than never."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import os

    PR_SET_PDEATHSIG = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python -m model_code.with_parent MODULE [ARGS...]")
    stop_with_parent(signal.SIGTERM)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
