"""Training of the video VLM: the default image VLM, then the paper's two adaptation stages.

- `pretrain_image_vlm`: the language model first reads text (captions and instruction text,
  motion phrases included, as an LLM would have), then the whole VLM learns to caption SINGLE
  frames with still captions. The result names colours and shapes, never motion.
- `visual_adaptation` (stage 1): vision tower + projector learn from video-caption pairs;
  the language model is frozen (no gradients, not in the optimizer).
- `language_adaptation` (stage 2): the language model learns from instruction data about
  the videos; vision tower and projector are frozen.
- `joint_adaptation` (the adaptation-order ablation): both halves train at once, each step on
  the caption data or the instruction data.

Each is a `model_code.training.loop.Task` (its batches and its loss) run by the loop the dual
encoder runs too (`model_code.training.loop.fit`: warm-up + cosine LR, resume, DDP, clipping,
reports, atomic state saves); here: AdamW on the parameters a stage trains, bf16 autocast on CUDA.

`model_code.training.train_vlm` is the program that runs each of them (one process or torchrun).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_code.data.instructions import CAPTION_PROMPT, IMAGE_PROMPT
from model_code.models.video_vlm import VideoVLM
from model_code.training.common import autocast, seed_everything, setup_distributed
from model_code.training.configs import JointAdaptationTrainConfig, TrainConfig
from model_code.training.loop import MetricsCallback, Task, fit


@dataclass
class Rows:
    """Rows of one batch, before they become model inputs: clips [B, T, H, W, 3] (None for
    text), prompts and answers; `repeats` shows each frame that many times; `ids` are the
    rows' indices in the data they were drawn from, so a log can say which rows a rank read."""

    clips: np.ndarray | None
    prompts: list[str]
    answers: list[str]
    repeats: int = 1
    ids: list[int] | None = None

    def shard(self, rank: int, world: int) -> Rows:
        """This rank's rows of the global batch."""
        return Rows(
            None if self.clips is None else self.clips[rank::world],
            self.prompts[rank::world],
            self.answers[rank::world],
            self.repeats,
            None if self.ids is None else self.ids[rank::world],
        )


class _Loss(torch.nn.Module):
    """The training loss of a VLM on a list of batches (their losses summed), as one module,
    so DistributedDataParallel sees the whole forward: vision tower, projector and LM.

    On several ranks each batch's loss is its token-loss sum over the *global* count of answer
    tokens (times the world size, which DDP's gradient mean divides back out): gradients equal
    those of one process on the global batch, however the answer lengths fall."""

    def __init__(self, vlm: VideoVLM, world: int):
        super().__init__()
        self.vlm, self.model, self.world = vlm, vlm.model, world

    def forward(self, batches: list[Rows]) -> torch.Tensor:
        built = [
            self.vlm.multimodal_batch(b.clips, b.prompts, b.answers, repeats=b.repeats)
            for b in batches
        ]
        if self.world == 1:
            return sum(self.model(**b).loss for b in built)
        import torch.distributed as dist

        counts = torch.stack([(b["labels"][:, 1:] != -100).sum() for b in built]).float()
        dist.all_reduce(counts)
        return sum(
            self.model(**b, num_items_in_batch=n / self.world).loss
            for b, n in zip(built, counts, strict=True)
        )


