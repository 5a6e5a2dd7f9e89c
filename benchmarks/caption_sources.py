"""Does the caption source matter? The dual encoder trained on alt-text, still-frame captions
and ground-truth captions of the embedded corpus, in one process, without Dagster or shards:
the quickest check of the paper's claim in miniature (the pipeline's `ablation_table` is the
real one), and a way to tune the dual encoder's defaults.

    python benchmarks/caption_sources.py [--seeds 0 1 2] [--sources alt_text ground_truth]

Prints a JSON line per (source, seed) and a table; --json FILE writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_code.data import corpus, video
from model_code.evaluation.heldout import embedded_classes, score_model, zero_shot_prompts
from model_code.training.common import seed_everything
from model_code.training.train_dual_encoder import DualEncoderTrainConfig, train_dual_encoder

DEMO_TRAIN = DualEncoderTrainConfig(log_every=50)  # the defaults are the tuned demo settings
DEMO_SOURCES = ("alt_text", "still_caption", "ground_truth")


def render_split(split: str, n: int, num_frames: int = 8, seed: int = 0):
    """Clips of the embedded corpus, straight from model_code.data.corpus (no shards): (specs,
    uint8 [n, num_frames, H, W, 3]) with frames sampled evenly."""
    cfg = corpus.CorpusConfig(seed=seed)
    specs = corpus.split_specs(split, cfg, 0, n)
    idx = video.sample_indices(cfg.frames, num_frames)  # 8 of 16: [0, 2, 4, 6, 9, 11, 13, 15]
    return specs, np.stack([corpus.render_clip(s)[idx] for s in specs])


def caption_for(source: str, spec) -> str:
    return {
        "alt_text": corpus.alt_text,
        "still_caption": corpus.still_caption,
        "ground_truth": corpus.ground_truth_caption,
    }[source](spec)


def score_on_benchmark(model, specs, clips: np.ndarray) -> dict[str, float]:
    """The pipeline's scoring (model_code.evaluation.heldout.score_model) on rendered benchmark
    clips:
    ground-truth captions as queries, zero-shot motion and shape of the one-object clips."""
    sentences = [{"video_id": s.key, "caption": caption_for("ground_truth", s)} for s in specs]
    return score_model(model, [s.key for s in specs], clips, sentences, embedded_classes(specs))


def run_demo(
    seeds: Sequence[int] = (0,),
    sources: Sequence[str] = DEMO_SOURCES,
    n_train: int = 1200,
    n_eval: int = 200,
    train: DualEncoderTrainConfig = DEMO_TRAIN,
    sizes: dict | None = None,
    num_frames: int = 8,
) -> list[dict]:
    """Train one dual encoder per caption source on the corpus split, score each on the
    benchmark split. The paper's claim in miniature: captions that say what happens in the
    video (ground truth here, pseudo-captions in the pipeline) beat alt-text and still captions."""
    from model_code.models.dual_encoder import build_dual_encoder

    t = time.perf_counter()
    train_specs, train_clips = render_split("corpus", n_train, num_frames)
    eval_specs, eval_clips = render_split("benchmark", n_eval, num_frames)
    print(f"rendered {n_train}+{n_eval} clips in {time.perf_counter() - t:.1f}s", flush=True)
    eval_words = [caption_for("ground_truth", s) for s in eval_specs]
    eval_words += [
        p for _, prompts in zero_shot_prompts().values() for group in prompts for p in group
    ]
    rows = []
    for seed in seeds:
        for source in sources:
            captions = [caption_for(source, s) for s in train_specs]
            seed_everything(seed)
            model = build_dual_encoder(
                captions + eval_words, num_frames=num_frames, **(sizes or {})
            )
            pairs = list(zip(train_clips, captions, strict=True))
            result = train_dual_encoder(model, pairs, replace(train, seed=seed))
            scores = score_on_benchmark(model, eval_specs, eval_clips)
            row = {
                "source": source,
                "seed": seed,
                "train_wall_s": result["wall_s"],
                "train_cpu_s": result["cpu_s"],
                "final_loss": result["loss"],
                **scores,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def format_demo_table(rows: list[dict]) -> str:
    cols = (
        "t2v_R1",
        "t2v_R5",
        "t2v_R10",
        "t2v_MedR",
        "v2t_R1",
        "zs_motion_top1",
        "zs_shape_top1",
        "train_wall_s",
        "train_cpu_s",
    )
    lines = ["| source | seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['seed']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--sources", nargs="+", default=list(DEMO_SOURCES), choices=list(DEMO_SOURCES)
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    rows = run_demo(seeds=args.seeds, sources=args.sources)
    print(format_demo_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
