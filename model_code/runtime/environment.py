"""The environment every vidistill process runs in, set before torch and transformers load."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ENVIRONMENT_DEFAULTS = {
    # spinning OpenMP threads starve concurrent torch processes (steps, DataLoader workers)
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",  # models come from local folders, never a hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # step logs, not progress bars
    "TRANSFORMERS_VERBOSITY": "error",
}


def set_environment_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Each of ENVIRONMENT_DEFAULTS where the environment does not set it already."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        environ.setdefault(name, value)


def machine_summary(threads: int | None = None, size: int = 1024, repeats: int = 5) -> dict:
    """What a time or single-seed score depends on: the CPU model, its widest vector ISA, the
    torch threads used and the fp32 matmul speed on them (median of `repeats` n=`size` matmuls).
    Figures from two machines of one kind differed 2.5x: print this beside any of them."""
    import platform
    import statistics
    import time

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = next(
        (
            name
            for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"))
            if flag in flags
        ),
        platform.machine(),
    )
    before = torch.get_num_threads()
    threads = threads or before
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    gflops = 2 * size**3 / statistics.median(times) / 1e9
    return {"cpu": model, "isa": isa, "threads": threads, "fp32_matmul_gflops": round(gflops, 1)}


def machine_line(summary: dict) -> str:
    """One line for a report: 'AMD EPYC, AVX-512, 2 threads, 180 fp32 GFLOP/s (matmul)'."""
    return (
        f"{summary['cpu']}, {summary['isa']}, {summary['threads']} threads, "
        f"{summary['fp32_matmul_gflops']:g} fp32 GFLOP/s (matmul)"
    )
