"""What a skeptical user tries: keys that point outside the data root, nonsense config, training
that goes wrong or is killed, broken checkpoint files, odd tar members."""

import json
import os
import random
import string
from importlib import import_module
from pathlib import Path

import pytest
from tiny_runs import TINY_VLM

from resources.storage import ArtifactStore

# --- paths built from keys stay inside the data root -----------------------------------------


def _random_key(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "._-=+/\\ :~$*?[]{}\x00\n" + "éß中🎞"
    pieces = ["..", ".", "/", "//", "~", "/etc/passwd", "..\\..", "a" * 300, "shard-00001"]
    key = ""
    for _ in range(rng.randint(0, 8)):
        key += rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
    return key


def test_every_key_maps_inside_the_data_root_or_is_refused(tmp_path):
    store = ArtifactStore(root=str(tmp_path / "data"))
    root = Path(store.root).resolve()
    rng = random.Random(0)
    refused = inside = 0
    for _ in range(5000):
        key = _random_key(rng)
        for build in (
            store.shard,
            lambda k: store.captions("video_vlm-abc", k),
            lambda k: store.captions(k, "shard-00000"),
            store.checkpoint,
            lambda k: store.path("scores", f"{k}.parquet"),
        ):
            try:
                path = build(key)
            except ValueError as error:
                assert "key" in str(error) or "name" in str(error)
                refused += 1
                continue
            inside += 1
            normal = Path(os.path.normpath(path))
            assert normal == path and normal.is_relative_to(root), (key, path)
    assert refused and inside  # both outcomes happen: the property is exercised


@pytest.mark.parametrize(
    "key", ["/some/dir/abs", "../../x", "a/../../b", "..", ".hidden", "with space", "x" * 201, ""]
)
def test_a_partition_key_outside_the_pattern_is_refused_by_name(tmp_path, key):
    store = ArtifactStore(root=str(tmp_path))
    with pytest.raises(ValueError, match="key"):
        store.shard(key)


def test_checkpoint_names_with_folders_stay_allowed(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    assert (
        store.checkpoint("dual_encoder/alt_text")
        == tmp_path.resolve() / "checkpoints" / "dual_encoder" / "alt_text"
    )


# --- every config field is checked at launch, by name ----------------------------------------

MISSING_PATH = "/nonexistent/vidistill/x"
# (config or resource class, field) -> values that must be refused. Every field of every asset
# config and resource must be here: a new field without a check fails the coverage test below.
BAD = {
    ("ClipSource", "source"): [MISSING_PATH],
    ("ClipSource", "clips_per_shard"): [-5, 0],
    ("ClipSource", "corpus_clips"): [0],
    ("ClipSource", "seed"): [-1],
    ("ClipSource", "size"): [0, 63, 8],
    ("ClipSource", "fps"): [0],
    ("ClipSource", "frames"): [0, 1],
    ("ClipSource", "clip_seconds"): [0.0, -2.0],
    ("ClipSource", "ffmpeg"): [MISSING_PATH],
    ("ClipSource", "split"): ["scenes"],
    ("ClipSource", "min_clip_seconds"): [0.0],
    ("ClipSource", "shot_threshold"): [0.0, 1.0],
    ("ClipSource", "paths_outside_manifest"): ["maybe"],
    ("ArtifactStore", "root"): [""],
    ("Catalog", "root"): [""],
    ("MlflowTracking", "tracking_uri"): ["no scheme here"],
    ("MlflowTracking", "experiment"): [""],
    ("MlflowTracking", "root"): [""],
    ("Accelerators", "lock_dir"): [""],
    ("Accelerators", "timeout_s"): [0.0, -1.0],
    ("TrainingLauncher", "backend"): ["slurm"],
    ("TrainingLauncher", "image"): ["Has Spaces"],
    ("TrainingLauncher", "namespace"): ["Not_A_Name"],
    ("TrainingLauncher", "data_volume_claim"): ["/abs"],
    ("TrainingLauncher", "gpus_per_rank"): [-1],
    ("CaptioningConfig", "batch_size"): [0, -1],
    ("CaptioningConfig", "decode_workers"): [-1],
    ("CaptioningConfig", "max_new_tokens"): [0],
    ("CaptioningConfig", "do_sample"): ["maybe"],
    ("CaptioningConfig", "num_beams"): [0],
    ("CaptioningConfig", "temperature"): [0.0],
    ("CaptioningConfig", "seed"): [-1],
    ("CaptioningConfig", "device"): ["gpu0"],
    ("CaptioningConfig", "max_empty_rate"): [-0.1, 1.5],
    ("CaptioningConfig", "max_degenerate_rate"): [2.0],
    ("CaptioningConfig", "max_duplicate_rate"): [-1.0],
    ("CaptioningConfig", "min_vocab_size"): [-1],
    ("CaptioningConfig", "top_p"): [0.0, 1.5],
    ("CaptioningConfig", "captions_per_clip"): [0, 2],
    ("BenchmarkScoresConfig", "seed"): [-1],
    ("RetrievalBenchmarkConfig", "annotations"): [MISSING_PATH],
    ("RetrievalBenchmarkConfig", "videos_dir"): [MISSING_PATH],
    ("RetrievalBenchmarkConfig", "test_list"): [MISSING_PATH],
    ("RetrievalBenchmarkConfig", "clips"): [0],
    ("RetrievalBenchmarkConfig", "protocol"): ["2k"],
    ("RetrievalBenchmarkConfig", "classes"): [MISSING_PATH],
    ("VideoCaptionDataConfig", "annotations"): [MISSING_PATH],
    ("VideoCaptionDataConfig", "videos_dir"): [MISSING_PATH],
    ("VideoCaptionDataConfig", "clips"): [0],
    ("InstructionDataConfig", "llm_path"): [MISSING_PATH],
    ("InstructionDataConfig", "seed"): [-1],
    ("ImageVLMConfig", "pretrained_path"): [MISSING_PATH],
    ("ImageVLMConfig", "trust_remote_code"): ["maybe"],
}
BAD.update(
    {
        (copy, field): values
        for (name, field), values in list(BAD.items())
        if name == "CaptioningConfig"
        for copy in ("TeacherCaptioningConfig", "SampledCaptioningConfig")
    }
)
BAD[("SampledCaptioningConfig", "captions_per_clip")] = [0, 1001]
BAD[("TeacherCaptioningConfig", "teacher_path")] = [MISSING_PATH]
TRAINING = {  # the trainers' fields (model_code.training.configs), in every launchpad config
    "steps": [-5, 0],
    "batch_size": [0],
    "lr": [0.0, -1e-3],
    "warmup_steps": [-1],
    "weight_decay": [-0.1],
    "grad_clip": [-1.0],
    "seed": [-1],
    "device": ["gpu0", ""],
    "nproc_per_node": [0],
    "checkpoint_every": [0],
    "checkpoint_every_s": [0.0],
    "log_every": [0],
    "text_steps": [-1],
    "text_batch_size": [0],
    "image_examples": [0],
    "lora_rank": [-1],
    "loss": ["triplet"],
    "num_workers": [-1],
    "in_memory_clips": [-1],
    "num_frames": [0],
    "image_size": [4],
    "patch_size": [0],
    "vision_path": [MISSING_PATH],
    "text_path": [MISSING_PATH],
    "caption_steps": [-1],
    "instruction_batch_size": [0],
    "language_lr": [0.0],
}


def _config_classes():
    """Every launchpad config of the real Definitions, and every resource."""
    import inspect

    from pipelines.definitions import defs, make_resources

    classes = {}
    for assets_def in defs.assets:
        fn = assets_def.op.compute_fn.decorated_fn
        param = inspect.signature(fn).parameters.get("config")
        if param is not None:
            classes[param.annotation.__name__] = param.annotation
    for resource in make_resources("data").values():
        classes[type(resource).__name__] = type(resource)
    return classes


def _cases():
    for name, cls in sorted(_config_classes().items()):
        for field in cls.model_fields:
            for value in BAD.get((name, field)) or TRAINING.get(field, [None]):
                yield pytest.param(cls, field, value, id=f"{name}.{field}={value!r}")


def test_every_config_field_has_a_value_that_must_be_refused():
    missing = [
        f"{name}.{field}"
        for name, cls in _config_classes().items()
        for field in cls.model_fields
        if (name, field) not in BAD and field not in TRAINING
    ]
    assert not missing, f"add out-of-range values for {missing}"


@pytest.mark.parametrize(("cls", "field", "value"), list(_cases()))
def test_an_out_of_range_value_is_refused_naming_the_field(cls, field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        cls(**{field: value})
    assert error.value.errors()[0]["loc"] == (field,)
    assert field in str(error.value)


def test_a_bad_launchpad_value_fails_the_run_before_the_step_does_anything(tmp_path):
    from dagster import instance_for_test, materialize

    from pipelines.definitions import defs, make_resources

    resources = make_resources(str(tmp_path / "data"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("seeds", ["0"])
        result = materialize(
            list(defs.assets),
            selection=["dual_encoder/alt_text"],
            partition_key="0",
            resources=resources,
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"dual_encoder__alt_text": {"config": {"steps": -5}}}},
        )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error.cause
    assert error.cls_name == "ValidationError" and "steps" in error.message
    assert not (tmp_path / "data" / "training_jobs").exists()  # nothing was launched


def test_the_trainers_refuse_bad_values_by_name_without_dagster():
    from model_code.training.configs import TRAIN_CONFIGS, from_dict

    for cls in TRAIN_CONFIGS.values():
        for field in cls.__dataclass_fields__:
            for value in TRAINING[field]:
                with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}\b"):
                    from_dict(cls, {field: value})


# --- training that goes wrong never publishes; training that is killed resumes exactly --------


class Interrupted(Exception):
    pass


def _killed_at(step: int):
    """A reporter that 'kills' the run when it reports `step` (as kill -9 would, minus the
    process: no cleanup of the training state happens either way)."""
    from model_code.training.job import Reporter

    class KilledAt(Reporter):
        def metrics(self, at: int, metrics: dict) -> None:
            if at == step:
                raise Interrupted(at)

    return KilledAt()


def _recording():
    """A reporter that keeps the steps it was told about: where a (re)run's reports begin."""
    from model_code.training.job import Reporter

    class Recording(Reporter):
        def __init__(self):
            super().__init__()
            self.steps: list[int] = []

        def metrics(self, at: int, metrics: dict) -> None:
            self.steps.append(at)

    return Recording()


def _dual_encoder_job(folder: Path, **config) -> dict:
    import pandas as pd

    from model_code.data import corpus, shards

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 16)
    if not (folder / "clips.tar").exists():
        shards.write_shard(folder / "clips.tar", shards.embedded_clips(specs))
        pd.DataFrame(
            {
                "key": [s.key for s in specs],
                "caption": [corpus.ground_truth_caption(s) for s in specs],
            }
        ).to_parquet(folder / "pairs.parquet")
    return {
        "pairs": str(folder / "pairs.parquet"),
        "shards": [str(folder / "clips.tar")],
        "config": {
            "steps": 6,
            "batch_size": 8,
            "warmup_steps": 1,
            "log_every": 1,
            "checkpoint_every": 3,
            "image_size": 16,
            "patch_size": 8,
            **config,
        },
    }


@pytest.mark.parametrize(
    ("kill_at", "saved_at", "config"),
    [
        (2, 0, {}),  # before the first save: nothing to resume, starts again from step 0
        (4, 3, {}),  # mid-epoch (2 batches an epoch): resumes at step 4, the second of epoch 1
        (5, 3, {}),
        (5, 3, {"in_memory_clips": 0, "num_workers": 2}),  # streamed from the shard by 2 workers
    ],
    ids=["step2", "step4-mid-epoch", "step5", "step5-streamed"],
)
def test_a_killed_dual_encoder_training_resumes_after_its_last_save_to_the_same_weights(
    tmp_path, kill_at, saved_at, config
):
    """Same weights alone would not show a resume (training is deterministic): the rerun must
    also start at the step after the state saved before the kill."""
    import torch

    from model_code.training.train_dual_encoder import train

    torch.set_num_threads(1)
    job = _dual_encoder_job(tmp_path, **config)
    train({**job, "out": str(tmp_path / "whole"), "state": str(tmp_path / "state-a" / "de")})
    killed = {**job, "out": str(tmp_path / "resumed"), "state": str(tmp_path / "state-b" / "de")}
    with pytest.raises(Interrupted):
        train(killed, _killed_at(kill_at))
    assert not (tmp_path / "resumed").exists()
    assert len(list((tmp_path / "state-b").glob("*.pt"))) == (saved_at > 0)  # the kill left it
    rerun = _recording()
    metrics = train(killed, rerun)
    assert rerun.steps == list(range(saved_at + 1, 7))  # reports begin after the saved step
    assert (metrics["resumed_from_step"], metrics["steps_run"]) == (saved_at, 6 - saved_at)
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors"
    ).read_bytes()
    assert not list((tmp_path / "state-b").glob("*.pt"))  # done: nothing left to resume


