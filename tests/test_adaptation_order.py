"""The adaptation-order ablation: one switch (model_code.training.train_vlm.order_jobs) runs the
stage
programs vision-then-language, language-then-vision or jointly, each freezing the half it
should; adaptation_order_vlm trains one of the two other orders a partition, with the stages'
settings, and adaptation_order puts video_vlm and the orders materialized side by side."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from dagster import AssetKey, instance_for_test, materialize
from tiny_runs import FEW

from model_code.data import corpus, instructions, shards
from model_code.models.lineage import read_lineage, write_lineage
from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
from model_code.models.video_vlm import VideoVLM
from model_code.training.train_vlm import order_jobs, train
from pipelines.definitions import defs, make_resources

TINY = TinyVLMConfig(
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    num_frames=4,
)
STAGE = {
    "steps": 3,
    "batch_size": 4,
    "lr": 1e-2,
    "warmup_steps": 1,
    "log_every": 1,
    "device": "cpu",
}


def _image_vlm(folder: Path, specs) -> Path:
    """A tiny untrained image VLM whose tokenizer knows the captions' and questions' words."""
    records = [
        {"key": s.key, "caption": corpus.ground_truth_caption(s), "attributes": s.attributes()}
        for s in specs
    ]
    vlm = build_tiny_image_vlm(instructions.pretraining_texts(records), TINY, seed=0)
    vlm.save_pretrained(folder)
    write_lineage(folder, kind="image_vlm")
    return folder


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    """An image VLM, a dozen captioned clips and their instruction rows: what the stages read."""
    root = tmp_path_factory.mktemp("orders")
    specs = corpus.split_specs("adapt", corpus.CorpusConfig(), 0, 12)
    data = root / "video_caption_data"
    shards.write_shard(data / "clips.tar", shards.embedded_clips(specs))
    records = [
        {"key": s.key, "caption": corpus.ground_truth_caption(s), "attributes": s.attributes()}
        for s in specs
    ]
    pd.DataFrame([{k: r[k] for k in ("key", "caption")} for r in records]).to_parquet(
        data / "captions.parquet"
    )
    pd.DataFrame(instructions.make_instructions(records)).to_parquet(root / "instructions.parquet")
    return {
        "base": _image_vlm(root / "image_vlm", specs),
        "caption_data": data,
        "instructions": root / "instructions.parquet",
        "root": root,
    }


def _halves(folder) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    vlm = VideoVLM.from_pretrained(folder, device="cpu")
    return (
        [p.detach().clone() for p in vlm.vision_parameters()],
        [p.detach().clone() for p in vlm.language_parameters()],
    )


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("order", ["vision_then_language", "language_then_vision", "joint"])
def test_each_order_trains_only_the_half_it_should_at_each_step(stage_data, order):
    out = stage_data["root"] / order
    jobs = order_jobs(
        order,
        base=stage_data["base"],
        caption_data=stage_data["caption_data"],
        instructions=stage_data["instructions"],
        visual_config=STAGE,
        language_config=STAGE,
        out=out,
        parents={"image_vlm": "v0"},
    )
    start_vision, start_lm = _halves(stage_data["base"])
    if order == "joint":
        (job,) = jobs
        metrics = train(job)
        vision, lm = _halves(out)
        assert not _same(start_vision, vision) and not _same(start_lm, lm)  # both halves
        assert metrics["steps"] == 6 and metrics["frozen_params"] == 0
    else:
        first, second = jobs
        train({**first, "full_out": str(out) + ".full"})  # the whole VLM after the first stage
        train(second)
        mid_vision, mid_lm = _halves(str(out) + ".full")
        vision, lm = _halves(out)
        if order == "vision_then_language":
            assert not _same(start_vision, mid_vision) and _same(start_lm, mid_lm)
            assert _same(mid_vision, vision) and not _same(mid_lm, lm)
        else:
            assert _same(start_vision, mid_vision) and not _same(start_lm, mid_lm)
            assert not _same(mid_vision, vision) and _same(mid_lm, lm)
        trained = "vision" if order == "vision_then_language" else "language"
        part = read_lineage(first["out"])
        assert Path(first["out"]).name == f"{order}.{trained}"
        assert json.loads((Path(first["out"]) / "part.json").read_text())["part"] == trained
        assert read_lineage(out)["parents"] == {
            "image_vlm": "v0",
            f"{order}.{trained}": part["version"],
        }
    lineage = read_lineage(out)
    assert lineage["kind"] == order and lineage["data"]["order"] == order
    assert (out / "config.json").exists()  # a whole Hugging Face folder
    assert VideoVLM.from_pretrained(out, device="cpu").prompt == instructions.CAPTION_PROMPT


def test_joint_uses_both_stages_settings_and_refuses_lora(stage_data):
    visual = {**STAGE, "steps": 5, "batch_size": 2, "lr": 2e-3, "warmup_steps": 4}
    language = {**STAGE, "steps": 7, "batch_size": 6, "lr": 3e-4}
    kwargs = {"base": "b", "caption_data": "c", "instructions": "i", "out": "o"}
    (job,) = order_jobs("joint", visual_config=visual, language_config=language, **kwargs)
    assert job["stage"] == "joint_adaptation"
    assert {
        k: job["config"][k]
        for k in (
            "steps",
            "caption_steps",
            "batch_size",
            "instruction_batch_size",
            "lr",
            "language_lr",
            "warmup_steps",
        )
    } == {
        "steps": 12,
        "caption_steps": 5,
        "batch_size": 2,
        "instruction_batch_size": 6,
        "lr": 2e-3,
        "language_lr": 3e-4,
        "warmup_steps": 4,
    }
    with pytest.raises(ValueError, match="lora_rank=4"):
        order_jobs(
            "joint", visual_config=visual, language_config={**language, "lora_rank": 4}, **kwargs
        )
    with pytest.raises(ValueError, match="order must be one of"):
        order_jobs("backwards", visual_config=visual, language_config=language, **kwargs)


# --- the assets ------------------------------------------------------------------------------


def test_each_order_is_a_partition_and_the_comparison_reads_those_materialized(tmp_path):
    assets = list(defs.assets)
    resources = make_resources(str(tmp_path / "data"))
    specs = corpus.split_specs("adapt", corpus.CorpusConfig(), 0, 12)
    image_vlm = _image_vlm(tmp_path / "pretrained", specs)
    with instance_for_test() as instance:

        def run(names, ops=None, **kwargs):
            return materialize(
                assets,
                selection=names,
                instance=instance,
                resources=resources,
                run_config={"ops": ops or {}},
                **kwargs,
            )

        assert run(
            ["image_vlm", "video_caption_data", "instruction_data", "retrieval_benchmark"],
            {
                "image_vlm": {"config": {"pretrained_path": str(image_vlm)}},
                "video_caption_data": {"config": {"clips": 12}},
                "retrieval_benchmark": {"config": {"clips": 10}},
            },
        ).success
        # the two stages as their assets would launch them, run here (a torchrun start less
        # each); video_vlm composes them
        store = resources["store"]
        stage = {
            "config": {**FEW, "device": "cpu"},
            "base": str(store.checkpoint("image_vlm")),
            "caption_data": str(store.path("video_caption_data")),
            "instructions": str(store.path("instruction_data", "instructions.parquet")),
        }
        train(
            {**stage, "stage": "adapted_encoder", "out": str(store.checkpoint("adapted_encoder"))}
        )
        train(
            {
                **stage,
                "stage": "instruction_tuned_lm",
                "out": str(store.checkpoint("instruction_tuned_lm")),
                "encoder": str(store.checkpoint("adapted_encoder")),
            }
        )
        assert run(["video_vlm"]).success

        # no order trained yet: the comparison names what to materialize
        nothing = run(["adaptation_order"], raise_on_error=False)
        assert not nothing.success
        (failure,) = nothing.get_step_failure_events()
        assert "materialize adaptation_order_vlm" in str(failure.step_failure_data.error)

        t0 = time.perf_counter()
        trained = run(["adaptation_order_vlm"], partition_key="joint")
        assert trained.success
        result = run(["adaptation_order"])
        assert result.success
        print(f"adaptation_order_vlm[joint] + adaptation_order: {time.perf_counter() - t0:.1f} s")
        materialized = instance.get_materialized_partitions(AssetKey("adaptation_order_vlm"))

    # the partition: checkpoints/adaptation_order/joint, a whole VLM, trained with the stages'
    # settings (read from their lineage) on the image VLM
    folder = store.checkpoint("adaptation_order/joint")
    assert materialized == {"joint"}
    assert not store.checkpoint("adaptation_order/language_then_vision").exists()
    lineage = read_lineage(folder)
    assert (folder / "config.json").exists()
    assert lineage["kind"] == "joint" and lineage["data"]["order"] == "joint"
    assert lineage["parents"]["image_vlm"] == read_lineage(store.checkpoint("image_vlm"))["version"]
    settings = read_lineage(store.checkpoint("adapted_encoder"))["training_config"]
    config = lineage["training_config"]
    assert config["seed"] == settings["seed"] and config["batch_size"] == FEW["batch_size"]
    assert config["steps"] == 2 * FEW["steps"]  # both stages' steps, in one run
    (vlm,) = trained.asset_materializations_for_node("adaptation_order_vlm")
    assert vlm.partition == "joint"
    assert vlm.metadata["path"].value == str(folder)
    assert vlm.metadata["order"].value == "joint"
    assert vlm.tags["dagster/data_version"] == lineage["version"]

    # the comparison: video_vlm (vision then language) and exactly the orders materialized
    (materialization,) = result.asset_materializations_for_node("adaptation_order")
    rows = json.loads(store.path("adaptation_order.json").read_text())
    assert [r["order"] for r in rows] == ["vision_then_language", "joint"]
    for r in rows:
        assert {
            "CIDEr",
            "BLEU-4",
            "motion_acc",
            "qa_exact",
            "qa_soft",
            "qa_direction_exact",
            "qa_counting_soft",
        } <= set(r)
    table = store.path("adaptation_order.md").read_text()
    assert "| joint |" in table and "Video QA by question type" in table
    assert "joint" in materialization.metadata["comparison"].value
    assert materialization.metadata["joint.path"].value == str(folder)
    tracked = (
        resources["tracking"]
        .client()
        .search_runs(
            [resources["tracking"].client().get_experiment_by_name("vidistill").experiment_id],
            "attributes.run_name = 'adaptation_order'",
        )
    )
    assert tracked and "joint.qa_exact" in tracked[0].data.metrics
