"""The video VLM: an image VLM that reads a clip as T frames in time order.

Each frame goes through the vision tower and projector on its own; its patch tokens are
pooled (`pooling`: a grid of `pooled_tokens_per_frame` averages, or the mean and x/y moments),
optionally followed by their change since the previous frame (`frame_differences`), and the
frames' tokens are concatenated in time order in front of the prompt. The language model sees
them as a sequence, so frame order reaches it through its positions (and, with
`position_code`, through a fixed code of each token's frame and slot). The checkpoint is a
plain Hugging Face `AutoModelForImageTextToText` folder; the few video settings live in
`vidistill.json` beside it.

(Over 400 lines on purpose: VideoVLM is one class, and loading, part saves, batching and
generation share its state; the families, the pooling and the tiny builder live beside it.)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model_code.data.instructions import CAPTION_PROMPT
from model_code.models.families import FAMILIES
from model_code.models.lineage import (
    VIDISTILL_FILE,
    VideoSettings,
    read_json_object,
    require_safetensors,
)
from model_code.models.pooling import POOLINGS, frame_slot_code, pool_frame_tokens
from model_code.training.common import autocast, pick_device

PARTS = ("vision", "language", "lora")  # lora: stage 2's adapter, merged into the LM on load
PART_FILE = "part.json"  # what a stage checkpoint holds: one part of its base's weights


def _part_parameters(model, paths: tuple[str, ...]) -> list[torch.nn.Parameter]:
    seen, params = set(), []
    for path in paths:
        for p in model.get_submodule(path).parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


class VideoVLM:
    """A Hugging Face image-text-to-text model plus what it takes to caption clips with it."""

    def __init__(
        self,
        model,
        tokenizer,
        processor=None,
        family: str = "llava",
        num_frames: int = 8,
        pooled_tokens_per_frame: int | None = None,
        pooling: str = "grid",
        prompt: str = CAPTION_PROMPT,
        position_code: bool = False,
        frame_differences: bool = False,
        device: str = "auto",
    ):
        if family not in FAMILIES:
            raise ValueError(f"unknown VLM family {family!r}; known: {sorted(FAMILIES)}")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.processor = processor
        self.family = family
        self.num_frames = num_frames
        vision = model.config.vision_config
        self.image_size = int(vision.image_size)
        # what the projector gives per frame (Idefics3's connector merges scale_factor^2 patches)
        merge = int(getattr(model.config, "scale_factor", 1) or 1) ** 2
        self.patches_per_frame = (vision.image_size // vision.patch_size) ** 2 // merge
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.frame_differences = frame_differences
        if pooling == "moments":
            pooled = 3
        else:
            pooled = pooled_tokens_per_frame or self.patches_per_frame
            side = round(pooled**0.5)
            grid = round(self.patches_per_frame**0.5)
            if side * side != pooled or grid % side:
                raise ValueError(
                    f"{pooled} pooled tokens per frame must be a square whose side "
                    f"divides the {grid}x{grid} patch grid"
                )
        self.pooled_tokens_per_frame = pooled  # what pooling keeps of a frame
        # what the LM reads of a frame: the pooled tokens, and with frame_differences their change
        self.visual_tokens_per_frame = pooled * (2 if frame_differences else 1)
        self.prompt = prompt
        self.position_code = position_code
        self.image_token_id = int(model.config.image_token_id)
        image_processor = getattr(processor, "image_processor", None)
        self.image_mean = torch.tensor(getattr(image_processor, "image_mean", None) or [0.5] * 3)
        self.image_std = torch.tensor(getattr(image_processor, "image_std", None) or [0.5] * 3)

    def to(self, device: str) -> VideoVLM:
        self.device = pick_device(device)
        self.model.to(self.device)
        return self

    # --- parts -----------------------------------------------------------------------------

    def vision_parameters(self) -> list[torch.nn.Parameter]:
        """Vision tower and projector: what visual adaptation (stage 1) trains."""
        return _part_parameters(self.model, FAMILIES[self.family].vision)

    def language_parameters(self) -> list[torch.nn.Parameter]:
        """Language model and LM head: what language adaptation (stage 2) trains."""
        return _part_parameters(self.model, FAMILIES[self.family].language)

    # --- inputs ----------------------------------------------------------------------------

    def pixel_values(self, clips: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> normalised float [B*T, 3, S, S] on the model's device."""
        x = torch.as_tensor(np.asarray(clips)).to(self.device)
        b, t, h, w, _ = x.shape
        x = x.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
        if (h, w) != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        mean, std = self.image_mean.to(x.device), self.image_std.to(x.device)
        return (x - mean[:, None, None]) / std[:, None, None]

    def visual_tokens(self, clips: np.ndarray | torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Visual tokens of each clip in time order: [B, T * repeats * visual_tokens_per_frame, D].

        Frames are encoded one by one; `repeats` shows each frame that many times in a row,
        encoded once (a single image [B, 1, ...] with repeats=num_frames is a still clip).
        With frame_differences, each frame's pooled tokens are followed by their change since
        the previous frame (parameter-free, zero for a still clip): motion as a token the LM
        can read directly instead of a comparison it must learn across the sequence.
        """
        family = FAMILIES[self.family]
        b, t = clips.shape[:2]
        feats = family.frame_features(self.model, self.pixel_values(clips))
        _, p, dv = feats.shape
        feats = feats.reshape(b, t, p, dv).repeat_interleave(repeats, dim=1)
        tokens = self.model.get_submodule(family.vision[1])(feats.flatten(0, 1))
        tokens = pool_frame_tokens(tokens, self.pooling, self.pooled_tokens_per_frame)
        d = tokens.shape[-1]
        tokens = tokens.reshape(b, t * repeats, self.pooled_tokens_per_frame, d)
        if self.frame_differences:  # what changed since the previous frame (zero for frame 0)
            change = torch.diff(tokens, dim=1, prepend=tokens[:, :1])
            tokens = torch.cat([tokens, change], dim=2)
        if self.position_code:
            code = frame_slot_code(t * repeats, self.visual_tokens_per_frame, d)
            # scaled to each clip's own token RMS: a clip's tokens never depend on its batch
            rms = tokens.detach().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            tokens = tokens + code.to(tokens) * rms
        return tokens.reshape(b, -1, d)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def multimodal_batch(
        self,
        clips: np.ndarray | torch.Tensor | None,
        prompts: list[str],
        answers: list[str] | None = None,
        repeats: int = 1,
    ) -> dict:
        """Model inputs for rows [BOS, <image> x T*k, prompt, answer, EOS], left-padded.

        The pooled visual tokens travel as `mm_encoder_outputs`, which the model scatters into
        the <image> slots itself (in `forward` and in `generate`'s prefill), so every family
        that accepts pre-encoded images works unchanged. `labels` (when answers are given)
        cover the answer and EOS only; clips=None with empty prompts gives text-only rows.
        `repeats` shows each frame that many times in a row, encoded once: a single image
        [B, 1, H, W, 3] with repeats=num_frames is a still clip at an eighth of the cost.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        tok = self.tokenizer
        n_frames = 0 if clips is None else clips.shape[1] * repeats
        n_visual = n_frames * self.visual_tokens_per_frame
        rows, targets = [], []
        for i, prompt in enumerate(prompts):
            prefix = (
                [tok.bos_token_id] + [self.image_token_id] * n_visual + self.encode_text(prompt)
            )
            answer = [] if answers is None else self.encode_text(answers[i]) + [tok.eos_token_id]
            rows.append(prefix + answer)
            targets.append([-100] * len(prefix) + answer)
        width = max(map(len, rows))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device
        )
        batch = {"input_ids": ids, "attention_mask": mask}
        if clips is not None:
            frames = self.visual_tokens(clips, repeats).reshape(
                len(rows) * n_frames, self.visual_tokens_per_frame, -1
            )
            if FAMILIES[self.family].features_as_list:
                frames = list(frames)
            batch["mm_encoder_outputs"] = {
                "image": BaseModelOutputWithPooling(pooler_output=frames)
            }
        if answers is not None:
            batch["labels"] = torch.tensor(
                [[-100] * (width - len(t)) + t for t in targets], device=self.device
            )
        return batch

    # --- captioning ------------------------------------------------------------------------

    @torch.no_grad()
    def caption(
        self, clips: np.ndarray, prompt: str | None = None, repeats: int = 1, **generation
    ) -> list[str]:
        """Captions for uint8 clips [B, T, H, W, 3]: one batched, KV-cached `generate`
        (options: see _generate). `repeats` shows each frame that many times in a row, encoded
        once: a single frame [B, 1, H, W, 3] with repeats=num_frames is a still clip, the form
        in which the image VLM learned to caption."""
        batch = self.multimodal_batch(clips, [prompt or self.prompt] * len(clips), repeats=repeats)
        return self._generate(batch, **generation)

    def caption_samples(
        self,
        clips: np.ndarray,
        samples: int,
        prompt: str | None = None,
        repeats: int = 1,
        seed: int = 0,
        **generation,
    ) -> list[list[str]]:
        """`samples` captions of every clip: a list per sample index, each of len(clips). The
        clips are encoded once; sample k generates with torch seed `seed * 1000 + k` (so one
        seed gives the same captions again, and with do_sample=False every sample is the
        greedy caption)."""
        batch = self.multimodal_batch(clips, [prompt or self.prompt] * len(clips), repeats=repeats)
        return [self._generate(batch, seed=seed * 1000 + k, **generation) for k in range(samples)]

    def answer(self, clips: np.ndarray, questions: list[str], **generation) -> list[str]:
        """One answer per (clip, question) row: the question is the prompt (video QA)."""
        return self._generate(self.multimodal_batch(clips, list(questions)), **generation)

    @torch.no_grad()
    def _generate(
        self,
        batch: dict,
        max_new_tokens: int = 24,
        do_sample: bool = False,
        num_beams: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        if len(batch["input_ids"]) == 0:
            return []
        self.model.eval()
        torch.manual_seed(seed)
        kwargs = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        with autocast(self.device):
            out = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_beams=num_beams,
                use_cache=True,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [re.sub(r" ([,.?!;:])", r"\1", " ".join(t.split())) for t in texts]

    # --- checkpoints -----------------------------------------------------------------------

    def version(self) -> str:
        """Hash of the weights (names, dtypes, shapes, bytes): equal before save and after load."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()[:16]

    def part_state(self, part: str) -> dict[str, torch.Tensor]:
        """The weights of one part ("vision": tower + projector, "language": LM + head), each
        storage once (a head tied to the embeddings is the embeddings)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")
        family = FAMILIES[self.family]
        prefixes = family.vision if part == "vision" else family.language
        out, seen = {}, set()
        for name, tensor in self.model.state_dict().items():
            if not any(name == p or name.startswith(p + ".") for p in prefixes):
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
            if key in seen:
                continue
            seen.add(key)
            out[name] = tensor.detach().cpu().contiguous()
        return out

    def save_part(self, path: str | Path, part: str, adapter: dict | None = None) -> None:
        """Only what a stage trained: `part`'s weights (model.safetensors; for "lora" the
        `adapter` language_adaptation kept: its weights and settings), part.json (family, part,
        model_type) and the video settings. Load it onto its base with load_part."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"family": self.family, "part": part, "model_type": self.model.config.model_type}
        if part == "lora":
            if not adapter:
                raise ValueError("part 'lora' needs the adapter language_adaptation kept")
            save_file(adapter["state"], str(path / "model.safetensors"))
            meta["lora"] = adapter["config"]
        else:
            save_file(self.part_state(part), str(path / "model.safetensors"))
        (path / PART_FILE).write_text(json.dumps(meta, indent=2))
        self.video_settings().write(path)

    def load_part(self, path: str | Path) -> VideoVLM:
        """Put a part saved by save_part in place of this model's (the base's): the family and
        every key must match; the part's video settings (its prompt) come with it."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / PART_FILE).exists():
            raise FileNotFoundError(f"{path} has no {PART_FILE}: not a part saved by save_part")
        meta = read_json_object(path / PART_FILE)
        if meta.get("family") != self.family or meta.get("part") not in PARTS:
            raise ValueError(
                f"{path / PART_FILE}: a {meta.get('family')!r} {meta.get('part')!r} "
                f"part does not fit this {self.family!r} model"
            )
        tensors = load_file(str(path / "model.safetensors"))
        if meta["part"] == "lora":
            return self._merge_adapter(path, meta["lora"], tensors)
        expected = self.part_state(meta["part"])
        if set(tensors) != set(expected):
            missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
            raise ValueError(
                f"{path}: the {meta['part']} part does not match the base: "
                f"missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
            )
        self.model.load_state_dict(tensors, strict=False)
        self.prompt = VideoSettings.read(path).prompt or self.prompt
        return self

    def _merge_adapter(self, path: Path, lora: dict, tensors: dict) -> VideoVLM:
        """Put stage 2's LoRA adapter on the LM and merge it, as training did."""
        from peft import LoraConfig, LoraModel

        model = LoraModel(
            self.model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                target_modules=lora["targets"],
                lora_dropout=0.0,
            ),
            "default",
        )
        names = {n for n, _ in self.model.named_parameters() if "lora_" in n}
        if set(tensors) != names:
            raise ValueError(
                f"{path}: the adapter does not fit this model: missing "
                f"{sorted(names - set(tensors))[:3]}, unexpected "
                f"{sorted(set(tensors) - names)[:3]}"
            )
        self.model.load_state_dict(tensors, strict=False)
        self.model = model.merge_and_unload()
        self.prompt = VideoSettings.read(path).prompt or self.prompt
        return self

    def video_settings(self) -> VideoSettings:
        return VideoSettings(
            family=self.family,
            num_frames=self.num_frames,
            pooled_tokens_per_frame=self.pooled_tokens_per_frame,
            pooling=self.pooling,
            prompt=self.prompt,
            position_code=self.position_code,
            frame_differences=self.frame_differences,
        )

    def save_pretrained(self, path: str | Path) -> None:
        """A plain Hugging Face folder (safetensors only) plus vidistill.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        (self.processor or self.tokenizer).save_pretrained(path)
        self.video_settings().write(path)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str = "auto", trust_remote_code: bool = False
    ) -> VideoVLM:
        """Load a local image-text-to-text folder; never a pickle checkpoint, never from a hub."""
        from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a checkpoint folder")
        require_safetensors(path)
        settings = VideoSettings.read(path)  # a broken vidistill.json fails here, by name
        model_type = _model_type(path)
        if model_type not in FAMILIES and not trust_remote_code:
            raise ValueError(
                f"{path / 'config.json'}: model_type {model_type!r} is not a VLM family vidistill "
                f"knows how to feed video ({', '.join(sorted(FAMILIES))})"
            )
        model = AutoModelForImageTextToText.from_pretrained(
            path, use_safetensors=True, local_files_only=True, trust_remote_code=trust_remote_code
        )
        family = model.config.model_type
        if settings.family not in (None, family):
            raise ValueError(
                f"{path / VIDISTILL_FILE}: family {settings.family!r} does not "
                f"match the model's model_type {family!r} in config.json"
            )
        settings = {"family": family, "prompt": CAPTION_PROMPT, **settings.given()}
        try:
            processor = AutoProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, TypeError):
            processor = None
        tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
        if processor is tokenizer:
            processor = None
        tokenizer.padding_side = "left"
        return cls(model, tokenizer, processor, device=device, **settings)


def _model_type(folder: Path) -> str | None:
    """config.json's model_type, or a clear error when the file is missing or broken."""
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a Hugging Face checkpoint")
    return read_json_object(path).get("model_type")