def _stage_job(folder: Path, stage: str) -> dict:
    """A job of VLM stage 1 (adapted_encoder) or stage 2 (instruction_tuned_lm, on instruction
    rows made of the clips' captions): 6 steps, the training state saved at step 3."""
    import pandas as pd
    from test_training_launch import _stage1_inputs

    from model_code.data.instructions import CAPTION_PROMPT

    job = _stage1_inputs(folder)
    job["config"].update(steps=6, checkpoint_every=3)
    if stage == "instruction_tuned_lm":
        captions = pd.read_parquet(Path(job["caption_data"]) / "captions.parquet")
        pd.DataFrame(
            {
                "key": captions["key"],
                "prompt": CAPTION_PROMPT,
                "answer": captions["caption"],
                "type": "detailed",
            }
        ).to_parquet(folder / "instructions.parquet")
        job.update(stage=stage, instructions=str(folder / "instructions.parquet"))
    return job


@pytest.mark.parametrize("stage", ["adapted_encoder", "instruction_tuned_lm"])
def test_a_killed_vlm_stage_resumes_after_its_last_save_to_the_same_weights(tmp_path, stage):
    import torch

    from model_code.training.train_vlm import train

    torch.set_num_threads(1)
    job = _stage_job(tmp_path, stage)
    train({**job, "out": str(tmp_path / "whole"), "state": str(tmp_path / "a")})
    killed = {**job, "out": str(tmp_path / "resumed"), "state": str(tmp_path / "b")}
    with pytest.raises(Interrupted):
        train(killed, _killed_at(5))
    assert len(list(tmp_path.glob("b-*.pt"))) == 1  # the state saved at step 3 outlives the kill
    rerun = _recording()
    metrics = train(killed, rerun)
    assert rerun.steps == [4, 5, 6]  # resumed after the save, not retrained from step 1
    assert (metrics["resumed_from_step"], metrics["steps_run"]) == (3, 3)
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors"
    ).read_bytes()
    assert not list(tmp_path.glob("b-*.pt"))


