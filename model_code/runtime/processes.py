"""Whether a process runs."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether the process runs. A killed process whose parent died too stays a zombie until
    the machine's init reaps it (1.9 s in these containers): a zombie is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # not Linux, or gone a moment ago: os.kill's answer stands
    return state not in ("Z", "X")
