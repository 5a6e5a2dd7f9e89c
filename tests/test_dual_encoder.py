import itertools

import numpy as np
import pytest
import torch
from tiny_runs import TINY_DUAL_ENCODER as TINY

from model_code.models.dual_encoder import (
    DualEncoder,
    build_dual_encoder,
    embed_classes,
    embed_texts,
    embed_videos,
    preprocess_frames,
)
from model_code.training.train_dual_encoder import DualEncoderTrainConfig, train_dual_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = ["a red circle moves left", "a blue square grows , then a green triangle shrinks"]


def _clips(n=3, t=8, size=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, t, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_dual_encoder(CAPTIONS, **TINY).eval()


def test_embeddings_are_l2_normalised_and_projected(model):
    with torch.no_grad():
        v = model.encode_video(_clips())
        t = model.encode_text(CAPTIONS)
    assert v.shape == (3, 16) and t.shape == (2, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_frame_order_matters_to_the_video_tower(model):
    clips = _clips(n=2)
    reversed_clips = clips[:, ::-1]  # a negative-stride view is fine too
    with torch.no_grad():
        change = (model.encode_video(clips) - model.encode_video(reversed_clips)).abs().max()
        saved = model.time_embeddings.clone()
        model.time_embeddings.zero_()  # control: without time embeddings order is invisible
        try:
            control = (model.encode_video(clips) - model.encode_video(reversed_clips)).abs().max()
        finally:
            model.time_embeddings.copy_(saved)
    assert control < 1e-5
    assert change > 1e-3  # small at init (mean pooling), grows with training


def test_tokens_end_in_eos_which_clip_text_pooling_reads(model):
    tokens = model.tokenize(["a red circle", "grows"])
    eos, pad = model.tokenizer.eos_token_id, model.tokenizer.pad_token_id
    assert tokens["input_ids"][0, -1] == eos
    assert tokens["input_ids"][1].tolist() == [tokens["input_ids"][1, 0].item(), eos, pad, pad]
    assert model.text_model.config.eos_token_id == eos
    with torch.no_grad():
        a, b = model.encode_text(["a red circle", "a red circle moves left"])
    assert (a - b).abs().max() > 1e-3  # pooling saw the whole caption, not a fixed position


def test_save_then_from_pretrained_gives_identical_embeddings(tmp_path):
    torch.manual_seed(1)
    model = build_dual_encoder(CAPTIONS, **TINY).eval()
    with torch.no_grad():  # weights unlike any fresh init, so a re-initialised load would show
        model.logit_scale.fill_(3.0)
        model.time_embeddings.mul_(-2.0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    loaded = DualEncoder.from_pretrained(tmp_path).eval()
    assert loaded.logit_scale.item() == 3.0
    assert torch.equal(loaded.time_embeddings, model.time_embeddings)
    clips = _clips()
    assert np.array_equal(embed_videos(model, clips), embed_videos(loaded, clips))
    assert np.array_equal(embed_texts(model, CAPTIONS), embed_texts(loaded, CAPTIONS))


def test_a_pickle_only_folder_is_refused(model, tmp_path):
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        DualEncoder.from_pretrained(tmp_path)


def test_a_folder_without_weights_is_refused_by_both_loaders(model, tmp_path):
    from model_code.models.video_vlm import VideoVLM

    model.config.save_pretrained(tmp_path)
    for load in (DualEncoder.from_pretrained, VideoVLM.from_pretrained):
        with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
            load(tmp_path)


def test_preprocess_resizes_and_normalises_uint8_frames():
    frames = np.full((2, 4, 24, 24, 3), 255, dtype=np.uint8)
    x = preprocess_frames(frames, 16, [0.5] * 3, [0.25] * 3)
    assert x.shape == (2, 4, 3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 2.0))
    with pytest.raises(TypeError):
        preprocess_frames(frames.astype(np.float32), 16, [0.5] * 3, [0.25] * 3)


def test_embed_helpers_batch_iterables_like_arrays(model):
    clips = _clips(n=5)
    whole = embed_videos(model, clips, batch_size=64)
    streamed = embed_videos(model, iter(list(clips)), batch_size=2)
    assert whole.shape == (5, 16) and np.allclose(whole, streamed, atol=1e-5)
    classes = embed_classes(model, [["a red circle"], ["a blue square", "a green triangle"]])
    assert classes.shape == (2, 16) and np.allclose(np.linalg.norm(classes, axis=1), 1.0)


def test_other_frame_counts_resample_the_time_embeddings(model):
    with torch.no_grad():
        assert model.encode_video(_clips(n=2, t=5)).shape == (2, 16)


def test_siglip_towers_learn_the_sigmoid_bias_and_infonce_leaves_it(tmp_path):
    from transformers import SiglipTextModel, SiglipVisionModel

    pairs = [(c, CAPTIONS[i % 2]) for i, c in enumerate(_clips(n=8))]
    for loss in ("sigmoid", "infonce"):
        torch.manual_seed(0)
        model = build_dual_encoder(CAPTIONS, tower_type="siglip", loss=loss, **TINY)
        assert isinstance(model.vision_model, SiglipVisionModel)
        assert isinstance(model.text_model, SiglipTextModel)
        bias = model.logit_bias.item()
        cfg = DualEncoderTrainConfig(
            steps=3, batch_size=4, warmup_steps=1, lr=1e-2, loss=loss, log_every=1
        )
        train_dual_encoder(model, pairs, cfg)
        assert (model.logit_bias.item() != bias) == (loss == "sigmoid"), loss
        model.save_pretrained(tmp_path / loss)
        loaded = DualEncoder.from_pretrained(tmp_path / loss)
        assert (loaded.config.vision_tower_type, loaded.config.loss) == ("siglip", loss)
        assert loaded.logit_bias.item() == model.logit_bias.item()


def test_training_lowers_the_loss_and_resumes_from_its_state(tmp_path):
    torch.manual_seed(0)
    clips = _clips(n=16, size=16)
    pairs = [(c, f"clip number {i}") for i, c in enumerate(clips)]
    model = build_dual_encoder([p[1] for p in pairs], **TINY)
    history = []
    cfg = DualEncoderTrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, log_every=5)
    state = tmp_path / "state.pt"
    train_dual_encoder(
        model, pairs, cfg, on_metrics=lambda s, m: history.append(m["loss"]), state_path=state
    )
    assert history[-1] < history[0] - 0.3
    assert state.exists()
    cfg.steps = 32
    more = train_dual_encoder(model, pairs, cfg, state_path=state)
    assert more["steps"] == 32 and more["steps_run"] == 2
    assert 0 <= more["data_wait_share"] < 1  # reported with every run: is the data path keeping up


def test_training_reports_how_long_it_waited_for_data():
    import time

    torch.manual_seed(0)
    pairs = [(c, f"clip number {i}") for i, c in enumerate(_clips(n=8, size=16))]

    class Slow(torch.utils.data.Dataset):  # a data path that cannot keep up
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            time.sleep(0.05)
            return pairs[i]

    cfg = DualEncoderTrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=2)
    slow = train_dual_encoder(build_dual_encoder([p[1] for p in pairs], **TINY), Slow(), cfg)
    fast = train_dual_encoder(build_dual_encoder([p[1] for p in pairs], **TINY), pairs, cfg)
    assert slow["data_wait_share"] > 0.3 > fast["data_wait_share"]