def _train_parameters(
    vlm: VideoVLM,
    make_batches: Callable[[np.random.Generator], list[Rows]],
    params: list[torch.nn.Parameter] | list[dict],
    config: TrainConfig,
    on_metrics: MetricsCallback | None,
    state_path: str | Path | None,
    step_offset: int = 0,
) -> dict:
    """Train `params` only (every other parameter gets requires_grad=False) for config.steps;
    `params` may be optimizer groups ({"params": [...], "lr": ...}) with their own peak LR.

    Step i's global batches (their losses are summed) are drawn with a generator seeded by
    (seed, i), so a resumed run sees the same batches as an uninterrupted one, and under
    torchrun rank r trains on rows r, r + world, ... of each (DDP; frozen parameters stay
    frozen on every rank). Rank 0 reports and saves. The state file is removed once the run
    completes: it exists only to resume an interrupted run.

    Each rank logs the row ids of the first step it runs (its share of the global batch); the
    metrics say where the run started (`resumed_from_step`: the saved state's step, 0 for a
    fresh run), how many steps it ran, and the rows a rank trains a step (`local_batch`).
    """
    rank, world, device = setup_distributed(config.device)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} ranks")
    seed_everything(config.seed)
    vlm.to(device)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    params = [p for group in groups for p in group["params"]]
    trainable = {id(p) for p in params}
    for p in vlm.model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98)
    )

    def batches(start: int):
        for step in range(start, config.steps):
            rows = make_batches(np.random.default_rng([config.seed, step]))
            if world > 1:
                rows = [b.shard(rank, world) for b in rows]
            yield rows, [b.ids for b in rows]

    def loss(module: torch.nn.Module, rows: list[Rows]) -> torch.Tensor:
        with autocast(vlm.device):
            return module(rows)

    task = Task(
        model=vlm.model,
        module=_Loss(vlm, world),
        loss=loss,
        batches=batches,
        params=params,
        # parameters the forward skips (a vision layer past the one read) are fine
        find_unused_parameters=True,
    )
    metrics = fit(task, optimizer, config, rank, world, device, on_metrics, state_path, step_offset)
    for p in vlm.model.parameters():
        p.requires_grad_(True)
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in vlm.model.parameters())
    return {**metrics, "trainable_params": n_trainable, "frozen_params": n_total - n_trainable}


def _pick(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.choice(n, size=min(size, n), replace=False)


def _caption_rows(
    rng: np.random.Generator, clips: np.ndarray, captions: list[str], size: int
) -> Rows:
    """A batch of stage 1's data: clips under CAPTION_PROMPT with their captions."""
    idx = _pick(rng, len(clips), size)
    return Rows(
        clips[idx], [CAPTION_PROMPT] * len(idx), [captions[i] for i in idx], ids=idx.tolist()
    )


def _instruction_rows(
    rng: np.random.Generator, clips: np.ndarray, examples: list[dict], size: int
) -> Rows:
    """A batch of stage 2's data: instruction rows {clip_index, prompt, answer}."""
    idx = _pick(rng, len(examples), size)
    rows = [examples[i] for i in idx]
    return Rows(
        clips[[r["clip_index"] for r in rows]],
        [r["prompt"] for r in rows],
        [r["answer"] for r in rows],
        ids=idx.tolist(),
    )


def pretrain_image_vlm(
    vlm: VideoVLM,
    frames: np.ndarray,
    captions: list[str],
    texts: list[str],
    config: TrainConfig,
    text_config: TrainConfig | None = None,
    on_metrics: MetricsCallback | None = None,
    state_path: str | Path | None = None,
) -> dict:
    """The default image VLM: text-only LM pretraining on `texts` (text_config, default
    config), then the whole VLM learns to caption single frames [N, H, W, 3] with still
    captions under IMAGE_PROMPT.

    Each frame is shown as a still clip of num_frames copies, so the image VLM reads clips of
    the video VLM's length. Every captioning step also replays a text batch, as VLM training
    mixes in text data, so the LM keeps the language (motion phrases included) it read.
    """
    text_config = text_config or config
    text_state = image_state = None
    if state_path is not None:
        image_state = Path(state_path)
        text_state = image_state.with_name(image_state.name + ".text")

    def text_batch(rng: np.random.Generator, size: int) -> Rows:
        idx = _pick(rng, len(texts), size)
        return Rows(None, [""] * len(idx), [texts[i] for i in idx], ids=idx.tolist())

    text_metrics = {"steps": 0, "wall_s": 0.0}
    if image_state is None or not image_state.exists():  # else the text phase is done
        text_metrics = _train_parameters(
            vlm,
            lambda rng: [text_batch(rng, text_config.batch_size)],
            vlm.language_parameters(),
            text_config,
            on_metrics,
            text_state,
        )

    def still_clips(rng: np.random.Generator) -> list[Rows]:
        idx = _pick(rng, len(frames), config.batch_size)
        images = Rows(
            frames[idx][:, None],
            [IMAGE_PROMPT] * len(idx),
            [captions[i] for i in idx],
            repeats=vlm.num_frames,
            ids=idx.tolist(),
        )
        return [images, text_batch(rng, config.batch_size)]

    metrics = _train_parameters(
        vlm,
        still_clips,
        list(vlm.model.parameters()),
        config,
        on_metrics,
        image_state,
        step_offset=text_config.steps,
    )
    metrics["text_loss"] = text_metrics.get("loss")
    metrics["text_steps"] = text_metrics["steps"]
    metrics["wall_s"] = round(metrics["wall_s"] + text_metrics["wall_s"], 2)
    return metrics


def visual_adaptation(
    vlm: VideoVLM,
    clips: np.ndarray,
    captions: list[str],
    config: TrainConfig,
    on_metrics: MetricsCallback | None = None,
    state_path: str | Path | None = None,
) -> dict:
    """Stage 1: vision tower + projector learn to caption clips [N, T, H, W, 3]; LM frozen.
    From here on the model is a video captioner: its default prompt becomes CAPTION_PROMPT."""
    vlm.prompt = CAPTION_PROMPT

    def batch(rng: np.random.Generator) -> list[Rows]:
        return [_caption_rows(rng, clips, captions, config.batch_size)]

    return _train_parameters(vlm, batch, vlm.vision_parameters(), config, on_metrics, state_path)


def language_adaptation(
    vlm: VideoVLM,
    clips: np.ndarray,
    examples: list[dict],
    config: TrainConfig,
    on_metrics: MetricsCallback | None = None,
    state_path: str | Path | None = None,
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    adapter_out: dict | None = None,
) -> dict:
    """Stage 2: the LM learns from instruction rows {clip_index, prompt, answer, type};
    vision tower + projector frozen.

    lora_rank=0 tunes the whole LM; lora_rank=r trains rank-r LoRA adapters (peft) on the LM's
    attention and MLP projections only, then merges them into the weights, so the checkpoint
    is a plain model of the same architecture."""

    def batch(rng: np.random.Generator) -> list[Rows]:
        return [_instruction_rows(rng, clips, examples, config.batch_size)]

    if lora_rank <= 0:
        return _train_parameters(
            vlm, batch, vlm.language_parameters(), config, on_metrics, state_path
        )

    from peft import LoraConfig, LoraModel

    language = vlm.language_parameters()
    owned = {id(p) for p in language}
    targets = [
        name
        for name, module in vlm.model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] in LORA_TARGETS
        and all(id(p) in owned for p in module.parameters())
    ]
    lora = LoraModel(
        vlm.model,
        LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha or 2 * lora_rank,
            target_modules=targets,
            lora_dropout=0.0,
        ),
        "default",
    )
    params = [p for name, p in vlm.model.named_parameters() if "lora_" in name]
    metrics = _train_parameters(vlm, batch, params, config, on_metrics, state_path)
    if adapter_out is not None:  # the adapter itself, before it is merged: what to save
        adapter_out.update(
            config={"r": lora_rank, "alpha": lora_alpha or 2 * lora_rank, "targets": targets},
            state={
                name: p.detach().cpu().clone()
                for name, p in vlm.model.named_parameters()
                if "lora_" in name
            },
        )
    vlm.model = lora.merge_and_unload()
    metrics.update(lora_rank=lora_rank, lora_targets=len(targets))
    return metrics


