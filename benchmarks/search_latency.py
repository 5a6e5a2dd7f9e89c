"""Text-to-video search latency: the search service, which keeps the model and the index
loaded, against a fresh CLI process per query (how search worked before the service).

    python benchmarks/search_latency.py                      # the demo's data/ (or a tiny index)
    python benchmarks/search_latency.py --data-root /elsewhere --repeats 3 --threads 1

Arms, interleaved per query (A, B, A, B, ...), each query of --queries --repeats times:

  service  GET /api/search?q=...&k=K through pipelines.search.app's app (starlette TestClient,
           in this process: ASGI without sockets). create_app's start-up loaded the dual encoder
           and the index once, before the timing; a request is query checks, one text-tower
           pass, one matrix-vector product, the catalog's notes and the JSON.
  cli      `python -m model_code.inference.video_index <index> <model> <query> -k K` as a new
           process: Python start, torch/transformers import, model and index load, one query.

Both arms must return the same top-k keys (checked on every pair). The service's one-off
start-up (app + model + index load, in this process) is reported on its own.

The index: the data root's video_index/index.duckdb and checkpoints/dual_encoder/
pseudo_captions/seed0 (what the demo materializes); when either is absent, a small one is built in a
temp dir first (--clips embedded corpus clips in two shards, build_dual_encoder's default
sizes, untrained: latency does not depend on what the weights learnt).

Threads: this process and every CLI child get OMP_NUM_THREADS / MKL_NUM_THREADS = --threads and
OMP_WAIT_POLICY=PASSIVE, set before torch loads, and torch.set_num_threads(--threads) here.
Other jobs on the same cores slow both arms: read the ratio, and the load average printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = [
    "a red circle moves left",
    "a blue square grows",
    "a green triangle moves up",
    "a yellow square shrinks , then a red circle moves right",
    "a circle",
]


def thread_env(threads: int) -> dict[str, str]:
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }


def build_small_index(root: Path, clips: int) -> None:
    """Two shards of embedded-corpus clips, their catalog rows, an untrained default-size
    pseudo-caption dual encoder and its video index, laid out as the pipeline lays them out."""
    import pandas as pd
    import torch

    from model_code.data import corpus, shards
    from model_code.inference.video_index import write_index
    from model_code.models.dual_encoder import build_dual_encoder, embed_videos
    from resources.storage import ArtifactStore

    store = ArtifactStore(root=str(root))
    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, clips)
    halves = {"embedded-0000": specs[: clips // 2], "embedded-0001": specs[clips // 2 :]}
    for partition, part in halves.items():
        shards.write_shard(store.shard(partition), shards.embedded_clips(part))
        store.write_parquet(
            store.path("clip_index", f"{partition}.parquet"),
            pd.DataFrame(
                {
                    "key": [s.key for s in part],
                    "partition": partition,
                    "alt_text": [corpus.alt_text(s) for s in part],
                }
            ),
        )
    torch.manual_seed(0)
    model = build_dual_encoder([corpus.ground_truth_caption(s) for s in specs] + QUERIES)
    model.save_pretrained(store.dual_encoder("pseudo_captions", seed=0))
    frames = shards.frames_by_key([store.shard(p) for p in halves], model.config.num_frames)
    keys = [s.key for s in specs]
    write_index(
        store.path("video_index", "index.duckdb"),
        keys,
        [p for p, part in halves.items() for _ in part],
        [corpus.ground_truth_caption(s) for s in specs],
        embed_videos(model, [frames[k] for k in keys]),
        "benchmark",
    )


def cli_query(index: Path, model: Path, query: str, k: int, env: dict) -> tuple[float, list[str]]:
    """Seconds for one fresh `python -m model_code.inference.video_index` and the keys it
    printed."""
    t = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_code.inference.video_index",
            str(index),
            str(model),
            query,
            "-k",
            str(k),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    ).stdout
    seconds = time.perf_counter() - t
    return seconds, [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--queries", nargs="+", default=QUERIES)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the queries")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads, each arm")
    parser.add_argument("--clips", type=int, default=200, help="clips of a built index")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()
    env = {**os.environ, **thread_env(args.threads)}
    os.environ.update(thread_env(args.threads))  # before torch loads in this process

    import torch
    from starlette.testclient import TestClient

    from pipelines.search.app import create_app
    from pipelines.search.service import SearchService

    torch.set_num_threads(args.threads)
    root, tmp = Path(args.data_root), None
    service = SearchService(root)
    if not (service.index_path.is_file() and service.model_path.is_dir()):
        tmp = tempfile.TemporaryDirectory(prefix="vidistill-search-")
        root = Path(tmp.name)
        t = time.perf_counter()
        build_small_index(root, args.clips)
        print(
            f"# no index under {args.data_root}: built {args.clips} clips in {root} in "
            f"{time.perf_counter() - t:.1f} s"
        )
        service = SearchService(root)
    try:
        t = time.perf_counter()
        with TestClient(create_app(root, service)) as client:
            startup = time.perf_counter() - t
            clips = client.get("/api/status").json()["clips"]
            client.get("/api/search", params={"q": "warm up", "k": args.k})  # first-call costs
            times: dict[str, list[float]] = {"service": [], "cli": []}
            for _ in range(args.repeats):
                for query in args.queries:
                    t = time.perf_counter()
                    response = client.get("/api/search", params={"q": query, "k": args.k})
                    times["service"].append(time.perf_counter() - t)
                    response.raise_for_status()
                    service_keys = [r["key"] for r in response.json()["results"]]
                    seconds, cli_keys = cli_query(
                        service.index_path, service.model_path, query, args.k, env
                    )
                    times["cli"].append(seconds)
                    if cli_keys != service_keys:
                        raise SystemExit(
                            f"top-{args.k} differ for {query!r}: service "
                            f"{service_keys}, cli {cli_keys}"
                        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    medians = {arm: statistics.median(ts) for arm, ts in times.items()}
    figures = {
        "index_clips": clips,
        "data_root": str(args.data_root) if tmp is None else "temp (built)",
        "k": args.k,
        "threads": args.threads,
        "omp_wait_policy": "PASSIVE",
        "queries_per_arm": len(times["service"]),
        "service_startup_s": round(startup, 3),
        "service_median_ms": round(medians["service"] * 1000, 2),
        "service_max_ms": round(max(times["service"]) * 1000, 2),
        "cli_median_s": round(medians["cli"], 3),
        "cli_max_s": round(max(times["cli"]), 3),
        "cli_over_service": round(medians["cli"] / medians["service"], 1),
        "same_top_k": True,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(
        f"index: {clips} clips; k={args.k}; {args.threads} thread(s), OMP_WAIT_POLICY=PASSIVE; "
        f"load average {figures['loadavg_1m']} on {figures['cpus']} CPUs"
    )
    print(f"service start-up (model + index load, once): {startup:.2f} s")
    print(f"{'arm':8} {'queries':>7} {'median':>10} {'max':>10}")
    print(
        f"{'service':8} {len(times['service']):>7} {medians['service'] * 1000:>8.1f}ms "
        f"{max(times['service']) * 1000:>8.1f}ms"
    )
    print(f"{'cli':8} {len(times['cli']):>7} {medians['cli']:>9.2f}s {max(times['cli']):>9.2f}s")
    print(
        f"cli / service (medians): {figures['cli_over_service']}x; same top-{args.k} keys on "
        "every query"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