def test_a_diverged_training_fails_and_leaves_the_published_checkpoint(tmp_path, monkeypatch):
    import model_code.training.train_dual_encoder as trainer

    published = tmp_path / "out"
    published.mkdir()
    (published / "model.safetensors").write_bytes(b"the good one")
    monkeypatch.setattr(trainer, "contrastive_loss", lambda *a, **k: a[0].sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="the loss is nan at step 1"):
        trainer.train({**_dual_encoder_job(tmp_path), "out": str(published)})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert (published / "model.safetensors").read_bytes() == b"the good one"


def test_lineage_is_strict_json_even_with_a_nan_metric(tmp_path):
    from model_code.models.lineage import write_lineage

    (tmp_path / "model.safetensors").write_bytes(b"w")
    write_lineage(tmp_path, kind="dual_encoder", metrics={"loss": float("nan"), "steps": 3})

    def refuse(constant):
        raise ValueError(constant)

    record = json.loads((tmp_path / "lineage.json").read_text(), parse_constant=refuse)
    assert record["metrics"] == {"loss": None, "steps": 3}


def test_a_rerun_ends_the_mlflow_run_of_a_killed_attempt(tmp_path):
    from resources.tracking import MlflowTracking

    tracking = MlflowTracking(root=str(tmp_path))
    client = tracking.client()
    abandoned = client.create_run(tracking._experiment_id(client), run_name="dual_encoder[x]")
    with tracking.run("dual_encoder[x]"):
        pass
    assert client.get_run(abandoned.info.run_id).info.status == "KILLED"


