"""An off-the-shelf VLM as a captioner beside the distilled one: Qwen2-VL / Qwen2.5-VL.

A local `AutoModelForImageTextToText` folder of the Qwen2-VL family captions clips for the
`teacher_captions` source. Its video processor needs torchvision, which this project does not
install (docs/design.md, "Do not install"), so a clip goes in as its T frames, each an image
in the prompt (`<|vision_start|><|image_pad|>...<|vision_end|>` per frame, in time order),
through the family's PIL image processor; the model reads them as one sequence with
Qwen2-VL's multimodal rotary positions. Captions are batched (left padding) and greedy unless
sampling is asked for, like VideoVLM.caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model_code.training.common import autocast, pick_device

TEACHER_TYPES = ("qwen2_vl", "qwen2_5_vl")
TEACHER_PROMPT = "Describe what happens in this video in one sentence."


def is_teacher(folder: str | Path) -> bool:
    from model_code.models.lineage import read_json_object

    path = Path(folder) / "config.json"
    return path.exists() and read_json_object(path).get("model_type") in TEACHER_TYPES


class QwenTeacher:
    """caption(clips) for a Qwen2-VL-family checkpoint, clips as frame sequences."""

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        num_frames: int = 8,
        prompt: str = TEACHER_PROMPT,
        device: str = "auto",
    ):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self.num_frames = num_frames
        self.prompt = prompt
        self.merge = int(image_processor.merge_size) ** 2

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str = "auto", num_frames: int = 8
    ) -> QwenTeacher:
        """A local folder: weights (safetensors only), tokenizer, image processor config."""
        from transformers import AutoModelForImageTextToText, AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        folder = Path(folder)
        if not is_teacher(folder):
            raise ValueError(
                f"{folder}: not a {' / '.join(TEACHER_TYPES)} checkpoint (config.json model_type)"
            )
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"{folder} has no *.safetensors weights")
        model = AutoModelForImageTextToText.from_pretrained(
            folder, use_safetensors=True, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, processor, num_frames=num_frames, device=device)

    def _inputs(self, clips: np.ndarray, prompt: str) -> dict:
        frames = [frame for clip in clips for frame in clip]  # [B*T] images, clip by clip
        images = self.image_processor(images=frames, return_tensors="pt")
        grids = images["image_grid_thw"]
        texts, i = [], 0
        for clip in clips:
            parts = []
            for _ in range(len(clip)):
                n = int(grids[i].prod()) // self.merge
                parts.append("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>")
                i += 1
            texts.append("".join(parts) + prompt)
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {**tokens, "pixel_values": images["pixel_values"], "image_grid_thw": grids}

    @torch.no_grad()
    def caption(
        self,
        clips: np.ndarray,
        prompt: str | None = None,
        repeats: int = 1,
        max_new_tokens: int = 24,
        do_sample: bool = False,
        num_beams: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """Captions for uint8 clips [B, T, H, W, 3] (`repeats` shows each frame that often)."""
        if len(clips) == 0:
            return []
        clips = np.asarray(clips)
        if repeats > 1:
            clips = np.repeat(clips, repeats, axis=1)
        inputs = {
            k: v.to(self.device) for k, v in self._inputs(clips, prompt or self.prompt).items()
        }
        torch.manual_seed(seed)
        kwargs = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        with autocast(self.device):
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_beams=num_beams,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def build_tiny_teacher(texts: list[str], image_size: int = 32, seed: int = 0) -> QwenTeacher:
    """A tiny random Qwen2-VL built from its real config classes (for tests), with a word-level
    tokenizer over `texts` plus the family's vision tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from model_code.models.text import build_word_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer([*texts, TEACHER_PROMPT])
    tokenizer.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|vision_start|>",
                "<|vision_end|>",
                "<|image_pad|>",
                "<|video_pad|>",
            ]
        }
    )
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    }
    pixels = image_size * image_size
    processor = Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_chans": 3,
            "mlp_ratio": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return QwenTeacher(model, tokenizer, processor, device="cpu")


def save_teacher(teacher: QwenTeacher, folder: str | Path) -> None:
    folder = Path(folder)
    teacher.model.save_pretrained(folder, safe_serialization=True)
    teacher.tokenizer.save_pretrained(folder)
    teacher.image_processor.save_pretrained(folder)
