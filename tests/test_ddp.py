"""DDP on 2 CPU processes (gloo, launched by torchrun) must train exactly like one process on
the same global batch, each rank on its own share of it. This file is also the worker that
torchrun runs."""

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import TINY_DUAL_ENCODER as TINY
from tiny_runs import TINY_VLM

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("infonce", "sigmoid")


def _pairs():
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(16, 4, 16, 16, 3), dtype=np.uint8)
    return [
        (clip, f"clip {i} of {'red' if i % 2 else 'blue'} things") for i, clip in enumerate(clips)
    ]


@contextlib.contextmanager
def logged_rows(logger: str):
    """The row ids a trainer logs for the first step it runs on this rank, as a list to read
    after the block: [{"rank", "world", "step", "rows"}]."""
    seen: list[dict] = []

    class Rows(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "rows"):
                seen.append({k: getattr(record, k) for k in ("rank", "world", "step", "rows")})

    log, handler = logging.getLogger(logger), Rows()
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _save_rows(seen: list[dict], metrics: dict, out: Path) -> None:
    """This rank's logged rows and reported local batch, as <out>-rank<r>.json."""
    rank = int(os.environ.get("RANK", "0"))
    record = {"logged": seen, "local_batch": metrics["local_batch"]}
    out.with_name(f"{out.stem}-rank{rank}.json").write_text(json.dumps(record))


def train_once(loss: str, out: Path) -> None:
    """Build the same model on every rank, train 2 steps on a global batch of 8, and (rank 0)
    save the per-step losses and the final weights; every rank saves the rows of its first
    step (out-rank<r>.json)."""
    from model_code.models.dual_encoder import build_dual_encoder
    from model_code.training.train_dual_encoder import DualEncoderTrainConfig, train_dual_encoder

    pairs = _pairs()
    torch.manual_seed(0)
    model = build_dual_encoder([c for _, c in pairs], loss=loss, **TINY)
    losses = []
    config = DualEncoderTrainConfig(
        steps=2, batch_size=8, lr=1e-3, warmup_steps=1, loss=loss, log_every=1, seed=0
    )
    with logged_rows("vidistill.training") as seen:
        metrics = train_dual_encoder(
            model, pairs, config, on_metrics=lambda s, m: losses.append(m["loss"])
        )
    _save_rows(seen, metrics, out)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"losses": losses, "state": model.state_dict()}, out)


def stage1_once(out: Path) -> None:
    """One step of VLM stage 1 (visual adaptation) on a global batch of 4 of 12 clips; every
    rank saves the rows it trained on (out-rank<r>.json)."""
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
    from model_code.training.configs import VisualAdaptationTrainConfig
    from model_code.training.vlm_stages import visual_adaptation

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(12, TINY_VLM["num_frames"], 64, 64, 3), dtype=np.uint8)
    captions = [f"clip {i} of {'red' if i % 2 else 'blue'} things" for i in range(12)]
    vlm = build_tiny_image_vlm(captions, TinyVLMConfig(**TINY_VLM))
    config = VisualAdaptationTrainConfig(steps=1, batch_size=4, warmup_steps=0, log_every=1)
    with logged_rows("vidistill.training") as seen:
        metrics = visual_adaptation(vlm, clips, captions, config)
    _save_rows(seen, metrics, out)