# --- broken checkpoint files are named -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"lineage.json is not valid JSON"),
        ("[1, 2]", r"lineage.json must hold a JSON object"),
        ('{"kind": "video_vlm"}', r"lineage.json: field 'version'"),
    ],
)
def test_a_broken_lineage_file_is_named(tmp_path, text, message):
    from model_code.models.lineage import read_lineage

    (tmp_path / "lineage.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_lineage(tmp_path)


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory):
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm

    folder = tmp_path_factory.mktemp("vlm")
    config = TinyVLMConfig(**TINY_VLM)
    build_tiny_image_vlm(["a red circle"], config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: "{not json", r"vidistill.json is not valid JSON"),
        (
            lambda s: json.dumps({**s, "num_frames": 0}),
            r"vidistill.json: num_frames must be a whole",
        ),
        (lambda s: json.dumps({**s, "num_frames": "eight"}), r"num_frames must be"),
        (lambda s: json.dumps({**s, "frames": 8}), r"vidistill.json: unknown field 'frames'"),
    ],
)
def test_broken_video_settings_are_named(vlm_folder, tmp_path, edit, message):
    import shutil

    from model_code.models.video_vlm import VideoVLM

    folder = tmp_path / "vlm"
    shutil.copytree(vlm_folder, folder)
    settings = json.loads((folder / "vidistill.json").read_text())
    (folder / "vidistill.json").write_text(edit(settings))
    with pytest.raises(ValueError, match=message):
        VideoVLM.from_pretrained(folder, device="cpu")


