"""Dual-encoder train step with its data path: how much of a step the loop waits for data.

    python benchmarks/dual_encoder.py                      # all arms, 8 shards x 150 clips
    python benchmarks/dual_encoder.py --data synthetic     # the train step alone (no shards)
    python benchmarks/dual_encoder.py --shards 2 --clips-per-shard 100 --steps 10 --repeats 1

Arms (--data), each timed in its own child process, interleaved (A, B, C, A, B, C, ...):

  synthetic  uint8 frames already in memory as one tensor: the train step alone, the baseline
  streaming  model_code.data.pair_data.ShardPairs over webdataset shards, through the
             DataLoader that pair_batches builds (--stream-workers DataLoader workers, default
             2, as the retrieval asset sets); every pass decodes the clips again
  memory     shards.frames_by_key (decoded once, up front, by its decode processes), then a list
             of (frames, caption) pairs through pair_batches' DistributedSampler DataLoader
             (--memory-workers, default 0, as the retrieval asset leaves it); the up-front decode
             is reported on its own and is not part of the steps
  loader     the streaming DataLoader alone, no training: what the data path can deliver

The shards are built first in a temp dir (or --shard-dir, reused when present) from the
embedded corpus, like the default pipeline: --shards x --clips-per-shard clips of the "corpus"
split, ground-truth captions. The model is build_dual_encoder's default and the step is the one
of train_dual_encoder (tokenize, forward under autocast, InfoNCE, backward, clip, AdamW, LR
schedule, logit-scale clamp, loss.item()).

Per arm: the first batch's wait on its own (worker start-up and the first decode), --warmup
steps, then --steps timed steps, each split into wait (blocked in next(batches)) and step
(compute). wait share = wait / (wait + step); "pass-start" waits are those of the first batch
of a pass over the data (map-style data restarts its DataLoader each pass); "stalls" counts the
timed waits over 50 ms. The loader's workers run on the same cores as the step, so decoding
can also show up as slower steps rather than as waits: read the wait share together with
clips/s relative to the synthetic arm.

Threads: every child gets OMP_NUM_THREADS / MKL_NUM_THREADS = --threads, OMP_WAIT_POLICY=PASSIVE
and torch.set_num_threads(--threads). On CPUs shared with other jobs libgomp's spinning threads
otherwise slow every process down many times over, decode workers included.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("synthetic", "streaming", "memory", "loader")
TARGET_WAIT_SHARE = 0.05  # the target: the loop waits for data < 5% of step time
STALL_S = 0.05  # a wait longer than this counts as a stall


# --- data ------------------------------------------------------------------------------------


def corpus_specs(n_shards: int, clips_per_shard: int):
    from model_code.data import corpus

    return corpus.split_specs("corpus", corpus.CorpusConfig(), 0, n_shards * clips_per_shard)


def corpus_captions(specs) -> dict[str, list[str]]:
    from model_code.data import corpus

    return {s.key: [corpus.ground_truth_caption(s)] for s in specs}


def shard_paths(folder: Path, n_shards: int) -> list[str]:
    return [str(folder / f"embedded-{i:04d}.tar") for i in range(n_shards)]


def build_shards(folder: Path, n_shards: int, clips_per_shard: int) -> tuple[list[str], float]:
    """The embedded corpus as webdataset shards (as the clip_shards asset writes them); shards
    already there are kept. (paths, seconds spent writing)."""
    from model_code.data import corpus, shards

    t = time.perf_counter()
    paths = shard_paths(folder, n_shards)
    for i, path in enumerate(paths):
        if not Path(path).exists():
            specs = corpus.split_specs(
                "corpus", corpus.CorpusConfig(), i * clips_per_shard, (i + 1) * clips_per_shard
            )
            shards.write_shard(path, shards.embedded_clips(specs))
    return paths, time.perf_counter() - t


def batches_per_pass(
    arm: str, paths: list[str], captions, batch_size: int, workers: int, n_pairs: int
) -> int:
    """Batches in one pass over the data, as the DataLoader cuts it: an IterableDataset with
    drop_last=True drops each worker's last partial batch (ShardPairs splits every shard's
    clips i::n over the workers); the DistributedSampler path drops one per pass."""
    if arm == "memory":
        return n_pairs // batch_size
    from model_code.data.shards import shard_members

    readers = max(1, workers)
    per_reader = [0] * readers
    for path in paths:
        members = shard_members(path, lambda reject: None)
        for r in range(readers):
            per_reader[r] += sum(len(captions.get(m.key, ())) for m in members[r::readers])
    return sum(n // batch_size for n in per_reader)


# --- one arm, in a child process ---------------------------------------------------------------


def run_arm(a: argparse.Namespace) -> dict:
    import itertools

    import numpy as np
    import torch

    from model_code.data import shards
    from model_code.data.pair_data import ShardPairs, pair_batches
    from model_code.models.dual_encoder import build_dual_encoder
    from model_code.training.common import (
        autocast,
        cosine_with_warmup,
        pick_device,
        seed_everything,
    )
    from model_code.training.contrastive import contrastive_loss
    from model_code.training.train_dual_encoder import DualEncoderTrainConfig

    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    arm, bs = a.arm, a.batch_size
    specs = corpus_specs(a.shards, a.clips_per_shard)
    captions = corpus_captions(specs)
    texts = [c for cs in captions.values() for c in cs]
    config = DualEncoderTrainConfig(batch_size=bs, device=a.device, seed=0)
    seed_everything(config.seed)
    sizes = {k: v for k, v in vars(a).items() if k in SIZE_ARGS and v is not None}
    model = build_dual_encoder(texts, num_frames=a.num_frames, **sizes)

    row: dict = {"arm": arm, "batch_size": bs}
    paths = shard_paths(Path(a.shard_dir), a.shards) if a.shard_dir else []
    if arm == "synthetic":
        frames = torch.from_numpy(
            np.random.default_rng(0).integers(
                0, 256, size=(bs, a.num_frames, a.frame_size, a.frame_size, 3), dtype=np.uint8
            )
        )
        batches = itertools.repeat((frames, [texts[i % len(texts)] for i in range(bs)], None))
        per_pass = 0
    elif arm in ("streaming", "loader"):
        config.num_workers = a.stream_workers
        pairs = ShardPairs(paths, captions, a.num_frames, seed=config.seed)
        batches = pair_batches(pairs, config, 0, 1)
        per_pass = batches_per_pass(arm, paths, captions, bs, a.stream_workers, 0)
        row["workers"] = a.stream_workers
    elif arm == "memory":
        config.num_workers = a.memory_workers
        t = time.perf_counter()
        frames_of = shards.frames_by_key(paths, a.num_frames)
        row["decode_s"] = time.perf_counter() - t
        pairs = [(frames_of[k], c) for k, cs in captions.items() if k in frames_of for c in cs]
        row["decoded_clips"] = len(frames_of)
        batches = pair_batches(pairs, config, 0, 1)
        per_pass = batches_per_pass(arm, paths, captions, bs, a.memory_workers, len(pairs))
        row["workers"] = a.memory_workers
    else:
        raise ValueError(f"unknown arm {arm!r}")
    row["batches_per_pass"] = per_pass

    model.to(device).train()
    model.config.loss = config.loss
    model.logit_bias.requires_grad_(False)  # InfoNCE has no bias
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = cosine_with_warmup(optimizer, config.warmup_steps, config.steps)

    def train_step(frames, texts_):
        """train_dual_encoder's step, one process."""
        tokens = model.tokenize(texts_)
        with autocast(device):
            out = model(
                frames=frames.to(device, non_blocking=True),
                input_ids=tokens["input_ids"].to(device),
                attention_mask=tokens["attention_mask"].to(device),
            )
        loss = contrastive_loss(out.video_embeds.float(), out.text_embeds.float(), out.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, float(np.log(100.0)))
        return loss.item()  # syncs, as train_dual_encoder's window.append(loss.item()) does

    waits, steps = [], []
    cpu0 = time.process_time()
    for _ in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        frames, texts_, _ = next(batches)
        t1 = time.perf_counter()
        if arm != "loader":
            train_step(frames, texts_)
        waits.append(t1 - t0)
        steps.append(time.perf_counter() - t1)
    timed_w, timed_s = waits[a.warmup :], steps[a.warmup :]
    starts = [i - a.warmup for i in range(a.warmup, len(waits)) if per_pass and i % per_pass == 0]
    steady_w = [w for i, w in enumerate(timed_w) if i not in starts]
    steady_s = [s for i, s in enumerate(timed_s) if i not in starts]
    wait, step = sum(timed_w), sum(timed_s)
    row.update(
        {
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "device": str(device),
            "steps": a.steps,
            "first_wait_s": waits[0],
            "wait_s": wait,
            "step_s": step,
            "wait_share": wait / (wait + step),
            "steady_wait_share": sum(steady_w) / max(1e-12, sum(steady_w) + sum(steady_s)),
            "pass_starts": len(starts),
            "pass_start_wait_ms": 1e3 * statistics.mean([timed_w[i] for i in starts])
            if starts
            else None,
            "stalls": sum(w > STALL_S for w in timed_w),
            "step_ms": 1e3 * statistics.median(timed_s),
            "wait_ms": 1e3 * wait / a.steps,
            "clips_per_s": a.steps * bs / (wait + step),
            "main_cpu_s": time.process_time() - cpu0,  # this process's threads, not the workers'
            "waits_ms": [round(1e3 * w, 1) for w in timed_w],
        }
    )
    return row


