"""Bytes each adaptation stage writes: the whole VLM per stage (before) vs only what it
trained (after: the adapted encoder, the instruction-tuned LM, and the composed video_vlm
written once).

    .venv/bin/python benchmarks/stage_bytes.py

Two models: the demo's default tiny VLM (TinyVLMConfig()) and a tiny random VLM with a large
LM (text_hidden 1024, 12 layers), so the LM dominates as it does in a 7B VLM. The byte counts
are of the files written (safetensors), measured in the same run for both layouts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def measure(name: str, config) -> None:
    from model_code.models.tiny_vlm import build_tiny_image_vlm

    vlm = build_tiny_image_vlm(["a red circle moves left"], config)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm.save_pretrained(tmp / "full")
        vlm.save_part(tmp / "encoder", "vision")
        vlm.save_part(tmp / "lm", "language")
        full, encoder, lm = (folder_bytes(tmp / n) for n in ("full", "encoder", "lm"))
    mib = 1 << 20
    before = {"stage 1": full, "stage 2": full, "video_vlm": 0}
    after = {"stage 1": encoder, "stage 2": lm, "video_vlm": full}
    print(f"\n{name}: {sum(p.numel() for p in vlm.model.parameters()) / 1e6:.1f} M parameters")
    print("| written by | before (whole VLM per stage) | after (what was trained) |")
    print("|---|---|---|")
    for step, written in before.items():
        print(f"| {step} | {written / mib:.2f} MiB | {after[step] / mib:.2f} MiB |")
    total_before, total_after = sum(before.values()), sum(after.values())
    print(
        f"| all | {total_before / mib:.2f} MiB | {total_after / mib:.2f} MiB "
        f"({total_after / total_before:.2f}x) |"
    )


def main() -> None:
    from model_code.models.tiny_vlm import TinyVLMConfig

    measure("default tiny VLM (the demo's)", TinyVLMConfig())
    measure(
        "tiny VLM with a large LM", TinyVLMConfig(text_hidden=1024, text_layers=12, text_heads=8)
    )


if __name__ == "__main__":
    main()
