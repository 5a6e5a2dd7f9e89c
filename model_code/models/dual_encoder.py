"""The video–text dual encoder: a video tower (per-frame image encoder + temporal transformer
with learned time embeddings, mean-pooled, projected) and a text tower (projected), trained
contrastively. One Hugging Face folder holds config, safetensors weights and the tokenizer;
`DualEncoder.from_pretrained(folder)` loads it with no Dagster and no remote code.

The towers are transformers' CLIP or SigLIP vision/text models: tiny ones built from config
by default, or local pretrained checkpoints (`vision_path` / `text_path`).

(Over 400 lines on purpose: the Hugging Face config and model classes, building them from
towers, and embedding with them are the one model a reader needs in one place.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipTextConfig,
    SiglipTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from model_code.models.lineage import require_safetensors

VISION_TOWERS = {
    "clip": (CLIPVisionConfig, CLIPVisionModel),
    "siglip": (SiglipVisionConfig, SiglipVisionModel),
}
TEXT_TOWERS = {
    "clip": (CLIPTextConfig, CLIPTextModel),
    "siglip": (SiglipTextConfig, SiglipTextModel),
}
IMAGE_STATS = {  # what each family's image processor normalises with
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class DualEncoderConfig(PretrainedConfig):
    """Both towers' configs (as dicts, so either family fits) plus the temporal model and head."""

    model_type = "vidistill_dual_encoder"

    def __init__(
        self,
        vision_tower_type: str = "clip",
        vision_tower_config: dict | None = None,
        text_tower_type: str = "clip",
        text_tower_config: dict | None = None,
        num_frames: int = 8,
        time_embedding_std: float = 0.5,
        temporal_layers: int = 1,
        temporal_heads: int = 4,
        projection_dim: int = 64,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        max_text_length: int = 32,
        loss: str = "infonce",
        logit_scale_init: float = math.log(1 / 0.07),
        logit_bias_init: float = -10.0,
        **kwargs,
    ):
        if vision_tower_type not in VISION_TOWERS or text_tower_type not in TEXT_TOWERS:
            raise ValueError(f"tower types must be one of {sorted(VISION_TOWERS)}")
        if loss not in ("infonce", "sigmoid"):
            raise ValueError(f"loss must be 'infonce' or 'sigmoid', not {loss!r}")
        self.vision_tower_type = vision_tower_type
        self.vision_tower_config = dict(vision_tower_config or {})
        self.text_tower_type = text_tower_type
        self.text_tower_config = dict(text_tower_config or {})
        self.num_frames = num_frames
        self.time_embedding_std = time_embedding_std
        self.temporal_layers = temporal_layers
        self.temporal_heads = temporal_heads
        self.projection_dim = projection_dim
        mean, std = IMAGE_STATS[vision_tower_type]
        self.image_mean = list(image_mean or mean)
        self.image_std = list(image_std or std)
        self.max_text_length = max_text_length
        self.loss = loss
        self.logit_scale_init = logit_scale_init
        self.logit_bias_init = logit_bias_init
        super().__init__(**kwargs)

    @property
    def image_size(self) -> int:
        return int(self.vision_tower_config.get("image_size", 224))