# --- the parent: shards, children, table -----------------------------------------------------

SIZE_ARGS = (
    "image_size",
    "patch_size",
    "vision_width",
    "vision_layers",
    "text_width",
    "text_layers",
    "temporal_layers",
)


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",
        }
    )
    return env


def run_child(a: argparse.Namespace, arm: str, batch_size: int, shard_dir: str | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--batch-size",
        str(batch_size),
        "--shards",
        str(a.shards),
        "--clips-per-shard",
        str(a.clips_per_shard),
        "--num-frames",
        str(a.num_frames),
        "--frame-size",
        str(a.frame_size),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--threads",
        str(a.threads),
        "--device",
        a.device,
        "--stream-workers",
        str(a.stream_workers),
        "--memory-workers",
        str(a.memory_workers),
    ]
    if shard_dir:
        cmd += ["--shard-dir", shard_dir]
    for name in SIZE_ARGS:
        if getattr(a, name) is not None:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(a, name))]
    out = subprocess.run(cmd, env=child_env(a.threads), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    cols = (
        "arm",
        "batch",
        "runs",
        "clips/s",
        "x synthetic",
        "step ms",
        "wait ms/step",
        "wait share",
        "w/o pass starts",
        "pass-start wait ms",
        "stalls",
        "first batch s",
        "up-front decode s",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["batch_size"], r["arm"]), []).append(r)
    for (bs, arm), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], ARMS.index(kv[0][1]))):
        base = groups.get((bs, "synthetic"))
        ratio = _median(rs, "clips_per_s") / _median(base, "clips_per_s") if base else None
        share = _median(rs, "wait_share")
        lines.append(
            "| "
            + " | ".join(
                [
                    arm,
                    str(bs),
                    str(len(rs)),
                    _fmt(_median(rs, "clips_per_s"), ".0f"),
                    _fmt(ratio, ".2f"),
                    _fmt(_median(rs, "step_ms"), ".0f"),
                    _fmt(_median(rs, "wait_ms"), ".1f"),
                    _fmt(100 * share, ".1f")
                    + "%"
                    + (
                        ""
                        if arm in ("synthetic", "loader")
                        else (" ok" if share < TARGET_WAIT_SHARE else " MISS")
                    ),
                    _fmt(100 * _median(rs, "steady_wait_share"), ".1f") + "%",
                    _fmt(_median(rs, "pass_start_wait_ms"), ".0f"),
                    _fmt(_median(rs, "stalls"), "g"),
                    _fmt(_median(rs, "first_wait_s"), ".2f"),
                    _fmt(_median(rs, "decode_s"), ".2f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run")
    p.add_argument("--repeats", type=int, default=2, help="rounds of interleaved arms")
    p.add_argument("--batch-size", type=int, nargs="+", default=[128])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--clips-per-shard", type=int, default=150)
    p.add_argument("--shard-dir", help="build (or reuse) the shards here, not in a temp dir")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument(
        "--frame-size",
        type=int,
        default=64,
        help="synthetic frames' size (the corpus clips are 64 px)",
    )
    for name in SIZE_ARGS:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help="default: build_dual_encoder's",
        )
    p.add_argument("--steps", type=int, default=30, help="timed steps per arm")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--stream-workers", type=int, default=2)
    p.add_argument("--memory-workers", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch / OMP threads of each child (default: the usable cores)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write every child's row here")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # the child's one arm
    a = p.parse_args()

    if a.arm:
        if isinstance(a.batch_size, list):
            a.batch_size = a.batch_size[0]
        print(json.dumps(run_arm(a)), flush=True)
        return

    needs_shards = any(arm != "synthetic" for arm in a.data)
    with tempfile.TemporaryDirectory(prefix="de-bench-") as tmp:
        shard_dir = None
        if needs_shards:
            shard_dir = a.shard_dir or tmp
            paths, seconds = build_shards(Path(shard_dir), a.shards, a.clips_per_shard)
            size = sum(Path(q).stat().st_size for q in paths) / 2**20
            print(
                json.dumps(
                    {
                        "shards": len(paths),
                        "clips_per_shard": a.clips_per_shard,
                        "MiB": round(size, 1),
                        "build_s": round(seconds, 1),
                        "dir": shard_dir,
                    }
                ),
                flush=True,
            )
        rows = []
        for r in range(a.repeats):
            for bs in a.batch_size:
                for arm in a.data:
                    row = {"repeat": r, **run_child(a, arm, bs, shard_dir)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    print(
        f"\nmedians of {a.repeats} interleaved runs; {a.steps} timed steps after {a.warmup} "
        f"warm-up; threads={a.threads} OMP_WAIT_POLICY=PASSIVE; target: wait share < "
        f"{TARGET_WAIT_SHARE:.0%}. stalls: timed waits > {1e3 * STALL_S:.0f} ms. Decode "
        "workers share the cores with the step, so a low wait share can still cost "
        "throughput: read it with clips/s x synthetic.\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
