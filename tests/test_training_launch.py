"""Training launched as users launch it: the asset runs the trainer program under torchrun
through Dagster Pipes. On 2 CPU ranks (gloo) it must train like one process on the same global
batch, report from rank 0, and fail with the failing rank's message; on 1 rank it must equal
the trainer run in-process bit for bit."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from dagster import AssetExecutionContext, asset, instance_for_test, materialize
from safetensors.torch import load_file
from tiny_runs import TINY_VLM, dual_encoder_op, materialize_two_shards

from model_code.models.video_vlm import VideoVLM
from pipelines.definitions import defs, make_resources
from resources.devices import Accelerators
from resources.launcher import TrainingLauncher
from resources.storage import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]
ASSETS = list(defs.assets)
TRAIN = {"steps": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 1}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The same threads in the ranks and in-process, so one-rank results can match bit for bit."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two clip shards in the catalog and the benchmark's classes: what dual_encoder reads."""
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(str(root))
    with instance_for_test() as instance:
        materialize_two_shards(instance, resources)
        yield resources, instance


def _train_dual_encoder(corpus, source: str, nproc: int, seed: str = "0", **resources):
    """Materialize dual_encoder/<source> [seed] with `resources` replacing the corpus's."""
    resources, instance = {**corpus[0], **resources}, corpus[1]
    if seed not in instance.get_dynamic_partitions("seeds"):
        instance.add_dynamic_partitions("seeds", [seed])
    op = dual_encoder_op(source)
    result = materialize(
        ASSETS,
        selection=[f"dual_encoder/{source}"],
        partition_key=seed,
        instance=instance,
        resources=resources,
        run_config={"ops": {op: {"config": {**TRAIN, "nproc_per_node": nproc}}}},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node(op)
    store = resources["store"]
    (job_file,) = store.path("training_jobs").glob(
        f"dual_encoder-{source}-seed{seed}-{result.run_id}.json"
    )
    return materialization, json.loads(job_file.read_text())


def _in_process(job: dict, out: Path) -> dict[str, torch.Tensor]:
    from model_code.training.train_dual_encoder import train

    train({**job, "out": str(out), "state": None, "config": {**job["config"], "nproc_per_node": 1}})
    return load_file(out / "model.safetensors")


def test_dual_encoder_on_two_ranks_reports_from_rank_0_and_trains_like_one_process(
    corpus, tmp_path
):
    materialization, job = _train_dual_encoder(corpus, "alt_text", nproc=2)
    meta = materialization.metadata
    folder = Path(meta["path"].value)
    assert meta["world_size"].value == 2  # rank 0's metrics, through Pipes
    lineage = json.loads((folder / "lineage.json").read_text())
    assert (
        meta["version"].value == lineage["version"] == materialization.tags["dagster/data_version"]
    )
    assert lineage["training_config"]["nproc_per_node"] == 2
    assert lineage["parents"] == {"captions": ["alt_text"]}

    tracking = corpus[0]["tracking"]
    history = tracking.client().get_metric_history(meta["mlflow_run_id"].value, "loss")
    assert sorted(m.step for m in history) == [1, 2]  # rank 0 logged each step, once

    from PIL import Image

    curves = Path(meta["training_curves"].value)  # the picture a user clicking the asset sees
    assert curves.parent == folder and curves.name == "training_curves.png"
    with Image.open(curves) as image:
        assert image.format == "PNG" and min(image.size) > 100
    artifacts = tracking.client().list_artifacts(meta["mlflow_run_id"].value)
    assert "training_curves.png" in [a.path for a in artifacts]

    two = load_file(folder / "model.safetensors")
    one = _in_process(job, tmp_path / "one")
    worst = max((two[k] - v).abs().max().item() for k, v in one.items())
    assert worst < 1e-4, worst  # float rounding of the gathered loss, after two Adam steps


def test_one_rank_through_pipes_equals_the_trainer_in_process_bit_for_bit(corpus, tmp_path):
    materialization, job = _train_dual_encoder(corpus, "ground_truth", nproc=1)
    launched = load_file(Path(materialization.metadata["path"].value) / "model.safetensors")
    local = _in_process(job, tmp_path / "local")
    assert launched.keys() == local.keys()
    assert all(torch.equal(launched[k], local[k]) for k in local)


def test_a_training_step_trains_on_the_device_it_leased_and_says_which(
    corpus, tmp_path, monkeypatch
):
    """Tests have no GPU driver, so every lease is empty unless devices are simulated: with two
    and device 0 held by another step, the dual encoder must lease device 1, hold it while its
    ranks run, launch them seeing only it, and name it in the metadata."""
    from dagster._core.pipes import subprocess as pipes_subprocess

    from model_code.runtime import devices

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    locks = tmp_path / "locks"
    launches = []

    def recording_popen(command, *args, env=None, **kwargs):
        with pytest.raises(devices.NoFreeDevice):  # both held: the other step's and ours
            devices.lease_devices(locks, total=2, timeout_s=0)
        launches.append((command, env))
        return subprocess.Popen(command, *args, env=env, **kwargs)

    monkeypatch.setattr(pipes_subprocess, "Popen", recording_popen)
    with devices.lease_devices(locks, total=2) as other_step:
        assert other_step.indices == [0]
        materialization, job = _train_dual_encoder(
            corpus,
            "alt_text",
            nproc=1,
            seed="7",
            accelerators=Accelerators(lock_dir=str(locks), timeout_s=5),
        )
    ((command, env),) = launches
    assert (
        "torch.distributed.run" in command and "model_code.training.train_dual_encoder" in command
    )
    assert env.get("CUDA_VISIBLE_DEVICES") == "1"
    assert materialization.metadata["devices"].value == "cuda:1"
    assert job["config"]["device"] == "auto"  # the ranks take the one device they can see
    with devices.lease_devices(locks, total=2, timeout_s=0) as after:
        assert after.indices == [0]  # released when the step ended


def test_a_failing_rank_fails_the_step_with_its_message(tmp_path):
    @asset
    def broken(
        context: AssetExecutionContext,
        launcher: TrainingLauncher,
        store: ArtifactStore,
        accelerators: Accelerators,
    ):
        return launcher.train(
            context,
            module="tests.rank_fails",
            job={"config": {}, "pairs": "pairs.parquet"},
            name="broken",
            store=store,
            nproc=2,
            device="auto",
            accelerators=accelerators,
        )

    resources = {
        "launcher": TrainingLauncher(),
        "store": ArtifactStore(root=str(tmp_path)),
        "accelerators": Accelerators(lock_dir=str(tmp_path / "locks")),
    }
    result = materialize([broken], resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description == "rank 1 of 2 failed: ValueError: rank 1 cannot read pairs.parquet"


def test_launchpad_defaults_are_the_trainers_and_bad_values_name_the_field(tmp_path):
    from dagster import DagsterInvalidConfigError

    from assets.adaptation import LanguageAdaptationConfig
    from assets.retrieval import DualEncoderLaunchConfig
    from model_code.training.configs import (
        DualEncoderTrainConfig,
        LanguageAdaptationTrainConfig,
        from_dict,
    )

    for launchpad, trainer in (
        (DualEncoderLaunchConfig, DualEncoderTrainConfig),
        (LanguageAdaptationConfig, LanguageAdaptationTrainConfig),
    ):
        shared = [f.name for f in fields(trainer) if f.name in launchpad.model_fields]
        assert {n: getattr(launchpad(), n) for n in shared} == {
            n: getattr(trainer(), n) for n in shared
        }
    # a dual encoder's seed is its partition, not a launchpad field
    assert "seed" not in DualEncoderLaunchConfig.model_fields
    assert set(DualEncoderLaunchConfig.model_fields) == {
        f.name for f in fields(DualEncoderTrainConfig)
    } - {"seed"}
    with pytest.raises(ValueError, match="DualEncoderTrainConfig.batch_size must be >= 2"):
        from_dict(DualEncoderTrainConfig, {"batch_size": 1})
    with pytest.raises(ValueError, match="has no field stpes"):
        from_dict(DualEncoderTrainConfig, {"stpes": 10})
    with pytest.raises(ValueError, match="LanguageAdaptationTrainConfig.device must be"):
        from_dict(LanguageAdaptationTrainConfig, {"device": "gpu0"})
    with instance_for_test() as instance, pytest.raises(DagsterInvalidConfigError, match="loss"):
        instance.add_dynamic_partitions("seeds", ["0"])
        materialize(
            ASSETS,
            selection=["dual_encoder/alt_text"],
            partition_key="0",
            instance=instance,
            resources=make_resources(str(tmp_path)),
            run_config={"ops": {dual_encoder_op("alt_text"): {"config": {"loss": "triplet"}}}},
        )


# --- stage 1 on two ranks ---------------------------------------------------------------------


def _stage1_inputs(folder: Path) -> dict:
    """A tiny image VLM and a dozen captioned clips: an adapted_encoder job."""
    import pandas as pd

    from model_code.data import corpus, shards
    from model_code.models.lineage import write_lineage
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm

    specs = corpus.split_specs("adapt", corpus.CorpusConfig(), 0, 12)
    captions = [corpus.ground_truth_caption(s) for s in specs]
    config = TinyVLMConfig(**TINY_VLM)
    vlm = build_tiny_image_vlm(captions, config)
    vlm.save_pretrained(folder / "image_vlm")
    write_lineage(folder / "image_vlm", kind="image_vlm")
    data = folder / "video_caption_data"
    shards.write_shard(data / "clips.tar", shards.embedded_clips(specs))
    pd.DataFrame({"key": [s.key for s in specs], "caption": captions}).to_parquet(
        data / "captions.parquet"
    )
    return {
        "stage": "adapted_encoder",
        "base": str(folder / "image_vlm"),
        "caption_data": str(data),
        "config": {"steps": 2, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "log_every": 1},
    }


def _torchrun(job: dict, folder: Path, nproc: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Run the program; the whole VLM after the stage and the per-step losses rank 0 printed."""
    job = {**job, "out": str(folder / f"out-{nproc}"), "full_out": str(folder / f"full-{nproc}")}
    path = folder / f"job-{nproc}.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "model_code.training.train_vlm",
            "--job",
            str(path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"step"')]
    saved = load_file(Path(job["out"]) / "model.safetensors")
    assert all(
        k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in saved
    )  # the stage's output: only what it trained
    full = VideoVLM.from_pretrained(job["full_out"], device="cpu").model.state_dict()
    return full, [s["loss"] for s in steps]


def test_stage1_on_two_ranks_keeps_the_lm_and_trains_like_one_process(tmp_path):
    job = _stage1_inputs(tmp_path)
    base = VideoVLM.from_pretrained(tmp_path / "image_vlm", device="cpu").model.state_dict()
    (one, one_losses), (two, two_losses) = _torchrun(job, tmp_path, 1), _torchrun(job, tmp_path, 2)
    assert len(two_losses) == 2  # rank 0 alone reports, once a step
    assert two_losses == pytest.approx(one_losses, rel=1e-5)  # the global batch's token mean
    language = [k for k in base if "language_model" in k or k.startswith("lm_head")]
    vision = [k for k in base if "vision_tower" in k or "multi_modal_projector" in k]
    assert language and vision
    assert all(torch.equal(two[k], base[k]) for k in language)  # frozen on every rank
    assert any(not torch.equal(two[k], base[k]) for k in vision)  # and the vision side learned
    worst = max((two[k] - one[k]).abs().max().item() for k in vision)
    assert worst < 1e-4, worst


@pytest.mark.parametrize("lora_rank", [0, 2], ids=["whole-lm", "lora"])
def test_the_composed_video_vlm_is_the_model_trained_in_one_piece(tmp_path, lora_rank):
    """Stage 1 saves the encoder, stage 2 the LM (or with lora_rank only its adapter);
    composed on the image VLM they are, weight for weight, the model both stages make in
    memory, and it captions the same."""
    import numpy as np
    import pandas as pd

    from model_code.data import shards
    from model_code.data.instructions import CAPTION_PROMPT
    from model_code.training.configs import (
        LanguageAdaptationTrainConfig,
        VisualAdaptationTrainConfig,
        from_dict,
    )
    from model_code.training.train_vlm import compose, train
    from model_code.training.vlm_stages import language_adaptation, visual_adaptation

    torch.set_num_threads(1)
    job = _stage1_inputs(tmp_path)
    captions = pd.read_parquet(tmp_path / "video_caption_data" / "captions.parquet")
    pd.DataFrame(
        {
            "key": captions["key"],
            "prompt": CAPTION_PROMPT,
            "answer": captions["caption"],
            "type": "detailed",
        }
    ).to_parquet(tmp_path / "instructions.parquet")
    stage2 = {
        "steps": 3,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 1,
        "log_every": 1,
        "lora_rank": lora_rank,
    }
    train({**job, "out": str(tmp_path / "encoder")})
    train(
        {
            **job,
            "stage": "instruction_tuned_lm",
            "config": stage2,
            "encoder": str(tmp_path / "encoder"),
            "out": str(tmp_path / "lm"),
            "instructions": str(tmp_path / "instructions.parquet"),
        }
    )
    composed = compose(job["base"], tmp_path / "encoder", tmp_path / "lm")
    saved = load_file(tmp_path / "lm" / "model.safetensors")
    if lora_rank:  # the adapter only: a few small matrices, not the LM
        assert saved and all("lora_" in k for k in saved)
    else:
        assert all(k.startswith(("model.language_model.", "lm_head.")) for k in saved)

    whole = VideoVLM.from_pretrained(job["base"], device="cpu")
    keys, clips, _, _ = shards.load_clips(
        tmp_path / "video_caption_data" / "clips.tar", whole.num_frames
    )
    refs = captions.set_index("key").loc[keys, "caption"].tolist()
    visual_adaptation(whole, clips, refs, from_dict(VisualAdaptationTrainConfig, job["config"]))
    examples = [
        {"clip_index": i, "prompt": CAPTION_PROMPT, "answer": c, "type": "detailed"}
        for i, c in enumerate(refs)
    ]
    language_adaptation(
        whole,
        clips,
        examples,
        from_dict(LanguageAdaptationTrainConfig, stage2),
        lora_rank=lora_rank,
    )
    mine, theirs = composed.model.state_dict(), whole.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert composed.prompt == whole.prompt == CAPTION_PROMPT
    assert composed.caption(np.asarray(clips), max_new_tokens=6) == whole.caption(
        np.asarray(clips), max_new_tokens=6
    )


def test_only_numbers_become_metrics_and_bools_are_not_numbers():
    from model_code.training.job import numeric_metrics

    assert numeric_metrics({"loss": 1, "lr": 2.5, "done": True, "source": "x", "n": None}) == {
        "loss": 1.0,
        "lr": 2.5,
    }


def test_a_pipes_message_caught_half_written_is_read_whole_once_its_line_ends(tmp_path):
    """A busy machine can show the reader a message its writer is still appending: it must
    wait for the newline, not parse half a line and drop every later message."""
    import time

    from resources.launcher import WholeLineFileMessageReader

    got = []

    class Handler:
        def handle_message(self, message):
            got.append(message)

        def report_pipes_framework_exception(self, origin, exc_info):
            got.append(("error", origin, exc_info[1]))

    path = tmp_path / "messages"
    reader = WholeLineFileMessageReader(str(path))
    big = json.dumps({"method": "report_asset_materialization", "params": {"x": "y" * 20000}})
    with reader.read_messages(Handler()):
        with open(path, "a") as f:
            f.write(big[:75])  # the first part, seen by the reader before the rest
            f.flush()
            time.sleep(0.1)
            f.write(big[75:] + "\n")
            f.write(json.dumps({"method": "closed"}) + "\n")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert got == [json.loads(big), {"method": "closed"}]


def test_torchrun_launched_locally_stops_when_the_step_that_started_it_is_killed(tmp_path):
    """The local launcher runs torchrun under model_code.runtime.with_parent: a step process killed
    with `kill -9` takes torchrun with it (SIGTERM, which torchrun passes to its ranks)
    instead of leaving it training on a device the `gpu` pool gives to the next run."""
    import signal
    import time

    from resources.launcher import torchrun_command

    command = torchrun_command("m", "job.json", 1, stops_with_parent=True)
    assert command[1:6] == [
        "-m",
        "model_code.runtime.with_parent",
        "--parent",
        str(os.getpid()),
        "torch.distributed.run",
    ]
    assert "model_code.runtime.with_parent" not in torchrun_command("m", "job.json", 1)  # a pod's
    pid_file = tmp_path / "pid"
    step = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        # what the child inherits from a step process may leave SIGTERM ignored or blocked
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})
        child = subprocess.Popen([sys.executable, "-m", "model_code.runtime.with_parent",
                                  "--parent", str(os.getpid()), "timeit", "-n", "1",
                                  "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", step], cwd=Path(__file__).parents[1])
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert "timeit" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{child}/cmdline").exists() and time.time() < deadline:
        if not Path(f"/proc/{child}/cmdline").read_bytes():  # a zombie: it ended
            break
        time.sleep(0.1)
    assert (
        not Path(f"/proc/{child}/cmdline").exists()
        or not Path(f"/proc/{child}/cmdline").read_bytes()
    ), "the child outlived the process that started it"
