"""The one training loop every trainer here runs: the VLM's image pretraining and its two
adaptation stages, and the dual encoder.

As in open_clip's `train_one_epoch`, the loop owns what every training needs — the LR
schedule, resume from the saved training state, DistributedDataParallel, gradient clipping,
metric reports, atomic state saves — and a `Task` says what differs: its batches and its loss.
A feature written here (a logger, gradient accumulation, FSDP) is written once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_code.training.common import (
    check_loss,
    cosine_with_warmup,
    global_mean,
    load_training_state,
    save_training_state,
)

log = logging.getLogger("vidistill.training")

MetricsCallback = Callable[[int, dict], None]


@dataclass
class Task:
    """What one training is: `model` (whose weights and state are saved), `module` (what DDP
    wraps: the model, or a loss module around it), `loss(module, batch)` (a scalar, under
    whatever autocast the task wants), `batches(start_step)` (this rank's (batch, row ids) of
    each step from start_step on; row ids None when the rows have no ids), the `params` whose
    gradient norm is clipped, and optional hooks: `after_step()` (e.g. a temperature clamp)
    and `report()` (extra metric entries)."""

    model: torch.nn.Module
    module: torch.nn.Module
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    batches: Callable[[int], Iterator[tuple[Any, Any]]]
    params: list[torch.nn.Parameter]
    after_step: Callable[[], None] | None = None
    report: Callable[[], dict] | None = None
    find_unused_parameters: bool = False


def fit(
    task: Task,
    optimizer: torch.optim.Optimizer,
    config,
    rank: int,
    world: int,
    device: torch.device,
    on_metrics: MetricsCallback | None = None,
    state_path: str | Path | None = None,
    step_offset: int = 0,
    keep_final_state: bool = False,
) -> dict:
    """Train `task` for config.steps optimizer steps (config: steps, batch_size, warmup_steps,
    grad_clip, log_every, checkpoint_every, checkpoint_every_s), resuming from `state_path`
    when it exists. Rank 0 reports every log_every steps (`step_offset` is added to the step
    numbers it reports, for a training in phases) and saves the state every checkpoint_every
    steps or checkpoint_every_s seconds; at the end it saves it once more if keep_final_state
    (the program removes it after publishing, so a crash while publishing does not retrain),
    else removes it. Each rank logs the row ids of the first step it runs (its share of the
    global batch). The metrics say where the run started (`resumed_from_step`: the saved
    state's step, 0 for a fresh run), the steps it ran and the rows a rank trains a step."""
    scheduler = cosine_with_warmup(optimizer, config.warmup_steps, config.steps)
    start = 0
    if state_path is not None and Path(state_path).exists():
        start = load_training_state(state_path, task.model, optimizer, scheduler)
        log.info("resumed from %s at step %d", state_path, start)
    module = task.module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters,
        )
    task.model.train()

    batches = task.batches(start)
    step, window, metrics = start, [], {"loss": float("nan")}
    t0, cpu0, saved_at = time.perf_counter(), time.process_time(), time.monotonic()
    waited = 0.0  # blocked on the data path, after the first batch

    def throughput() -> dict:
        wall = time.perf_counter() - t0
        return {
            "clips_per_s": (step - start) * config.batch_size / max(wall, 1e-9),
            "data_wait_share": waited / max(wall, 1e-9),  # of the wall time: should stay near 0
        }

    while step < config.steps:
        t_wait = time.perf_counter()
        batch, rows = next(batches)
        if step > start:
            waited += time.perf_counter() - t_wait
        else:  # which rows this rank reads: its share of the global batch
            shown = step_offset + step + 1
            log.info(
                "rank %d of %d, step %d: rows %s",
                rank,
                world,
                shown,
                "streamed" if rows is None else rows,
                extra={"rank": rank, "world": world, "step": shown, "rows": rows},
            )
        loss = task.loss(module, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(task.params, config.grad_clip)
            if config.grad_clip
            else None
        )
        optimizer.step()
        scheduler.step()
        if task.after_step is not None:
            task.after_step()
        step += 1
        window.append(check_loss(loss.item(), step_offset + step))

        last = step == config.steps
        if step % config.log_every == 0 or last:
            metrics = {
                "loss": global_mean(float(np.mean(window)), world, device),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                **(task.report() if task.report is not None else {}),
                **throughput(),
            }
            window = []
            if on_metrics is not None and rank == 0:
                on_metrics(step_offset + step, metrics)
        periodic = (
            step % config.checkpoint_every == 0
            or time.monotonic() - saved_at >= config.checkpoint_every_s
        )
        if state_path is not None and rank == 0 and (keep_final_state if last else periodic):
            save_training_state(state_path, task.model, optimizer, scheduler, step)
            saved_at = time.monotonic()

    task.model.eval()
    if state_path is not None and rank == 0 and not keep_final_state:
        Path(state_path).unlink(missing_ok=True)
    return {
        "loss": metrics["loss"],
        "steps": step,
        "resumed_from_step": start,
        "steps_run": step - start,
        "local_batch": config.batch_size // world,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),  # all threads: ~ wall x busy cores
        **throughput(),
        **(task.report() if task.report is not None else {}),
        "world_size": world,
    }