def test_video_settings_name_pooled_tokens_and_old_checkpoints_still_load(tmp_path):
    from model_code.models.lineage import VideoSettings
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
    from model_code.models.video_vlm import VideoVLM

    config = TinyVLMConfig(
        **TINY_VLM,
        pooling="grid",
        pooled_tokens_per_frame=4,
        frame_differences=True,
    )
    vlm = build_tiny_image_vlm(["a red circle"], config)
    assert (vlm.pooled_tokens_per_frame, vlm.visual_tokens_per_frame) == (4, 8)
    vlm.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "vidistill.json").read_text())
    assert written["pooled_tokens_per_frame"] == 4 and "tokens_per_frame" not in written
    assert VideoSettings.read(tmp_path) == vlm.video_settings()
    # a checkpoint written before the rename names the pooled count tokens_per_frame
    written["tokens_per_frame"] = written.pop("pooled_tokens_per_frame")
    (tmp_path / "vidistill.json").write_text(json.dumps(written))
    old = VideoVLM.from_pretrained(tmp_path, device="cpu")
    assert (old.pooled_tokens_per_frame, old.visual_tokens_per_frame) == (4, 8)
    assert old.video_settings() == vlm.video_settings()


def test_a_checkpoint_of_another_model_family_is_named(vlm_folder, tmp_path):
    import shutil

    from model_code.models.video_vlm import VideoVLM

    folder = tmp_path / "vlm"
    shutil.copytree(vlm_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'bert' is not a VLM family"):
        VideoVLM.from_pretrained(folder, device="cpu")


# --- tar members and file modes --------------------------------------------------------------


def test_links_and_bad_keys_are_rejects_and_the_rest_of_the_shard_is_read(tmp_path):
    import io
    import tarfile

    from model_code.data import corpus, shards

    good = tmp_path / "good.tar"
    shards.write_shard(
        good, shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 2))
    )
    mixed = tmp_path / "mixed.tar"
    with tarfile.open(good) as src, tarfile.open(mixed, "w") as dst:
        for info in src:
            dst.addfile(info, src.extractfile(info))
        for name, kind in (("link.mp4", tarfile.SYMTYPE), ("link.json", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            dst.addfile(info)
        for name in ("../evil.mp4", "../evil.json"):
            info = tarfile.TarInfo(name)
            info.size = 2
            dst.addfile(info, io.BytesIO(b"{}"))
        last = src.getmembers()[-2:]  # a good sample after the bad ones
        for info in last:
            copy = tarfile.TarInfo("later." + info.name.split(".", 1)[1])
            copy.size = info.size
            dst.addfile(copy, src.extractfile(info))
    rejects = []
    members = shards.shard_members(mixed, rejects.append)
    assert len(members) == 3 and members[-1].key == "later"
    reasons = {r["key"]: r["reason"] for r in rejects}
    assert "not a regular file" in reasons["link"]
    assert "unsafe clip key" in reasons["../evil"]


def test_a_publish_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    """A writer killed mid-publish leaves its staging copy; the next publish of that name
    removes it (its process is gone) but keeps a live writer's and another host's."""
    import subprocess
    import sys

    from model_code.runtime.files import _OWNER, atomic_dir, atomic_file

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    host = _OWNER.rsplit(".", 1)[0]
    ckpt, shard = tmp_path / "ckpt", tmp_path / "p.tar"
    killed = [tmp_path / f".ckpt.tmp-{host}.{dead}-abc", tmp_path / f".ckpt.old-{host}.{dead}-"]
    kept = [tmp_path / f".ckpt.tmp-{_OWNER}-live", tmp_path / f".ckpt.tmp-elsewhere.{dead}-x"]
    for folder in killed + kept:
        (folder / "weights").mkdir(parents=True)
    (tmp_path / f".p.tar.tmp-{host}.{dead}-xyz").write_bytes(b"half a tar")
    with atomic_dir(ckpt) as tmp:
        (tmp / "model.safetensors").write_bytes(b"w")
    with atomic_file(shard) as f:
        f.write(b"tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt", "p.tar", *(p.name for p in kept)]
    )


def test_published_files_respect_the_umask(tmp_path):
    import stat

    from model_code.models.dual_encoder import build_dual_encoder
    from model_code.runtime.files import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "ckpt") as tmp:
            build_dual_encoder(
                ["a b"], vision_width=16, text_width=16, projection_dim=8
            ).save_pretrained(tmp)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "ckpt").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: import_module("model_code.data.ingest").IngestConfig(size=0),
            r"IngestConfig.size",
        ),
        (
            lambda: import_module("model_code.data.ingest").IngestConfig(clip_seconds=0),
            r"clip_seconds",
        ),
        (
            lambda: import_module("model_code.data.corpus").CorpusConfig(frames=0),
            r"CorpusConfig.frames",
        ),
        (
            lambda: import_module("model_code.data.corpus").CorpusConfig(size=63),
            r"CorpusConfig.size",
        ),
    ],
)
def test_model_code_configs_used_directly_refuse_bad_values_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"job.json is not valid JSON"),
        ("[1]", r"job.json must hold a JSON object"),
        ('{"config": [1]}', r"a job's 'config' must be a JSON object"),
    ],
)
def test_a_broken_job_file_is_named(tmp_path, text, message):
    from model_code.training.job import read_job

    (tmp_path / "job.json").write_text(text)
    with pytest.raises((ValueError, TypeError), match=message):
        read_job(tmp_path / "job.json")


