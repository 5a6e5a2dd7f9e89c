"""Writes that readers never see half-done: a folder or file is staged beside its final path
and renamed into place; a dead writer's staging leftovers are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from model_code.runtime.processes import alive


def umask() -> int:
    """This process's umask (read without changing it where Linux says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_modes(folder: Path) -> None:
    """Files and folders as a plain write would have made them (0666 / 0777 less the umask):
    temp files and folders are private, and some writers (safetensors) keep that mode."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())
_OWNER = f"{_HOST}.{os.getpid()}"  # in every staging name: whose leftover it is


def remove_dead_leftovers(final: str | Path) -> list[Path]:
    """Remove the staging files and folders of `final` that a killed writer left behind: those
    of this host whose process is gone (a writer on another host, or one still alive, is left
    alone). Returns what was removed. Without this every crash mid-publish leaves a copy."""
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(?:tmp|old)-{re.escape(_HOST)}\.(\d+)-")
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.
    Readers see the old folder or the new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{_OWNER}-"))
    try:
        yield tmp
        publish_modes(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{_OWNER}-"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a binary file object on a temporary sibling of `path`; on success it is synced
    and replaces `path` in one rename, with the mode a plain write would give it. Readers see
    the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{_OWNER}-")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it private; a plain write would not
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
