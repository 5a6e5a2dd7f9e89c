"""The settings of every trainer, with the only defaults there are.

One dataclass per training program (the image VLM, stage 1, stage 2, the dual encoder). The
program's CLI flags, the Dagster launchpad config of its asset (assets/common.py builds it from
these fields) and the lineage of its checkpoint all come from here, and every field is checked
by `validate` with a message that names it. This module imports no torch, so the code location
can read it when it loads.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints


def _f(
    default,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    choices=None,
    folder: bool = False,
):
    meta = {"help": help}
    if folder:
        meta["folder"] = True
    if ge is not None:
        meta["ge"] = ge
    if gt is not None:
        meta["gt"] = gt
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


@dataclass
class TrainConfig:
    """One phase of VLM training. These defaults are stage 1's (the CPU demo's)."""

    steps: int = _f(800, "optimizer steps", ge=1)
    batch_size: int = _f(16, "global batch: split evenly over the ranks", ge=1)
    lr: float = _f(1e-3, "peak learning rate (AdamW, warm-up then cosine)", gt=0)
    warmup_steps: int = _f(25, "linear warm-up steps", ge=0)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = _f(1.0, "gradient-norm clip; 0 turns clipping off", ge=0)
    seed: int = _f(0, "seed of the weights, the batches and the data order", ge=0)
    device: str = _f("auto", "auto (a leased CUDA device when present, else CPU), cpu, cuda:N")
    nproc_per_node: int = _f(1, "training processes (torchrun ranks, one GPU each on CUDA)", ge=1)
    checkpoint_every: int = _f(100, "steps between resumable training-state saves", ge=1)
    checkpoint_every_s: float = _f(
        300.0, "seconds between training-state saves (whichever of the two comes first)", gt=0
    )
    log_every: int = _f(25, "steps between metric reports", ge=1)


@dataclass
class ImageVLMTrainConfig(TrainConfig):
    """The default image VLM: text-only LM pretraining, then captioning single frames."""

    text_steps: int = _f(300, "text-only LM pretraining steps before the image steps", ge=0)
    text_batch_size: int = _f(32, "batch of the text-only steps", ge=1)
    image_examples: int = _f(1500, "still frames of the embedded corpus to caption", ge=1)


@dataclass
class VisualAdaptationTrainConfig(TrainConfig):
    """Stage 1: vision tower + projector learn from video captions; the LM is frozen."""


@dataclass
class LanguageAdaptationTrainConfig(TrainConfig):
    """Stage 2: the LM learns from instruction data; vision tower + projector are frozen."""

    steps: int = _f(1200, "optimizer steps", ge=1)
    lora_rank: int = _f(
        0, "rank of LoRA adapters on the LM (merged at the end); 0 tunes the whole LM", ge=0
    )


@dataclass
class JointAdaptationTrainConfig(TrainConfig):
    """Both stages at once (the adaptation-order ablation's "joint"): vision tower, projector
    and LM all train; each step is a caption batch (stage 1's data, `batch_size`, `lr` on the
    vision side) with probability caption_steps / steps, else an instruction batch (stage 2's,
    `instruction_batch_size`, `language_lr` on the LM). Defaults: the two stages' summed."""

    steps: int = _f(2000, "optimizer steps: stage 1's plus stage 2's", ge=1)
    caption_steps: int = _f(
        800,
        "stage 1's share of the steps: a step is a caption batch with "
        "probability caption_steps / steps",
        ge=0,
    )
    instruction_batch_size: int = _f(16, "global batch of an instruction step (stage 2's)", ge=1)
    language_lr: float = _f(
        1e-3,
        "peak learning rate of the LM (stage 2's); `lr` is the vision "
        "tower's and projector's (stage 1's)",
        gt=0,
    )


def joint_from_stages(
    visual: VisualAdaptationTrainConfig, language: LanguageAdaptationTrainConfig
) -> JointAdaptationTrainConfig:
    """The joint run that matches the two stages: their steps summed, each data's batch size
    and learning rate, a warm-up as long as the longer one; the rest (seed, device, ranks,
    clipping, logging) from stage 1. A LoRA stage 2 has no joint counterpart here."""
    if language.lora_rank:
        raise ValueError(
            "joint adaptation trains the whole LM: it has no LoRA counterpart of "
            f"a stage 2 with lora_rank={language.lora_rank}"
        )
    shared = {f.name: getattr(visual, f.name) for f in fields(TrainConfig)}
    return JointAdaptationTrainConfig(
        **{
            **shared,
            "steps": visual.steps + language.steps,
            "caption_steps": visual.steps,
            "warmup_steps": max(visual.warmup_steps, language.warmup_steps),
            "instruction_batch_size": language.batch_size,
            "language_lr": language.lr,
        }
    )


@dataclass
class DualEncoderTrainConfig:
    """The video-text dual encoder, trained contrastively on (clip, caption) pairs."""

    steps: int = _f(300, "optimizer steps", ge=1)
    batch_size: int = _f(
        128, "global batch (more negatives when bigger): split over the ranks", ge=2
    )
    lr: float = _f(1e-3, "peak learning rate (AdamW, warm-up then cosine)", gt=0)
    warmup_steps: int = _f(30, "linear warm-up steps", ge=0)
    weight_decay: float = _f(0.05, "AdamW weight decay of the matrices", ge=0)
    grad_clip: float = _f(1.0, "gradient-norm clip; 0 turns clipping off", ge=0)
    seed: int = _f(0, "seed of the weights and the data order", ge=0)
    device: str = _f("auto", "auto (a leased CUDA device when present, else CPU), cpu, cuda:N")
    loss: str = _f("infonce", "infonce (CLIP) or sigmoid (SigLIP)", choices=("infonce", "sigmoid"))
    nproc_per_node: int = _f(1, "training processes (torchrun ranks, one GPU each on CUDA)", ge=1)
    num_workers: int = _f(2, "DataLoader workers per rank when streaming from the shards", ge=0)
    in_memory_clips: int = _f(
        50_000,
        "up to this many clips, decode the clips once and keep "
        "them in memory; beyond, stream the shards",
        ge=0,
    )
    checkpoint_every: int = _f(100, "steps between resumable training-state saves", ge=1)
    checkpoint_every_s: float = _f(
        300.0, "seconds between training-state saves (whichever of the two comes first)", gt=0
    )
    log_every: int = _f(10, "steps between metric reports", ge=1)
    num_frames: int = _f(8, "frames per clip", ge=1)
    image_size: int = _f(32, "frame side of the tiny vision tower", ge=8)
    patch_size: int = _f(16, "patch side of the tiny vision tower", ge=1)
    vision_path: str | None = _f(
        None,
        "local CLIP/SigLIP checkpoint for the frames (none: a tiny tower from config)",
        folder=True,
    )
    text_path: str | None = _f(
        None,
        "local CLIP/SigLIP checkpoint for the text (none: a tiny tower from config)",
        folder=True,
    )


TRAIN_CONFIGS = {
    "image_vlm": ImageVLMTrainConfig,
    "adapted_encoder": VisualAdaptationTrainConfig,
    "instruction_tuned_lm": LanguageAdaptationTrainConfig,
    "joint_adaptation": JointAdaptationTrainConfig,
    "dual_encoder": DualEncoderTrainConfig,
}


def validate(config) -> None:
    """Raise ValueError naming the first field out of its range or choices."""
    name = type(config).__name__
    for f in fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None:
            continue
        if "ge" in meta and not value >= meta["ge"]:
            raise ValueError(f"{name}.{f.name} must be >= {meta['ge']}, not {value!r}")
        if "gt" in meta and not value > meta["gt"]:
            raise ValueError(f"{name}.{f.name} must be > {meta['gt']}, not {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{name}.{f.name} must be one of {meta['choices']}, not {value!r}")
        if meta.get("folder") and value and not Path(value).is_dir():
            raise ValueError(f"{name}.{f.name}: no folder at {value!r}")
        if f.name == "device" and not DEVICE.match(str(value)):
            raise ValueError(f"{name}.device must be auto, cpu, cuda or cuda:N, not {value!r}")


def from_dict(cls, values: dict[str, Any]):
    """`cls` from a mapping (a job file, the Dagster config), unknown keys refused by name."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field {', '.join(unknown)}; fields: {', '.join(sorted(known))}"
        )
    config = cls(**values)
    validate(config)
    return config


def field_specs(cls) -> list[tuple[str, type, Any, dict]]:
    """(name, type, default, metadata) of each field: what the CLI and the launchpad show."""
    hints = get_type_hints(cls)
    return [
        (f.name, hints[f.name], None if f.default is MISSING else f.default, dict(f.metadata))
        for f in fields(cls)
    ]


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One --flag per field, with its default and help."""
    for name, hint, default, meta in field_specs(cls):
        kind = {int: int, float: float}.get(hint, str)
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=default,
            choices=meta.get("choices"),
            help=f"{meta['help']} (default {default})",
        )


def from_args(cls, args: argparse.Namespace):
    return from_dict(cls, {f.name: getattr(args, f.name) for f in fields(cls)})
