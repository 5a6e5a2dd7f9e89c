"""Train-step throughput of the dual encoder (forward + loss + backward + AdamW step).

    python benchmarks/dual_encoder.py --batch-size 128 --image-size 32 --patch-size 8

Prints one JSON line per configuration: seconds per step and clips per second. On CPUs
shared with other jobs, export OMP_WAIT_POLICY=PASSIVE first (see the report in the PR):
libgomp's spinning threads otherwise slow every job down many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(
    batch_size: int,
    num_frames: int,
    frame_size: int,
    steps: int,
    threads: int | None,
    device: str,
    **sizes,
) -> dict:
    import numpy as np
    import torch

    from model_code.contrastive import contrastive_loss
    from model_code.dual_encoder import build_dual_encoder
    from model_code.training import autocast, pick_device

    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    captions = [
        f"a red circle moves left , then a blue square grows {i}" for i in range(batch_size)
    ]
    model = build_dual_encoder(captions, num_frames=num_frames, **sizes).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    frames = torch.from_numpy(
        np.random.default_rng(0).integers(
            0, 256, size=(batch_size, num_frames, frame_size, frame_size, 3), dtype=np.uint8
        )
    )

    def step():
        tokens = {k: v.to(dev) for k, v in model.tokenize(captions).items()}
        with autocast(dev):
            out = model(frames=frames.to(dev), **tokens)
        loss = contrastive_loss(out.video_embeds.float(), out.text_embeds.float(), out.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    return {
        "batch_size": batch_size,
        "num_frames": num_frames,
        "frame_size": frame_size,
        "threads": torch.get_num_threads(),
        "device": str(dev),
        **sizes,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "s_per_step": round(per_step, 4),
        "clips_per_s": round(batch_size / per_step, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch-size", type=int, nargs="+", default=[128])
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--frame-size", type=int, default=64, help="size of the uint8 frames fed in")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--vision-width", type=int, default=64)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--temporal-layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    for bs in a.batch_size:
        print(
            json.dumps(
                measure(
                    bs,
                    a.num_frames,
                    a.frame_size,
                    a.steps,
                    a.threads,
                    a.device,
                    image_size=a.image_size,
                    patch_size=a.patch_size,
                    vision_width=a.vision_width,
                    vision_layers=a.vision_layers,
                    text_width=a.text_width,
                    text_layers=a.text_layers,
                    temporal_layers=a.temporal_layers,
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
