"""Batched vs one-clip-at-a-time captioning: clips/s and peak memory on the same clips.

    python benchmarks/captioning.py [--checkpoint DIR] [--clips 64] [--batch-size 32]

Each mode runs in its own fresh process (same clips, same model, same generation settings),
so its peak memory is its own: on GPU torch.cuda.max_memory_allocated, on CPU the growth of
the process's peak resident set over what it held once the model was loaded and warmed up.
Without --checkpoint it times the untrained default-size tiny VLM: generation cost hardly
depends on the weights except through caption length, so each row also gives the mean number
of generated words (both modes are capped by --max-new-tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(args: argparse.Namespace) -> dict:
    """Caption args.clips benchmark clips in one mode; the figures as a dict."""
    import torch

    from model_code.captioning import caption_batches
    from model_code.corpus import CorpusConfig, ground_truth_caption, render_clip, split_specs
    from model_code.instructions import pretraining_texts
    from model_code.vlm import TinyVLMConfig, VideoVLM, build_tiny_image_vlm

    torch.manual_seed(0)
    specs = split_specs("benchmark", CorpusConfig(), 0, args.clips)
    frames = np.linspace(0, specs[0].frames - 1, 8).round().astype(int)
    clips = np.stack([render_clip(s)[frames] for s in specs])
    keys = [s.key for s in specs]
    if args.checkpoint:
        vlm = VideoVLM.from_pretrained(args.checkpoint, device=args.device)
    else:
        texts = pretraining_texts([{"key": s.key, "caption": ground_truth_caption(s)} for s in specs])
        vlm = build_tiny_image_vlm(texts, TinyVLMConfig()).to(args.device)
    size = args.batch_size if args.mode == "batched" else 1
    gen = {"max_new_tokens": args.max_new_tokens}
    vlm.caption(clips[:size], **gen)  # warm-up: lazy init, allocator, kernels
    cuda = vlm.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _current_rss_mib()
    t0 = time.perf_counter()
    chunks = ((keys[i:i + size], clips[i:i + size]) for i in range(0, len(clips), size))
    captions = [c for _, c in caption_batches(vlm, chunks, **gen)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mib() - base
    return {"mode": args.mode, "batch_size": size, "clips": len(clips), "seconds": seconds,
            "clips_per_s": len(clips) / seconds, "peak_mib": peak,
            "memory": "cuda allocated" if cuda else "RSS growth", "device": str(vlm.device),
            "threads": torch.get_num_threads(), "tokens_per_frame": vlm.tokens_per_frame,
            "mean_words": float(np.mean([len(c.split()) for c in captions])),
            "captions": captions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", choices=("batched", "one-by-one"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.mode:  # child: one mode, one JSON line
        print(json.dumps(run_mode(args)))
        return

    results = []
    for mode in ("one-by-one", "batched"):
        cmd = [sys.executable, __file__, "--mode", mode, "--clips", str(args.clips),
               "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
               "--device", args.device, "--checkpoint", args.checkpoint]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    first = results[0]
    print(f"device={first['device']} torch_threads={first['threads']} clips={first['clips']} "
          f"tokens/frame={first['tokens_per_frame']} "
          f"checkpoint={args.checkpoint or 'untrained tiny default'}")
    print(f"{'mode':<12}{'batch':>6}{'clips/s':>10}{'seconds':>10}"
          f"{'peak MiB (' + first['memory'] + ')':>28}{'mean words':>12}")
    for r in results:
        print(f"{r['mode']:<12}{r['batch_size']:>6}{r['clips_per_s']:>10.1f}{r['seconds']:>10.2f}"
              f"{r['peak_mib']:>28.1f}{r['mean_words']:>12.1f}")
    same = sum(a == b for a, b in zip(results[0]["captions"], results[1]["captions"], strict=True))
    print(f"speed-up {results[1]['clips_per_s'] / results[0]['clips_per_s']:.1f}x; "
          f"identical captions in both modes: {same}/{first['clips']}")


if __name__ == "__main__":
    main()