def test_cli_trains_from_shards_and_writes_a_loadable_folder(tmp_path):
    import pandas as pd

    from model_code.data import corpus, shards
    from model_code.models.lineage import read_lineage
    from model_code.training.train_dual_encoder import main

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 8)
    shard = tmp_path / "clips" / "p0.tar"
    shards.write_shard(shard, shards.embedded_clips(specs))
    captions = [corpus.ground_truth_caption(s) for s in specs]
    pd.DataFrame({"key": [s.key for s in specs], "caption": captions}).to_parquet(
        tmp_path / "pairs.parquet"
    )
    out = tmp_path / "dual_encoder"
    args = [
        "--pairs",
        str(tmp_path / "pairs.parquet"),
        "--shards",
        str(shard),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--num-workers",
        "2",
        "--log-every",
        "1",
        "--state",
        str(tmp_path / "state.pt"),
    ]
    assert main(args) == 0
    model = DualEncoder.from_pretrained(out)
    assert read_lineage(out)["metrics"]["steps"] == 3
    assert embed_texts(model, captions[:2]).shape == (2, model.config.projection_dim)


def _captioned_shard(tmp_path, n: int):
    from model_code.data import corpus, shards

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, n)
    shard = tmp_path / "clips.tar"
    shards.write_shard(shard, shards.embedded_clips(specs))
    return shard, {s.key: [corpus.ground_truth_caption(s)] for s in specs}


def test_streaming_pairs_flow_from_the_first_clip(tmp_path, monkeypatch):
    from model_code.data import shards
    from model_code.data.pair_data import ShardPairs

    shard, captions = _captioned_shard(tmp_path, 24)
    decoded = []
    real = shards.decode_members
    monkeypatch.setattr(shards, "decode_members", lambda *a: decoded.append(a[1]) or real(*a))
    stream = iter(ShardPairs([str(shard)], captions, num_frames=2))
    next(stream)
    assert len(decoded) == 1  # no buffer of decoded frames to fill before the first pair
    rest_of_pass = [caption for _, caption in itertools.islice(stream, 23)]
    assert len(decoded) == 24 and len(rest_of_pass) == 23