def joint_adaptation(
    vlm: VideoVLM,
    clips: np.ndarray,
    captions: list[str],
    examples: list[dict],
    config: JointAdaptationTrainConfig,
    on_metrics: MetricsCallback | None = None,
    state_path: str | Path | None = None,
) -> dict:
    """Both stages in one: vision tower, projector and LM all train (vision at config.lr, the
    LM at config.language_lr). Step i is a caption batch of `clips` [N, T, H, W, 3] with
    probability caption_steps / steps, else an instruction batch of `examples` (rows
    {clip_index, prompt, answer}); the draw comes from step i's seeded generator, so a resumed
    run makes the same draws. Captions are the default prompt afterwards, as after stage 1."""
    if config.caption_steps > config.steps:
        raise ValueError(
            f"caption_steps ({config.caption_steps}) cannot exceed steps ({config.steps})"
        )
    vlm.prompt = CAPTION_PROMPT
    caption_share = config.caption_steps / config.steps

    def batch(rng: np.random.Generator) -> list[Rows]:
        if rng.random() < caption_share:
            return [_caption_rows(rng, clips, captions, config.batch_size)]
        return [_instruction_rows(rng, clips, examples, config.instruction_batch_size)]

    groups = [
        {"params": vlm.vision_parameters(), "lr": config.lr},
        {"params": vlm.language_parameters(), "lr": config.language_lr},
    ]
    return _train_parameters(vlm, batch, groups, config, on_metrics, state_path)


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
