"""A tiny image VLM built from a config (a LLaVA with small towers and the corpus's word
tokenizer): the default base of the recipe on CPU, and the model every test trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_code.data.instructions import CAPTION_PROMPT, IMAGE_PROMPT
from model_code.models.families import FAMILIES
from model_code.models.text import build_word_tokenizer
from model_code.models.video_vlm import VideoVLM


@dataclass
class TinyVLMConfig:
    """A VLM small enough to train on 2 CPU cores in about a minute per stage."""

    family: str = "llava"
    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    num_frames: int = 8
    pooling: str = "moments"
    pooled_tokens_per_frame: int = 4  # pooling="grid" only: a square dividing the patch grid
    position_code: bool = True
    frame_differences: bool = True
    max_position_embeddings: int = 256


def build_tiny_image_vlm(texts: list[str], config: TinyVLMConfig, seed: int = 0) -> VideoVLM:
    """An untrained VLM of `config.family` (SigLIP vision + Llama for LLaVA, + Gemma for
    PaliGemma) with a word-level tokenizer over `texts`."""
    from transformers import (
        GemmaConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer([*texts, CAPTION_PROMPT, IMAGE_PROMPT])
    tokenizer.padding_side = "left"
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = SiglipVisionConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.vision_hidden,
        intermediate_size=4 * config.vision_hidden,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        projection_dim=config.text_hidden,
    )
    text_kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_hidden,
        "intermediate_size": 4 * config.text_hidden,
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.text_heads,
        "num_key_value_heads": config.text_heads,
        "head_dim": config.text_hidden // config.text_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": True,
    }
    processor = None
    if config.family == "llava":
        model_config = LlavaConfig(
            vision_config=vision,
            text_config=LlamaConfig(**text_kwargs),
            image_token_id=image_token_id,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            projector_hidden_act="gelu",
            tie_word_embeddings=True,
        )
        model = LlavaForConditionalGeneration(model_config)
        image_processor = SiglipImageProcessorPil(
            size={"height": config.image_size, "width": config.image_size}
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=config.patch_size,
            vision_feature_select_strategy="full",
        )
    elif config.family == "paligemma":
        model_config = PaliGemmaConfig(
            vision_config=vision,
            text_config=GemmaConfig(**text_kwargs),
            image_token_id=image_token_id,
            projection_dim=config.text_hidden,
            tie_word_embeddings=True,
        )
        model = PaliGemmaForConditionalGeneration(model_config)
    elif config.family == "llava_onevision":
        from transformers import (
            LlavaOnevisionConfig,
            LlavaOnevisionForConditionalGeneration,
            Qwen2Config,
        )

        model_config = LlavaOnevisionConfig(
            vision_config=vision,
            text_config=Qwen2Config(**{k: v for k, v in text_kwargs.items() if k != "head_dim"}),
            image_token_id=image_token_id,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            tie_word_embeddings=True,
        )
        model = LlavaOnevisionForConditionalGeneration(model_config)
    elif config.family in ("idefics3", "smolvlm"):
        from transformers import (
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3VisionConfig,
            SmolVLMConfig,
            SmolVLMForConditionalGeneration,
            SmolVLMVisionConfig,
        )

        idefics = config.family == "idefics3"
        vision_cls = Idefics3VisionConfig if idefics else SmolVLMVisionConfig
        vision = vision_cls(
            image_size=config.image_size,
            patch_size=config.patch_size,
            hidden_size=config.vision_hidden,
            intermediate_size=4 * config.vision_hidden,
            num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads,
        )
        config_cls = Idefics3Config if idefics else SmolVLMConfig
        model_config = config_cls(
            vision_config=vision.to_dict(),
            text_config=LlamaConfig(**text_kwargs).to_dict(),
            image_token_id=image_token_id,
            scale_factor=2,
            tie_word_embeddings=True,
        )
        model = (Idefics3ForConditionalGeneration if idefics else SmolVLMForConditionalGeneration)(
            model_config
        )
    else:
        raise ValueError(f"no tiny builder for family {config.family!r}; known: {sorted(FAMILIES)}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return VideoVLM(
        model,
        tokenizer,
        processor,
        family=config.family,
        num_frames=config.num_frames,
        pooled_tokens_per_frame=config.pooled_tokens_per_frame,
        pooling=config.pooling,
        position_code=config.position_code,
        frame_differences=config.frame_differences,
        prompt=IMAGE_PROMPT,
        device="cpu",
    )