def test_a_stage_part_of_another_family_or_shape_is_refused(vlm_folder, tmp_path):
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
    from model_code.models.video_vlm import VideoVLM

    base = VideoVLM.from_pretrained(vlm_folder, device="cpu")
    other = build_tiny_image_vlm(
        ["a red circle"],
        TinyVLMConfig(family="paligemma", **TINY_VLM),
    )
    other.save_part(tmp_path / "paligemma", "vision")
    with pytest.raises(ValueError, match=r"a 'paligemma' 'vision' part does not fit"):
        base.load_part(tmp_path / "paligemma")
    wider = build_tiny_image_vlm(
        ["a red circle"],
        TinyVLMConfig(**{**TINY_VLM, "vision_layers": 2}),
    )
    wider.save_part(tmp_path / "wider", "vision")
    with pytest.raises(ValueError, match=r"the vision part does not match the base"):
        base.load_part(tmp_path / "wider")
    (tmp_path / "wider" / "part.json").write_text("{")
    with pytest.raises(ValueError, match=r"part.json is not valid JSON"):
        base.load_part(tmp_path / "wider")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("vatex.json", '[{"enCap": ["a"]}]', r"item 0 has no videoID"),
        ("vatex.json", '[{"videoID": "v", "enCap": []}]', r"video v has no enCap captions"),
        ("labels.csv", "file,class\na.mp4,run\n", r"needs columns path and label"),
        ("labels.csv", "path,label\na.mp4,run\n", r"at least 2 classes"),
    ],
)
def test_malformed_benchmark_files_are_named(tmp_path, name, text, message):
    from model_code.data import annotations

    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        if name.endswith(".json"):
            annotations.read_annotations(tmp_path / name, tmp_path)
        else:
            annotations.read_labelled(tmp_path / name)


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"CaptioningConfg": {"batch_size": 8}}, "no asset takes CaptioningConfg"),
        ({"CaptioningConfig": {"batch_sise": 8}}, "CaptioningConfig has no field batch_sise"),
        ({"CaptioningConfig": {"batch_size": 0}}, "batch_size"),
        ({"RetrievalBenchmarkConfig": 3}, "must map config class names"),
    ],
)
def test_a_bad_config_defaults_file_stops_the_code_location_naming_what(
    tmp_path, defaults, message
):
    """$VIDISTILL_CONFIG_DEFAULTS changes what every launch without run config takes (the
    UI's Materialize all): a typo or a bad value is refused when the code location loads."""
    import subprocess
    import sys

    path = tmp_path / "defaults.json"
    path.write_text(json.dumps(defaults))
    env = {**os.environ, "VIDISTILL_CONFIG_DEFAULTS": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode != 0
    assert message in done.stderr and "VIDISTILL_CONFIG_DEFAULTS" in done.stderr


def test_config_defaults_become_the_launchpad_defaults(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "defaults.json"
    path.write_text(json.dumps({"CaptioningConfig": {"batch_size": 8}}))
    script = (
        "from pipelines.definitions import defs\n"
        "for name in ('frame_captions', 'pseudo_captions', 'pseudo_sampled'):\n"
        "    fields = defs.get_assets_def(name).op.config_schema.config_type.fields\n"
        "    print(name, fields['batch_size'].default_value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "VIDISTILL_CONFIG_DEFAULTS": str(path)},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.stdout.split() == [
        "frame_captions",
        "8",
        "pseudo_captions",
        "8",
        "pseudo_sampled",
        "8",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VIDISTILL_CORPUS_CLIPS", "many", "$VIDISTILL_CORPUS_CLIPS must be a whole number"),
        ("VIDISTILL_CLIPS_PER_SHARD", "-8", "$VIDISTILL_CLIPS_PER_SHARD must be a whole number"),
        ("VIDISTILL_CLIPS_PER_SHARD", "0", "clips_per_shard"),
    ],
)
def test_a_bad_corpus_size_in_the_environment_is_refused_naming_it(
    monkeypatch, variable, value, message
):
    from pipelines.definitions import make_resources

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as error:
        make_resources("data")
    assert message in str(error.value)


def test_each_trainer_keys_its_state_by_what_it_trains(monkeypatch, tmp_path):
    """One rule for both trainers (training.common.state_file): the same job resumes from the
    same state file, a job with other settings or another output gets a state of its own, and
    no prefix means no saves."""
    from model_code.training import train_vlm
    from model_code.training.common import state_file

    seen = []
    monkeypatch.setitem(train_vlm.STAGES, "adapted_encoder", lambda job, report: seen.append(job))
    job = {
        "stage": "adapted_encoder",
        "config": {"steps": 6},
        "out": "o",
        "state": str(tmp_path / "s"),
    }
    for variant in (job, job, {**job, "config": {"steps": 7}}, {**job, "out": "other"}):
        train_vlm.train(variant)
    states = [j["state"] for j in seen]
    assert states[0] == states[1] and len(set(states)) == 3
    assert all(Path(s).parent == tmp_path and Path(s).name.startswith("s-") for s in states)
    assert state_file(None, b"x") is None and state_file("p", b"a") != state_file("p", b"b")


def test_a_dual_encoder_job_names_a_missing_or_unknown_field():
    from model_code.training.job import DualEncoderJob

    whole = {"pairs": "p.parquet", "shards": ["c.tar"], "out": "de"}
    assert DualEncoderJob.from_json(whole).to_json()["shards"] == ["c.tar"]
    with pytest.raises(ValueError, match="needs out"):
        DualEncoderJob.from_json({"pairs": "p.parquet", "shards": ["c.tar"]})
    with pytest.raises(ValueError, match="no field extra_text"):
        DualEncoderJob.from_json({**whole, "extra_text": ["typo"]})


def test_garbage_never_publishes_and_the_published_checkpoint_stays(tmp_path):
    """Every trainer publishes through training.job.publish: weights no optimizer step made,
    or any non-finite weight, are refused, and the checkpoint already there stays as it was."""
    import torch
    from safetensors.torch import save_file

    from model_code.training.configs import DualEncoderTrainConfig
    from model_code.training.job import Reporter, publish

    model = torch.nn.Linear(2, 2)
    out = tmp_path / "ckpt"
    common = {
        "model": model,
        "save": lambda tmp: save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors"
        ),
        "report": Reporter(),
        "kind": "test",
        "parents": {},
        "config": DualEncoderTrainConfig(),
        "data": {},
    }
    publish(out, metrics={"steps": 2}, **common)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="no optimizer step"):
        publish(out, metrics={"steps": 0}, **common)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        publish(out, metrics={"steps": 3}, **common)
    assert (out / "model.safetensors").read_bytes() == before and (out / "lineage.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folder left behind
