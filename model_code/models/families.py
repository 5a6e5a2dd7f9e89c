"""The image-VLM families vidistill adapts (LLaVA, LLaVA-OneVision, PaliGemma, Idefics3,
SmolVLM): where each keeps its vision and language parts, and how it encodes one frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def _llava_frame_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """What LLaVA feeds its projector: the configured vision layer(s), CLS dropped by 'default'."""
    config = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    layer = config.vision_feature_layer
    layers = layer if isinstance(layer, (list, tuple)) else [layer]
    feats = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
    return feats[:, 1:] if config.vision_feature_select_strategy == "default" else feats


def _paligemma_frame_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.model.vision_tower(pixel_values).last_hidden_state


def _idefics3_frame_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Idefics3 / SmolVLM: the vision model's last hidden state, which the connector
    pixel-shuffles (scale_factor^2 patches per token) and projects."""
    return model.model.vision_model(pixel_values).last_hidden_state


@dataclass(frozen=True)
class Family:
    """Where the parts of a VLM live: `vision` (tower, projector) is what stage 1 trains,
    `language` (LM, head) what stage 2 trains."""

    vision: tuple[str, str]
    language: tuple[str, ...]
    frame_features: Callable  # (model, pixel_values [N,3,S,S]) -> projector input [N, P, Dv]
    features_as_list: bool  # how the model's forward takes pre-encoded images


LLAVA = Family(
    vision=("model.vision_tower", "model.multi_modal_projector"),
    language=("model.language_model", "lm_head"),
    frame_features=_llava_frame_features,
    features_as_list=True,
)
IDEFICS3 = Family(
    vision=("model.vision_model", "model.connector"),
    language=("model.text_model", "lm_head"),
    frame_features=_idefics3_frame_features,
    features_as_list=False,
)
FAMILIES: dict[str, Family] = {
    "llava": LLAVA,
    "llava_onevision": LLAVA,  # its image path: one view per frame, no anyres tiling
    "paligemma": Family(
        vision=("model.vision_tower", "model.multi_modal_projector"),
        language=("model.language_model", "lm_head"),
        frame_features=_paligemma_frame_features,
        features_as_list=False,
    ),
    "idefics3": IDEFICS3,
    "smolvlm": IDEFICS3,  # SmolVLM is Idefics3's architecture under its own model_type
}