def test_streaming_readers_split_the_clips_and_reshuffle_each_pass(tmp_path, monkeypatch):
    import model_code.data.pair_data as train
    from model_code.data.pair_data import ShardPairs

    shard, captions = _captioned_shard(tmp_path, 10)

    def passes(reader: int, seed: int, n: int) -> list[str]:
        monkeypatch.setattr(train, "_reader", lambda rotate=0: (reader, 3, 0))
        pairs = iter(ShardPairs([str(shard)], captions, num_frames=2, seed=seed))
        return [caption for _, caption in itertools.islice(pairs, n)]

    shares = [passes(r, seed=1, n=2 * len(range(r, 10, 3))) for r in range(3)]
    first = [share[: len(share) // 2] for share in shares]
    second = [share[len(share) // 2 :] for share in shares]
    everything = sorted(c for cs in captions.values() for c in cs)
    once_each = [sorted(c for share in half for c in share) for half in (first, second)]
    assert once_each == [everything, everything]  # every clip once per pass
    assert first != second  # each pass in a new order
    assert passes(0, seed=1, n=8) == shares[0]  # the same seed gives the same order
    assert passes(0, seed=2, n=8) != shares[0]


def test_streaming_pairs_through_three_dataloader_workers_are_reproducible(tmp_path):
    from torch.utils.data import DataLoader

    from model_code.data.pair_data import ShardPairs

    shard, captions = _captioned_shard(tmp_path, 10)

    def first_pairs(seed: int) -> list[str]:
        loader = DataLoader(
            ShardPairs([str(shard)], captions, num_frames=2, seed=seed),
            batch_size=None,
            num_workers=3,
        )
        return [caption for _, caption in itertools.islice(loader, 12)]

    first = first_pairs(seed=1)
    assert set(first) == {c for cs in captions.values() for c in cs}
    assert first_pairs(seed=1) == first


def test_a_clip_with_several_captions_is_shown_with_each_over_the_passes(tmp_path):
    """One caption a visit, drawn by seed: every caption of a clip comes up over the passes,
    in memory and streamed, and the same seed draws the same captions again."""
    from model_code.data.pair_data import ClipCaptions, ShardPairs

    shard, single = _captioned_shard(tmp_path, 4)
    captions = {k: [f"{c} take {i}" for i in range(3)] for k, (c,) in single.items()}
    keys = list(captions)
    frames = [np.zeros((2, 8, 8, 3), np.uint8)] * len(keys)

    def in_memory(seed: int, passes: int = 12) -> list[list[str]]:
        data = ClipCaptions(frames, [captions[k] for k in keys], seed=seed)
        drawn = []
        for epoch in range(passes):
            data.set_epoch(epoch)
            drawn.append([data[i][1] for i in range(len(keys))])
        return drawn

    drawn = in_memory(seed=1)
    for i, key in enumerate(keys):
        assert {d[i] for d in drawn} == set(captions[key])  # every caption of the clip
    assert in_memory(seed=1) == drawn and in_memory(seed=2) != drawn
    assert len(ClipCaptions(frames, [captions[k] for k in keys])) == len(keys)  # a clip a visit

    def streamed(seed: int) -> list[str]:
        return [
            c
            for _, c in itertools.islice(
                iter(ShardPairs([str(shard)], captions, num_frames=2, seed=seed)), 4 * 12
            )
        ]

    pairs = streamed(seed=1)
    assert set(pairs) == {c for cs in captions.values() for c in cs}
    assert streamed(seed=1) == pairs and streamed(seed=2) != pairs


def test_the_cli_writes_a_checkpoint_with_its_lineage(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from model_code.data import corpus, shards

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 8)
    shards.write_shard(tmp_path / "p0.tar", shards.embedded_clips(specs))
    pd.DataFrame(
        {"key": [s.key for s in specs], "caption": [corpus.ground_truth_caption(s) for s in specs]}
    ).to_parquet(tmp_path / "pairs.parquet")
    out = tmp_path / "de"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_code.training.train_dual_encoder",
            "--pairs",
            str(tmp_path / "pairs.parquet"),
            "--shards",
            str(tmp_path / "p0.tar"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--log-every",
            "1",
            "--seed",
            "3",
            "--device",
            "cpu",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "dual_encoder"
    assert lineage["training_config"]["steps"] == 2 and lineage["training_config"]["seed"] == 3
    assert lineage["parents"] == {"pairs": str(tmp_path / "pairs.parquet")}
    assert lineage["data"]["pairs"] == 8 and lineage["data"]["clips"] == 8
    assert lineage["metrics"]["steps"] == 2
    assert (
        DualEncoder.from_pretrained(out).config.num_frames
        == lineage["training_config"]["num_frames"]
    )
