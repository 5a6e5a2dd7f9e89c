"""The contract of the two adaptation stages and of VLM checkpoints."""

import numpy as np
import pytest
import torch

from model_code.data import corpus
from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
from model_code.models.video_vlm import VideoVLM
from model_code.training.vlm_stages import TrainConfig, language_adaptation, visual_adaptation

TINY = TinyVLMConfig(
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    num_frames=4,
)
STEPS = TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup_steps=1, device="cpu", log_every=1)


@pytest.fixture
def data():
    specs = corpus.split_specs("adapt", corpus.CorpusConfig(), 0, 8)
    clips = np.stack([corpus.render_clip(s)[[0, 5, 10, 15]] for s in specs])
    captions = [corpus.ground_truth_caption(s) for s in specs]
    return clips, captions


def _vlm(captions) -> VideoVLM:
    return build_tiny_image_vlm(captions + ["what moves ? yes no"], TINY, seed=0)


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_stage1_leaves_language_model_untouched(data):
    clips, captions = data
    vlm = _vlm(captions)
    lm, vision = _snapshot(vlm.language_parameters()), _snapshot(vlm.vision_parameters())
    metrics = visual_adaptation(vlm, clips, captions, STEPS)
    assert _same(lm, vlm.language_parameters())
    assert not _same(vision, vlm.vision_parameters())
    assert metrics["frozen_params"] >= sum(p.numel() for p in lm)


def test_stage2_leaves_vision_and_projector_untouched(data):
    clips, captions = data
    vlm = _vlm(captions)
    lm, vision = _snapshot(vlm.language_parameters()), _snapshot(vlm.vision_parameters())
    examples = [
        {"clip_index": i, "prompt": "what moves ?", "answer": c, "type": "detailed"}
        for i, c in enumerate(captions)
    ]
    language_adaptation(vlm, clips, examples, STEPS)
    assert _same(vision, vlm.vision_parameters())
    assert not _same(lm, vlm.language_parameters())


def test_stage2_lora_trains_adapters_only_and_merges_them_into_a_plain_model(data, tmp_path):
    from transformers import AutoModelForImageTextToText

    clips, captions = data
    vlm = _vlm(captions)
    lm, vision = _snapshot(vlm.language_parameters()), _snapshot(vlm.vision_parameters())
    examples = [
        {"clip_index": i, "prompt": "what moves ?", "answer": c, "type": "detailed"}
        for i, c in enumerate(captions)
    ]
    metrics = language_adaptation(vlm, clips, examples, STEPS, lora_rank=4)
    assert _same(vision, vlm.vision_parameters())
    assert not _same(lm, vlm.language_parameters())  # the adapters, merged
    assert 0 < metrics["trainable_params"] < sum(p.numel() for p in lm) / 4
    assert metrics["lora_targets"] == 7 * TINY.text_layers
    assert not any("lora" in name for name in vlm.model.state_dict())
    vlm.save_pretrained(tmp_path / "ckpt")
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    for name, tensor in vlm.model.state_dict().items():
        assert torch.equal(tensor, plain.state_dict()[name])


def test_save_load_round_trip_gives_identical_outputs(data, tmp_path):
    from transformers import AutoModelForImageTextToText

    clips, captions = data
    vlm = _vlm(captions)
    visual_adaptation(vlm, clips, captions, STEPS)
    vlm.save_pretrained(tmp_path / "ckpt")
    loaded = VideoVLM.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.version() == vlm.version()
    batch = vlm.multimodal_batch(clips[:2], ["caption the video ."] * 2, captions[:2])
    with torch.no_grad():
        a = vlm.model(**batch).logits
        b = loaded.model(
            **loaded.multimodal_batch(clips[:2], ["caption the video ."] * 2, captions[:2])
        ).logits
    assert torch.equal(a, b)
    assert vlm.caption(clips[:3]) == loaded.caption(clips[:3])
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    assert plain.config.model_type == "llava"


def test_a_pickle_checkpoint_is_refused(data, tmp_path):
    _, captions = data
    vlm = _vlm(captions)
    folder = tmp_path / "pickled"
    vlm.save_pretrained(folder)
    state = {k: v for k, v in vlm.model.state_dict().items()}
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        VideoVLM.from_pretrained(folder)


def test_frame_order_changes_the_visual_token_sequence(data):
    clips, captions = data
    moving = [i for i, c in enumerate(captions) if "still" not in c][:2]
    clips = clips[moving]
    vlm = _vlm(captions)
    with torch.no_grad():
        forward = vlm.visual_tokens(clips)
        backward = vlm.visual_tokens(clips[:, ::-1].copy())
    t, k = clips.shape[1], vlm.visual_tokens_per_frame
    assert forward.shape == (2, t * k, forward.shape[-1])
    assert not torch.allclose(forward, backward)
