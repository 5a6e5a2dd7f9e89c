"""Every VLM family vidistill supports, as a tiny random model built from its real transformers
config classes: stage 1 trains only vision + projector, stage 2 only the LM, batched captions
equal one-by-one captions, the checkpoint loads with plain transformers, and a caption
partition runs through Dagster."""

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import instance_for_test
from tiny_runs import caption_partition

from model_code.data import corpus, shards
from model_code.models.families import FAMILIES
from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
from model_code.models.video_vlm import VideoVLM
from model_code.training.configs import TrainConfig
from model_code.training.vlm_stages import language_adaptation, visual_adaptation

FAMILY_NAMES = ["llava", "paligemma", "llava_onevision", "idefics3", "smolvlm"]
TINY = {
    "vision_hidden": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "text_hidden": 32,
    "text_layers": 1,
    "text_heads": 2,
    "num_frames": 4,
}
STEPS = TrainConfig(steps=2, batch_size=4, lr=1e-2, warmup_steps=1, device="cpu", log_every=1)


@pytest.fixture(scope="module")
def data():
    specs = corpus.split_specs("adapt", corpus.CorpusConfig(), 0, 6)
    clips = np.stack([corpus.render_clip(s)[[0, 5, 10, 15]] for s in specs])
    return clips, [corpus.ground_truth_caption(s) for s in specs]


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_families_are_the_ones_named():
    assert sorted(FAMILIES) == sorted(FAMILY_NAMES)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_stages_train_their_half_and_captions_batch_and_load(family, data, tmp_path):
    from transformers import AutoModelForImageTextToText

    clips, captions = data
    vlm = build_tiny_image_vlm(captions, TinyVLMConfig(family=family, **TINY), seed=0)
    lm, vision = _snapshot(vlm.language_parameters()), _snapshot(vlm.vision_parameters())
    assert lm and vision
    visual_adaptation(vlm, clips, captions, STEPS)
    assert _same(lm, vlm.language_parameters()) and not _same(vision, vlm.vision_parameters())
    vision = _snapshot(vlm.vision_parameters())
    examples = [
        {"clip_index": i, "prompt": "describe", "answer": c} for i, c in enumerate(captions)
    ]
    language_adaptation(
        vlm,
        clips,
        examples,
        TrainConfig(steps=15, batch_size=6, lr=2e-2, warmup_steps=1, device="cpu"),
    )
    assert _same(vision, vlm.vision_parameters()) and not _same(lm, vlm.language_parameters())

    batched = vlm.caption(clips, max_new_tokens=6)
    assert batched == [vlm.caption(clips[i : i + 1], max_new_tokens=6)[0] for i in range(6)]
    vlm.save_pretrained(tmp_path)
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    assert type(plain) is type(vlm.model)
    loaded = VideoVLM.from_pretrained(tmp_path, device="cpu")
    assert loaded.family == family and loaded.version() == vlm.version()
    assert loaded.caption(clips, max_new_tokens=6) == batched


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_caption_partition_runs_with_each_family(family, tmp_path):
    from model_code.models.lineage import write_lineage
    from pipelines.definitions import make_resources

    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    good = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 5))
    shards.write_shard(store.shard("p0"), good)
    vlm = build_tiny_image_vlm(["a red circle moves left"], TinyVLMConfig(family=family, **TINY))
    vlm.save_pretrained(store.checkpoint("video_vlm"))
    write_lineage(store.checkpoint("video_vlm"), kind="video_vlm")
    permissive = {
        "batch_size": 4,
        "max_new_tokens": 4,
        "decode_workers": 0,
        "max_empty_rate": 1.0,
        "max_degenerate_rate": 1.0,
        "max_duplicate_rate": 1.0,
        "min_vocab_size": 0,
    }
    with instance_for_test() as instance:
        assert caption_partition(instance, resources, "pseudo_captions", permissive).success
    (captions,) = store.path("captions").glob("pseudo_captions-video_vlm-*/p0.parquet")
    assert sorted(pd.read_parquet(captions)["key"]) == sorted(c.key for c in good)


def test_an_unsupported_family_names_the_supported_ones(tmp_path):
    import json

    vlm = build_tiny_image_vlm(["a red circle"], TinyVLMConfig(**TINY))
    vlm.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "blip-2"}))
    with pytest.raises(ValueError, match="idefics3, llava, llava_onevision, paligemma, smolvlm"):
        VideoVLM.from_pretrained(tmp_path, device="cpu")