@dataclass
class DualEncoderOutput(ModelOutput):
    video_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    logit_bias: torch.Tensor | None = None


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] (or one clip [T, H, W, 3]) -> normalised float [B, T, 3, S, S].
    Copied to the device while still uint8 (4x fewer bytes); resized (bilinear, antialiased)
    only when the frames are not already S x S — on CPU in uint8, channels-last, which is
    ~10x faster than resizing floats and was a third of a training step."""
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 RGB, got {x.dtype}")
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [B, T, H, W, 3], got {tuple(x.shape)}")
    b, t, h, w, _ = x.shape
    x = x.to(device).reshape(b * t, h, w, 3).permute(0, 3, 1, 2)
    if (h, w) != (image_size, image_size):
        x = x if x.device.type == "cpu" else x.float()
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    x = x.float().div_(255.0)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).reshape(b, t, 3, image_size, image_size)


class DualEncoder(PreTrainedModel):
    config_class = DualEncoderConfig
    base_model_prefix = "dual_encoder"
    main_input_name = "frames"

    def __init__(self, config: DualEncoderConfig):
        super().__init__(config)
        vision_config_class, vision_class = VISION_TOWERS[config.vision_tower_type]
        text_config_class, text_class = TEXT_TOWERS[config.text_tower_type]
        self.vision_model = vision_class(vision_config_class(**config.vision_tower_config))
        self.text_model = text_class(text_config_class(**config.text_tower_config))
        width = self.vision_model.config.hidden_size
        self.time_embeddings = nn.Parameter(torch.zeros(config.num_frames, width))
        layer = nn.TransformerEncoderLayer(
            width,
            config.temporal_heads,
            4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.temporal = nn.TransformerEncoder(
            layer, config.temporal_layers, enable_nested_tensor=False
        )
        self.temporal_norm = nn.LayerNorm(width)
        self.video_projection = nn.Linear(width, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(
            self.text_model.config.hidden_size, config.projection_dim, bias=False
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias_init)))
        self.tokenizer = None  # set by build_dual_encoder / from_pretrained
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            # comparable to the post-LayerNorm frame features, so that order matters from step 0
            init.normal_(self.time_embeddings, std=float(self.config.time_embedding_std))
            init.constant_(self.logit_scale, float(self.config.logit_scale_init))
            init.constant_(self.logit_bias, float(self.config.logit_bias_init))

    # --- video tower -------------------------------------------------------------------------

    def _time_embeddings(self, t: int) -> torch.Tensor:
        """The learned embeddings, linearly resampled when a clip has another frame count."""
        if t == self.config.num_frames:
            return self.time_embeddings
        emb = self.time_embeddings.T[None]  # [1, width, T0]
        return F.interpolate(emb, size=t, mode="linear", align_corners=True)[0].T

    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, T, 3, S, S] -> L2-normalised video embeddings [B, D]."""
        b, t = pixels.shape[:2]
        frames = self.vision_model(pixel_values=pixels.flatten(0, 1)).pooler_output
        x = frames.view(b, t, -1) + self._time_embeddings(t)
        x = self.temporal(x).mean(dim=1)
        return F.normalize(self.video_projection(self.temporal_norm(x)), dim=-1)

    def encode_video(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 clips [B, T, H, W, 3] -> L2-normalised embeddings [B, D]."""
        cfg = self.config
        pixels = preprocess_frames(
            frames, cfg.image_size, cfg.image_mean, cfg.image_std, self.device
        )
        return self.video_features(pixels)

    # --- text tower --------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids that end in EOS (CLIP's text pooling reads the first EOS), right-padded.
        SigLIP towers are padded to the full length, as SigLIP is trained."""
        if self.tokenizer is None:
            raise RuntimeError("this DualEncoder has no tokenizer; build or load it with one")
        tok, limit = self.tokenizer, self.config.max_text_length
        eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else 0
        rows = []
        for ids in tok(list(texts), truncation=True, max_length=limit)["input_ids"]:
            if not ids or ids[-1] != eos:
                ids = ids[: limit - 1] + [eos]
            rows.append(ids)
        length = limit if self.config.text_tower_type == "siglip" else max(map(len, rows))
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.config.text_tower_type == "siglip":
            attention_mask = None  # SigLIP pools the last (pad) position and is trained unmasked
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> L2-normalised embeddings [B, D]."""
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.text_features(**tokens)

    # --- both --------------------------------------------------------------------------------

    def forward(
        self,
        frames: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> DualEncoderOutput:
        """Embeddings of a batch of (clip, caption) pairs and the loss's scale/bias; the loss
        itself lives in model_code.training.contrastive so it can gather features across ranks."""
        return DualEncoderOutput(
            video_embeds=self.encode_video(frames),
            text_embeds=self.text_features(input_ids, attention_mask),
            logit_scale=self.logit_scale.exp(),
            logit_bias=self.logit_bias,
        )

    # --- folders -----------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Config + safetensors weights + tokenizer, all in one folder."""
        kwargs.pop("safe_serialization", None)
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, *args, **kwargs
    ) -> DualEncoder:
        """Load a local folder written by save_pretrained. Pickle weights are refused:
        unpickling a file can run arbitrary code."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a local folder (nothing is fetched from a hub)"
            )
        require_safetensors(folder)
        kwargs.update(use_safetensors=True, local_files_only=True)
        kwargs.pop("trust_remote_code", None)
        model = super().from_pretrained(folder, *args, **kwargs)
        model.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return model


AutoConfig.register(DualEncoderConfig.model_type, DualEncoderConfig, exist_ok=True)
AutoModel.register(DualEncoderConfig, DualEncoder, exist_ok=True)


# --- building ------------------------------------------------------------------------------------


def _tower_family(folder: Path) -> str:
    model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    for family in ("siglip", "clip"):
        if model_type.startswith(family):
            return family
    raise ValueError(f"{folder}: model_type {model_type!r} is not a CLIP or SigLIP checkpoint")


def _load_tower(folder: str | Path, towers: dict):
    """A pretrained vision or text tower from a local folder (a full CLIP/SigLIP checkpoint or
    just the tower), safetensors only."""
    folder = Path(folder)
    require_safetensors(folder)
    family = _tower_family(folder)
    tower = towers[family][1].from_pretrained(folder, use_safetensors=True, local_files_only=True)
    return family, tower


def build_dual_encoder(
    texts: Iterable[str],
    num_frames: int = 8,
    image_size: int = 32,
    patch_size: int = 16,
    vision_width: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 4,
    text_width: int = 64,
    text_layers: int = 1,
    text_heads: int = 4,
    temporal_layers: int = 1,
    temporal_heads: int = 4,
    projection_dim: int = 64,
    max_text_length: int = 32,
    tower_type: str = "clip",
    loss: str = "infonce",
    vision_path: str | Path | None = None,
    text_path: str | Path | None = None,
) -> DualEncoder:
    """A fresh dual encoder. Tiny CLIP (or SigLIP) towers from config with a word-level
    tokenizer over `texts` (pass the training captions and any class names / queries you will
    embed), or pretrained towers from local folders; the temporal model and projections are
    always new. The logit scale/bias start where CLIP (InfoNCE) or SigLIP (sigmoid) start.
    The default sizes are the ones tuned on the embedded corpus (benchmarks/caption_sources.py):
    32 px frames in 4 patches train ~2x faster than 16 patches and learn motion as well on 2
    CPU cores."""
    from model_code.models.text import build_word_tokenizer

    vision_tower, text_tower, image_stats = None, None, (None, None)
    if vision_path is not None:
        vision_type, vision_tower = _load_tower(vision_path, VISION_TOWERS)
        vision_config = vision_tower.config.to_dict()
        image_stats = _image_stats(Path(vision_path))
    else:
        vision_type = tower_type
        vision_config = {
            "image_size": image_size,
            "patch_size": patch_size,
            "hidden_size": vision_width,
            "intermediate_size": 4 * vision_width,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads,
            "attention_dropout": 0.0,
        }
    if text_path is not None:
        text_type, text_tower = _load_tower(text_path, TEXT_TOWERS)
        text_config = text_tower.config.to_dict()
        tokenizer = AutoTokenizer.from_pretrained(text_path, local_files_only=True)
        max_text_length = min(max_text_length, text_tower.config.max_position_embeddings)
    else:
        text_type = tower_type
        tokenizer = build_word_tokenizer(texts, model_max_length=max_text_length)
        text_config = {
            "vocab_size": len(tokenizer),
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "max_position_embeddings": max_text_length,
            "attention_dropout": 0.0,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        if text_type == "siglip":
            text_config["projection_size"] = text_width
    sigmoid = loss == "sigmoid"
    config = DualEncoderConfig(
        vision_tower_type=vision_type,
        vision_tower_config=vision_config,
        text_tower_type=text_type,
        text_tower_config=text_config,
        num_frames=num_frames,
        temporal_layers=temporal_layers,
        temporal_heads=temporal_heads,
        projection_dim=projection_dim,
        image_mean=image_stats[0],
        image_std=image_stats[1],
        max_text_length=max_text_length,
        loss=loss,
        logit_scale_init=math.log(10.0) if sigmoid else math.log(1 / 0.07),
        logit_bias_init=-10.0 if sigmoid else 0.0,
    )
    model = DualEncoder(config)
    if vision_tower is not None:
        model.vision_model.load_state_dict(vision_tower.state_dict())
    if text_tower is not None:
        model.text_model.load_state_dict(text_tower.state_dict())
    model.tokenizer = tokenizer
    return model


def _image_stats(folder: Path) -> tuple[list[float] | None, list[float] | None]:
    """The checkpoint's own normalisation, when its folder has a preprocessor_config.json."""
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return None, None
    pre = json.loads(path.read_text())
    return pre.get("image_mean"), pre.get("image_std")