def _gather_grad_check() -> dict:
    """On 2 ranks, the gathered local loss's gradients (after averaging, as DDP does) must
    equal one process's gradients on the concatenated batch."""
    import torch.distributed as dist

    from model_code.training.contrastive import contrastive_loss, sigmoid_loss

    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    v_all = torch.nn.functional.normalize(
        torch.randn(8, 6, generator=g, dtype=torch.float64), dim=-1
    )
    t_all = torch.nn.functional.normalize(
        torch.randn(8, 6, generator=g, dtype=torch.float64), dim=-1
    )
    errors = {}
    for name in LOSSES:
        scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
        v = v_all.chunk(world)[rank].clone().requires_grad_(True)
        t = t_all.chunk(world)[rank].clone().requires_grad_(True)
        if name == "infonce":
            loss = contrastive_loss(v, t, scale, gather=True)
        else:
            loss = sigmoid_loss(v, t, scale, bias, gather=True)
        loss.backward()
        grads = [v.grad, t.grad, scale.grad.view(1)] + (
            [bias.grad.view(1)] if name == "sigmoid" else []
        )
        local = torch.cat([x.flatten() for x in grads[:2]])
        shared = torch.cat(grads[2:])
        dist.all_reduce(shared)
        shared /= world  # DDP averages parameter gradients
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        # reference: one process, whole batch; per-feature gradients are scaled by world
        # because DDP's average later divides the encoders' parameter gradients by it
        v1, t1 = v_all.clone().requires_grad_(True), t_all.clone().requires_grad_(True)
        s1 = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
        b1 = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
        ref = contrastive_loss(v1, t1, s1) if name == "infonce" else sigmoid_loss(v1, t1, s1, b1)
        ref.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        got_v = torch.cat([p[: v.numel()].view_as(v) for p in parts]) / world
        got_t = torch.cat([p[v.numel() :].view_as(t) for p in parts]) / world
        ref_shared = torch.cat([s1.grad.view(1)] + ([b1.grad.view(1)] if name == "sigmoid" else []))
        errors[name] = max(
            abs(float(mean_loss - ref)),
            float((got_v - v1.grad).abs().max()),
            float((got_t - t1.grad).abs().max()),
            float((shared - ref_shared).abs().max()),
        )
    return errors


def _worker(out_dir: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    errors = _gather_grad_check()
    for loss in LOSSES:
        train_once(loss, out_dir / f"ddp-{loss}.pt")
    stage1_once(out_dir / "stage1")
    if dist.get_rank() == 0:
        (out_dir / "gather.json").write_text(json.dumps(errors))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        str(out),
    ]
    done = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_gathered_loss_gradients_equal_one_process_on_the_global_batch(ddp_results):
    errors = json.loads((ddp_results / "gather.json").read_text())
    assert errors["infonce"] < 1e-12 and errors["sigmoid"] < 1e-12


@pytest.mark.parametrize("loss", LOSSES)
def test_ddp_on_two_processes_trains_like_one_process(ddp_results, loss, tmp_path):
    train_once(loss, tmp_path / "single.pt")
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ddp = torch.load(ddp_results / f"ddp-{loss}.pt", weights_only=True)
    assert len(single["losses"]) == len(ddp["losses"]) == 2
    assert ddp["losses"][0] == pytest.approx(
        single["losses"][0], abs=1e-6
    )  # same batch, same weights
    # after one Adam step: Adam divides by |grad|, so float-rounding differences in tiny
    # gradients move weights by up to ~lr * 1e-2; far below what a wrong gradient would do
    assert ddp["losses"][1] == pytest.approx(single["losses"][1], rel=1e-4)
    worst = max((ddp["state"][k] - v).abs().max().item() for k, v in single["state"].items())
    print(f"{loss}: max weight difference {worst:.2e}")
    assert worst < 1e-4


def _first_step_rows(out: Path, world: int) -> list[list[int]]:
    """Each rank's rows of its first step, checked to be one logged step of a local batch."""
    per_rank = []
    for rank in range(world):
        saved = json.loads(out.with_name(f"{out.stem}-rank{rank}.json").read_text())
        (logged,) = saved["logged"]  # one line a rank, for the first step it runs
        assert (logged["rank"], logged["world"], logged["step"]) == (rank, world, 1)
        rows = logged["rows"][0] if isinstance(logged["rows"][0], list) else logged["rows"]
        assert len(rows) == saved["local_batch"]
        per_rank.append(rows)
    return per_rank


def test_each_dual_encoder_rank_trains_its_own_share_of_the_global_batch(ddp_results, tmp_path):
    """Were every rank to train on the whole batch, the weights could still look right: the
    rows each rank read must be half the batch, apart from the other rank's, and together the
    rows one process trains on."""
    train_once("infonce", tmp_path / "single.pt")
    (whole,) = _first_step_rows(tmp_path / "single.pt", world=1)
    first, second = _first_step_rows(ddp_results / "ddp-infonce.pt", world=2)
    assert len(whole) == 8 and len(first) == len(second) == 4
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(whole)


def test_each_stage1_rank_trains_its_own_share_of_the_global_batch(ddp_results, tmp_path):
    stage1_once(tmp_path / "stage1")
    (whole,) = _first_step_rows(tmp_path / "stage1", world=1)
    first, second = _first_step_rows(ddp_results / "stage1", world=2)
    assert len(whole) == 4 and len(first) == len(second) == 2
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(whole)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
