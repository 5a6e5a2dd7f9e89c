"""The whole asset graph, tiny, through Dagster: what a user gets from materializing it."""

import json

import pytest
from dagster import instance_for_test, materialize
from tiny_runs import CAPTIONING, FEW, RUN_CONFIG, dual_encoder_op

from pipelines.definitions import defs, make_resources
from resources.sources import ClipSource

ASSETS = list(defs.assets)


RECIPE_SOURCES = ("alt_text", "frame_captions", "pseudo_captions", "ground_truth")


def _trained(source: str) -> list[str]:
    return [f"dual_encoder/{source}", f"benchmark_scores/{source}"]


def _run(instance, resources, names, partition_key=None, extra=None):
    run_config = {"ops": {**RUN_CONFIG["ops"], **(extra or {})}}
    ops = {name.replace("/", "__") for name in names}
    selected = {k: v for k, v in run_config["ops"].items() if k in ops}
    result = materialize(
        ASSETS,
        selection=names,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config={"ops": selected},
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(str(root))
    resources["clip_source"] = ClipSource(corpus_clips=24, clips_per_shard=12)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("seeds", ["0"])
        _run(instance, resources, ["clip_shard_plan"])
        partitions = instance.get_dynamic_partitions("clip_shards")
        for p in partitions:
            _run(instance, resources, ["clip_shards"], p)
        _run(
            instance,
            resources,
            [
                "image_vlm",
                "video_caption_data",
                "retrieval_benchmark",
                "adapted_encoder",
                "instruction_data",
                "instruction_tuned_lm",
                "visual_adapted_vlm",
                "video_vlm",
                "captioner_eval",
            ],
        )
        captions = {"frame_captions": CAPTIONING, "pseudo_captions": CAPTIONING}
        for p in partitions:
            _run(instance, resources, ["frame_captions", "pseudo_captions"], p, captions)
        _run(instance, resources, ["caption_statistics"])
        for source in RECIPE_SOURCES:
            _run(instance, resources, _trained(source), "0")
        _run(instance, resources, ["ablation_table", "video_index"])
        yield resources, instance, partitions


def _is_png(path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.format == "PNG" and min(image.size) > 100


def test_vlm_checkpoints_load_with_plain_transformers_and_name_their_parts(pipeline):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from model_code.models.lineage import read_lineage

    resources, _, _ = pipeline
    store = resources["store"]
    versions = {
        name: read_lineage(store.checkpoint(name))
        for name in (
            "image_vlm",
            "adapted_encoder",
            "instruction_tuned_lm",
            "visual_adapted_vlm",
            "video_vlm",
        )
    }
    for name in ("image_vlm", "visual_adapted_vlm", "video_vlm"):
        folder = store.checkpoint(name)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
        AutoProcessor.from_pretrained(folder, local_files_only=True)
        assert model.config.model_type == "llava"
    image = versions["image_vlm"]["version"]
    assert versions["adapted_encoder"]["parents"] == {"image_vlm": image}
    assert versions["instruction_tuned_lm"]["parents"] == {
        "image_vlm": image,
        "adapted_encoder": versions["adapted_encoder"]["version"],
    }
    assert versions["visual_adapted_vlm"]["parents"] == {
        name: versions[name]["version"] for name in ("image_vlm", "adapted_encoder")
    }
    assert versions["video_vlm"]["parents"] == {
        name: versions[name]["version"]
        for name in ("image_vlm", "adapted_encoder", "instruction_tuned_lm")
    }
    for name in ("image_vlm", "adapted_encoder", "instruction_tuned_lm"):  # each run's curves
        assert _is_png(store.checkpoint(name) / "training_curves.png")
    run = resources["tracking"].client().get_run(versions["instruction_tuned_lm"]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "loss" in run.data.metrics


def test_stage_outputs_hold_only_the_weights_they_trained(pipeline):
    from safetensors import safe_open

    resources, _, _ = pipeline
    store = resources["store"]

    def names(name: str) -> set[str]:
        with safe_open(store.checkpoint(name) / "model.safetensors", "pt") as f:
            return set(f.keys())

    import torch
    from safetensors.torch import load_file

    from model_code.models.video_vlm import VideoVLM

    encoder, lm = names("adapted_encoder"), names("instruction_tuned_lm")
    assert encoder and all(
        k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in encoder
    )
    assert lm and all(k.startswith(("model.language_model.", "lm_head.")) for k in lm)
    # the composed video_vlm holds exactly the two trained parts
    composed = VideoVLM.from_pretrained(store.checkpoint("video_vlm"), device="cpu")
    for part, name in (("vision", "adapted_encoder"), ("language", "instruction_tuned_lm")):
        saved = load_file(store.checkpoint(name) / "model.safetensors")
        mine = composed.part_state(part)
        assert mine.keys() == saved.keys()
        assert all(torch.equal(mine[k], saved[k]) for k in saved)


def test_every_clip_gets_one_caption_per_caption_source(pipeline):
    resources, _, partitions = pipeline
    catalog = resources["catalog"]
    clips = int(catalog.query("SELECT count(*) n FROM clips")["n"][0])
    rejects = (
        int(catalog.query("SELECT count(*) n FROM rejects")["n"][0])
        if catalog.has("rejects")
        else 0
    )
    counts = catalog.query(
        "SELECT source, captioner_version, count(*) n, count(DISTINCT key) k, "
        "count(DISTINCT partition) p FROM captions GROUP BY 1, 2"
    ).to_dict("records")
    assert {(c["source"], c["captioner_version"].split("-")[0]) for c in counts} == {
        ("frame_captions", "image_vlm"),
        ("pseudo_captions", "video_vlm"),
    }
    for c in counts:
        assert c["n"] == c["k"] == clips - rejects and c["p"] == len(partitions)
    store = resources["store"]
    assert (
        sorted(p.stem for p in store.path("captions").glob("pseudo_captions-video_vlm-*/*.parquet"))
        == partitions
    )


def test_ablation_table_has_a_row_per_caption_source(pipeline):
    resources, _, _ = pipeline
    table = resources["store"].path("ablation_table.md").read_text()
    for source in ("alt_text", "frame_captions", "pseudo_captions", "ground_truth"):
        assert f"| {source} |" in table
    scores = resources["catalog"].query("SELECT source, t2v_R1, v2t_R1 FROM scores")
    assert len(scores) == 4 and scores["t2v_R1"].between(0, 100).all()
    assert _is_png(resources["store"].path("ablation_table.png"))
    assert _is_png(resources["store"].path("caption_statistics.png"))
    evals = json.loads(resources["store"].path("captioner_eval.json").read_text())
    assert [r["model"] for r in evals] == ["image_vlm", "visual_adapted_vlm", "video_vlm"]
    assert all("motion_acc" in r for r in evals)


def test_retraining_a_dual_encoder_gives_the_same_weights(pipeline):
    import torch

    from model_code.models.lineage import folder_hash

    resources, instance, _ = pipeline
    folder = resources["store"].dual_encoder("alt_text", 0)
    before = folder_hash(folder)
    torch.rand(1000)  # whatever ran before in the process must not change the initial weights
    _run(instance, resources, ["dual_encoder/alt_text"], "0")
    assert folder_hash(folder) == before


def test_video_index_answers_a_text_query(pipeline):
    from model_code.inference.video_index import search
    from model_code.models.dual_encoder import DualEncoder, embed_texts

    resources, _, _ = pipeline
    store = resources["store"]
    model = DualEncoder.from_pretrained(store.dual_encoder("pseudo_captions", 0))
    hits = search(
        store.path("video_index", "index.duckdb"),
        embed_texts(model, ["a red circle moves left"])[0],
        k=3,
    )
    assert len(hits) == 3 and hits["score"].is_monotonic_decreasing
    assert set(hits["key"]) <= set(resources["catalog"].query("SELECT key FROM clips")["key"])


def test_video_index_finds_each_clip_by_its_own_embedding(pipeline):
    """The index holds each clip's embedding under its own key, made by seed 0's pseudo-caption
    encoder: a clip's frames, embedded here independently, find that very clip first, and every
    score is the cosine the model gives the pair (a key/row mix-up, another checkpoint or stale
    embeddings would all put another clip first or move the scores)."""
    from model_code.data.shards import load_clips
    from model_code.inference.video_index import search
    from model_code.models.dual_encoder import DualEncoder, embed_texts, embed_videos

    resources, _, partitions = pipeline
    store = resources["store"]
    model = DualEncoder.from_pretrained(store.dual_encoder("pseudo_captions", 0))
    keys, frames, _, _ = load_clips(store.shard(partitions[-1]), model.config.num_frames)
    clips = embed_videos(model, frames[:4])
    index = store.path("video_index", "index.duckdb")
    for key, embedding in zip(keys[:4], clips, strict=True):
        hits = search(index, embedding, k=3)
        assert hits["key"].iloc[0] == key
        assert hits["score"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    text = embed_texts(model, ["a red circle moves left"])[0]
    ranked = search(index, text, k=len(keys) * len(partitions))
    by_key = dict(zip(ranked["key"], ranked["score"], strict=True))
    for key, embedding in zip(keys[:4], clips, strict=True):
        assert by_key[key] == pytest.approx(float(embedding @ text), abs=1e-4)


def _latest(instance, name: str, partition: str | None = None):
    from dagster import AssetKey, AssetRecordsFilter

    key = AssetKey.from_user_string(name)
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].asset_materialization


def _stale(instance, name: str) -> dict:
    from dagster import AssetKey

    from pipelines.staleness import stale_causes

    return stale_causes(instance, defs.resolve_asset_graph(), AssetKey.from_user_string(name))


def test_each_seed_is_a_partition_with_its_own_checkpoint_and_version(pipeline):
    from dagster import AssetKey

    from model_code.models.lineage import read_lineage

    resources, instance, _ = pipeline
    store = resources["store"]
    instance.add_dynamic_partitions("seeds", ["1"])
    _run(instance, resources, _trained("alt_text"), "1")
    folders = [store.dual_encoder("alt_text", seed) for seed in (0, 1)]
    lineages = [read_lineage(f) for f in folders]
    assert [lin["training_config"]["seed"] for lin in lineages] == [0, 1]
    versions = [
        _latest(instance, "dual_encoder/alt_text", p).tags["dagster/data_version"] for p in "01"
    ]
    assert versions == [lin["version"] for lin in lineages]  # each partition is its folder
    assert versions[0] != versions[1]
    assert instance.get_materialized_partitions(AssetKey(["dual_encoder", "alt_text"])) == {
        "0",
        "1",
    }
    # the ablation table reads both seeds' scores from Dagster's records, not from the files
    _run(instance, resources, ["ablation_table"])
    table = store.path("ablation_table.md").read_text()
    assert "| alt_text | 2 |" in table and "| pseudo_captions | 1 |" in table


def test_the_search_index_goes_stale_only_when_seed_0_changes(pipeline):
    resources, instance, _ = pipeline
    assert _stale(instance, "video_index") == {}
    instance.add_dynamic_partitions("seeds", ["1"])
    _run(instance, resources, ["dual_encoder/pseudo_captions"], "1")
    assert _stale(instance, "video_index") == {}  # another seed: not what the index loads
    _run(
        instance,
        resources,
        ["dual_encoder/pseudo_captions"],
        "0",
        extra={dual_encoder_op("pseudo_captions"): {"config": {"steps": 3, "batch_size": 8}}},
    )
    (causes,) = _stale(instance, "video_index").values()
    assert [c.split()[0] for c in causes] == ["dual_encoder/pseudo_captions"]
    _run(instance, resources, ["video_index"])
    assert _stale(instance, "video_index") == {}


def test_a_new_video_vlm_makes_its_captions_stale_and_the_sensor_refreshes_exactly_those(
    pipeline,
):
    from dagster import SkipReason, build_sensor_context

    from pipelines.staleness import stale_captions

    resources, instance, partitions = pipeline
    assert _stale(instance, "pseudo_captions") == {}
    old = _latest(instance, "video_vlm").tags["dagster/data_version"]
    _run(
        instance,
        resources,
        ["instruction_tuned_lm", "video_vlm"],
        extra={"instruction_tuned_lm": {"config": {"steps": 4, "batch_size": 4}}},
    )
    assert _latest(instance, "video_vlm").tags["dagster/data_version"] != old
    stale = _stale(instance, "pseudo_captions")
    assert sorted(stale) == partitions  # every partition the old captioner wrote
    assert all(c[0].startswith("video_vlm ") for c in stale.values())
    assert _stale(instance, "frame_captions") == {}  # the image VLM did not change

    with build_sensor_context(instance=instance, definitions=defs) as context:
        requests = list(stale_captions(context))
    assert sorted((r.asset_selection[0].to_user_string(), r.partition_key) for r in requests) == [
        ("pseudo_captions", p) for p in partitions
    ]
    for request in requests:  # what the daemon would run
        _run(
            instance,
            resources,
            ["pseudo_captions"],
            request.partition_key,
            {"pseudo_captions": CAPTIONING},
        )
    assert _stale(instance, "pseudo_captions") == {}
    with build_sensor_context(instance=instance, definitions=defs) as context:
        assert isinstance(stale_captions(context), SkipReason)
    # what trained on the old captions is stale now; the alt-text encoder is not downstream
    assert "pseudo_captions" in str(_stale(instance, "dual_encoder/pseudo_captions"))
    assert _stale(instance, "dual_encoder/alt_text") == {}
    assert _stale(instance, "dual_encoder/frame_captions") == {}


def test_a_new_image_vlm_marks_the_adapted_checkpoint_stale(pipeline):
    """Runs last: it replaces image_vlm with another version. An asset is stale when the data
    version it recorded for an input is no longer that input's: read from the
    materializations' tags through the instance's public API."""
    from dagster import AssetKey

    resources, instance, _ = pipeline

    def tags(name: str) -> dict:
        return instance.get_latest_materialization_event(AssetKey(name)).asset_materialization.tags

    def fresh(name: str, upstream: str) -> bool:
        return (
            tags(name)[f"dagster/input_data_version/{upstream}"]
            == tags(upstream)["dagster/data_version"]
        )

    assert fresh("adapted_encoder", "image_vlm") and fresh("video_vlm", "image_vlm")
    before = tags("image_vlm")["dagster/data_version"]
    _run(
        instance,
        resources,
        ["image_vlm"],
        extra={"image_vlm": {"config": {**FEW, "image_examples": 24, "seed": 1}}},
    )
    assert tags("image_vlm")["dagster/data_version"] != before  # another seed, other weights
    assert not fresh("adapted_encoder", "image_vlm")  # what Dagster marks stale