# --- evaluation helpers ------------------------------------------------------------------------


def _batched(items: Iterable, batch_size: int) -> Iterable[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _embed(model: DualEncoder, items: Iterable, batch_size: int, encode) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for batch in _batched(items, batch_size):
                out.append(encode(batch).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.config.projection_dim), dtype=np.float32)
    return np.concatenate(out)


def embed_videos(
    model: DualEncoder, clips: Iterable[np.ndarray] | np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """uint8 clips [T, H, W, 3] (an iterable, or an array [N, T, H, W, 3]) -> float32 [N, D]."""
    return _embed(model, clips, batch_size, lambda b: model.encode_video(np.stack(b)))


def embed_texts(model: DualEncoder, texts: Iterable[str], batch_size: int = 256) -> np.ndarray:
    """Strings -> float32 [N, D] L2-normalised embeddings."""
    return _embed(model, texts, batch_size, model.encode_text)


def embed_classes(model: DualEncoder, prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """One embedding per class from its prompt ensemble (CLIP's zero-shot recipe): the mean of
    the prompts' normalised embeddings, normalised again."""
    flat = [p for group in prompts for p in group]
    emb = embed_texts(model, flat)
    out, start = [], 0
    for group in prompts:
        mean = emb[start : start + len(group)].mean(axis=0)
        out.append(mean / max(np.linalg.norm(mean), 1e-12))
        start += len(group)
    return np.stack(out).astype(np.float32)
