"""Train the VLM: the default image VLM, stage 1 (the adapted encoder) or stage 2 (the
instruction-tuned LM). A stage saves only what it trained (VideoVLM.save_part): stage 1 the
vision tower + projector, stage 2 the LM + head; `compose` puts them on the image VLM.

The adaptation-order ablation runs the same stage programs in another order (`order_jobs`):
language then vision (stage 2 on the image VLM, then stage 1 with that LM in place), or both
at once (`joint_adaptation`); each order's last job saves the whole VLM (`whole`).

    python -m model_code.training.train_vlm --job job.json
    torchrun --nproc_per_node 2 -m model_code.training.train_vlm --job job.json     # DDP

A job is a JSON object (what the adaptation assets write and launch):

    {"stage": "image_vlm" | "adapted_encoder" | "instruction_tuned_lm" | "joint_adaptation",
     "config": {...},              # the stage's dataclass in model_code.training.configs
     "out": "checkpoints/...",     # the checkpoint folder, written atomically by rank 0
     "state": "training_state/x",  # optional: resumable state, keyed per job (x-<key>.pt)
     "corpus": {...},              # image_vlm: the embedded corpus's CorpusConfig
     "base": "checkpoints/image_vlm",    # stages 1 and 2: the image VLM
     "encoder": "checkpoints/adapted_encoder",  # stage 2 (optional): stage 1's part
     "lm": "checkpoints/...",      # stage 1 (optional): a stage-2 part put in place first
     "caption_data": "video_caption_data",   # stages 1 and 2: clips.tar + captions.parquet
     "instructions": "instructions.parquet", # stage 2, joint
     "parents": {...}, "data": {...},        # recorded in lineage.json (a part put in place
                                             # is a parent too, named by its folder)
     "kind": "...",                # optional: lineage's kind (default: the stage)
     "whole": false,               # stages 1 and 2: save the whole VLM, not only the part
     "full_out": "..."}            # optional, stages 1 and 2: the whole VLM after the stage too

Every rank loads the same data and model; each trains on its rows of every global batch.

(Over 400 lines on purpose: the four programs a job names, image pretraining, stage 1, stage 2
and the joint order, share their data loading, samples and publishing, and read best together.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from model_code.training.common import state_file
from model_code.training.configs import (
    ImageVLMTrainConfig,
    JointAdaptationTrainConfig,
    LanguageAdaptationTrainConfig,
    VisualAdaptationTrainConfig,
    from_dict,
    joint_from_stages,
)
from model_code.training.job import Reporter, publish, quiet_libraries, read_job, run_job

SAMPLES = 6  # clips captioned for the materialization's sample table
ORDERS = ("vision_then_language", "language_then_vision", "joint")


def _caption_data(folder: str | Path, num_frames: int):
    """keys, clips [N, T, H, W, 3] and the caption table, in the shard's order."""
    import pandas as pd

    from model_code.data import shards

    folder = Path(folder)
    keys, clips, _, _ = shards.load_clips(folder / "clips.tar", num_frames)
    df = pd.read_parquet(folder / "captions.parquet").set_index("key").loc[keys].reset_index()
    return keys, clips, df


def _samples(vlm, clips, keys: list[str], refs: list[str]) -> dict:
    """A markdown table of sample captions, as Pipes metadata."""
    captions = vlm.caption(clips[:SAMPLES])
    lines = ["| key | caption | reference |", "|---|---|---|"]
    lines += [
        f"| {k} | {c} | {r} |".replace("\n", " ")
        for k, c, r in zip(keys, captions, refs, strict=False)
    ]
    return {"raw_value": "\n".join(lines), "type": "md"}


def _parents(job: dict) -> dict:
    """The job's parents, and each part it put in place (encoder, lm) that they do not name,
    by its folder's name."""
    from model_code.models.lineage import read_lineage

    parents = dict(job.get("parents", {}))
    for key in ("encoder", "lm"):
        if job.get(key) and Path(job[key]).name not in parents:
            parents[Path(job[key]).name] = read_lineage(job[key])["version"]
    return parents


def _publish(
    vlm,
    job: dict,
    config,
    metrics: dict,
    report: Reporter,
    samples: dict,
    part: str | None = None,
    adapter: dict | None = None,
) -> dict:
    """Rank 0: the checkpoint folder (the whole VLM, or only the `part` trained), published as
    every trainer publishes (training.job.publish); then, if the job asks, the whole VLM after
    the stage too (already past publish's guard, so not checked twice)."""
    from model_code.runtime.files import atomic_dir

    lineage = publish(
        job["out"],
        model=vlm.model,
        save=vlm.save_pretrained if part is None else lambda tmp: vlm.save_part(tmp, part, adapter),
        report=report,
        kind=job.get("kind", job["stage"]),
        parents=_parents(job),
        config=config,
        data=job.get("data", {}),
        metrics=metrics,
        extra={"sample_captions": samples},
    )
    if part is not None and job.get("full_out"):
        with atomic_dir(job["full_out"]) as tmp:
            vlm.save_pretrained(tmp)
    return lineage


def train_image_vlm(job: dict, report: Reporter) -> dict:
    """Text-only LM pretraining, then captioning single still frames of the embedded corpus."""
    from model_code.data import corpus, instructions
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
    from model_code.training.vlm_stages import pretrain_image_vlm

    config = from_dict(ImageVLMTrainConfig, job.get("config", {}))
    cc = corpus.CorpusConfig(**job.get("corpus", {}))
    specs = corpus.split_specs("image", cc, 0, config.image_examples)
    frames = np.stack([corpus.render_still(s) for s in specs])
    still = [corpus.still_caption(s) for s in specs]
    # the text an LLM would already know: sentences and Q&A about shapes and how they move
    texts = instructions.pretraining_texts(
        [
            {"key": s.key, "caption": corpus.ground_truth_caption(s), "attributes": s.attributes()}
            for s in specs
        ],
        seed=config.seed,
    )
    vlm = build_tiny_image_vlm(texts + still, TinyVLMConfig(), seed=config.seed)
    text_config = replace(config, steps=config.text_steps, batch_size=config.text_batch_size)
    metrics = pretrain_image_vlm(
        vlm,
        frames,
        still,
        texts,
        config=config,
        text_config=text_config,
        on_metrics=report.metrics,
        state_path=job.get("state"),
    )
    if report.rank == 0:
        clips = np.repeat(frames[:SAMPLES, None], vlm.num_frames, axis=1)
        samples = _samples(vlm, clips, [s.key for s in specs], still)
        _publish(vlm, job, config, {**metrics, "examples": len(specs)}, report, samples)
    return metrics


def compose(
    base: str | Path,
    encoder: str | Path | None = None,
    lm: str | Path | None = None,
    device: str = "cpu",
):
    """The video VLM: the image VLM with stage 1's encoder and stage 2's LM put in place."""
    from model_code.models.video_vlm import VideoVLM

    vlm = VideoVLM.from_pretrained(base, device=device)
    for part in (encoder, lm):
        if part is not None:
            vlm.load_part(part)
    return vlm


def write_vlm_folder(
    vlm, out: str | Path, *, kind: str, parents: dict, data: dict | None = None
) -> dict:
    """`vlm` as one Hugging Face folder at `out`, written once (atomically) with its lineage;
    returns the lineage."""
    from model_code.models.lineage import write_lineage
    from model_code.runtime.files import atomic_dir

    with atomic_dir(out) as tmp:
        vlm.save_pretrained(tmp)
        return write_lineage(tmp, kind=kind, parents=parents, data=data)


def import_pretrained(source: str | Path, out: str | Path, trust_remote_code: bool = False) -> dict:
    """A user's local image VLM as vidistill's image_vlm: loaded (safetensors only) and written
    at `out` with its video settings and a lineage naming the source and its weights' hash."""
    from model_code.models.lineage import folder_hash
    from model_code.models.video_vlm import VideoVLM

    vlm = VideoVLM.from_pretrained(source, device="cpu", trust_remote_code=trust_remote_code)
    return write_vlm_folder(
        vlm,
        out,
        kind="image_vlm",
        parents={"pretrained": str(source)},
        data={"pretrained_version": folder_hash(source)},
    )


def train_visual(job: dict, report: Reporter) -> dict:
    """Stage 1: vision tower + projector learn from video captions; the LM stays frozen (the
    base's, or the job's `lm` part). Saves the adapted encoder only, or with `whole` the VLM."""
    from model_code.training.vlm_stages import visual_adaptation

    config = from_dict(VisualAdaptationTrainConfig, job.get("config", {}))
    vlm = compose(job["base"], lm=job.get("lm"))  # on CPU: _train_parameters moves it to its device
    keys, clips, df = _caption_data(job["caption_data"], vlm.num_frames)
    captions = df["caption"].tolist()
    metrics = visual_adaptation(
        vlm, clips, captions, config, on_metrics=report.metrics, state_path=job.get("state")
    )
    if report.rank == 0:
        _publish(
            vlm,
            job,
            config,
            {**metrics, "clips": len(keys)},
            report,
            _samples(vlm, clips, keys, captions),
            part=None if job.get("whole") else "vision",
        )
    return metrics


def _instruction_examples(job: dict, keys: list[str]) -> list[dict]:
    """The job's instruction rows about the caption data's clips, as {clip_index, prompt,
    answer, type}."""
    import pandas as pd

    index = {k: i for i, k in enumerate(keys)}
    rows = pd.read_parquet(job["instructions"])
    examples = [
        {
            "clip_index": index[r["key"]],
            "prompt": r["prompt"],
            "answer": r["answer"],
            "type": r["type"],
        }
        for r in rows.to_dict("records")
        if r["key"] in index
    ]
    if not examples:
        raise ValueError(
            f"none of the instructions in {job['instructions']} is about a clip "
            f"of {job['caption_data']}"
        )
    return examples


def train_language(job: dict, report: Reporter) -> dict:
    """Stage 2: the LM learns to follow instructions about the videos; vision stays frozen (the
    base's, or the job's `encoder` part). Saves the instruction-tuned LM only, or with `whole`
    the VLM."""
    from model_code.training.vlm_stages import language_adaptation

    config = from_dict(LanguageAdaptationTrainConfig, job.get("config", {}))
    vlm = compose(job["base"], job.get("encoder"))
    keys, clips, df = _caption_data(job["caption_data"], vlm.num_frames)
    examples = _instruction_examples(job, keys)
    adapter: dict = {}  # with lora_rank, the adapter alone is the stage's output
    metrics = language_adaptation(
        vlm,
        clips,
        examples,
        config,
        on_metrics=report.metrics,
        state_path=job.get("state"),
        lora_rank=config.lora_rank,
        adapter_out=adapter,
    )
    if report.rank == 0:
        _publish(
            vlm,
            job,
            config,
            {**metrics, "examples": len(examples)},
            report,
            _samples(vlm, clips, keys, df["caption"].tolist()),
            part=None if job.get("whole") else "lora" if config.lora_rank else "language",
            adapter=adapter,
        )
    return metrics


def train_joint(job: dict, report: Reporter) -> dict:
    """Both stages at once on the image VLM: vision tower, projector and LM learn from the
    video captions and the instruction data together. Saves the whole VLM."""
    from model_code.training.vlm_stages import joint_adaptation

    config = from_dict(JointAdaptationTrainConfig, job.get("config", {}))
    vlm = compose(job["base"])
    keys, clips, df = _caption_data(job["caption_data"], vlm.num_frames)
    captions = df["caption"].tolist()
    examples = _instruction_examples(job, keys)
    metrics = joint_adaptation(
        vlm,
        clips,
        captions,
        examples,
        config,
        on_metrics=report.metrics,
        state_path=job.get("state"),
    )
    if report.rank == 0:
        _publish(
            vlm,
            job,
            config,
            {**metrics, "clips": len(keys), "examples": len(examples)},
            report,
            _samples(vlm, clips, keys, captions),
        )
    return metrics


STAGES = {
    "image_vlm": train_image_vlm,
    "adapted_encoder": train_visual,
    "instruction_tuned_lm": train_language,
    "joint_adaptation": train_joint,
}


def order_jobs(
    order: str,
    *,
    base: str | Path,
    caption_data: str | Path,
    instructions: str | Path,
    visual_config: dict,
    language_config: dict,
    out: str | Path,
    parents: dict | None = None,
    data: dict | None = None,
) -> list[dict]:
    """The jobs that adapt `base` in `order`, with the stages' settings (their `config`s), run
    one after the other; the last writes the whole VLM to `out`, an earlier one its part
    beside it (<out>.<part>). Each job's `kind` names the order (and the part):

    - vision_then_language (the recipe): stage 1, then stage 2 with that encoder;
    - language_then_vision: stage 2 on the image VLM, then stage 1 with that LM;
    - joint: both halves in one run (JointAdaptationTrainConfig from the two, summed steps).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    out = Path(out)
    shared = {
        "base": str(base),
        "caption_data": str(caption_data),
        "instructions": str(instructions),
        "parents": dict(parents or {}),
        "data": {**(data or {}), "order": order},
    }
    visual = from_dict(VisualAdaptationTrainConfig, visual_config)
    language = from_dict(LanguageAdaptationTrainConfig, language_config)
    if order == "joint":
        return [
            {
                **shared,
                "stage": "joint_adaptation",
                "kind": order,
                "out": str(out),
                "config": asdict(joint_from_stages(visual, language)),
            }
        ]
    stage1 = {"stage": "adapted_encoder", "config": asdict(visual)}
    stage2 = {"stage": "instruction_tuned_lm", "config": asdict(language)}
    first, second, handover, trained = (
        (stage1, stage2, "encoder", "vision")
        if order == "vision_then_language"
        else (stage2, stage1, "lm", "language")
    )
    part = out.with_name(f"{out.name}.{trained}")
    return [
        {**shared, **first, "kind": f"{order}.{trained}", "out": str(part)},
        {**shared, **second, "kind": order, "out": str(out), handover: str(part), "whole": True},
    ]


def train(job: dict, report: Reporter | None = None) -> dict:
    """The VLM program: the job's stage, on this rank."""
    if job.get("stage") not in STAGES:
        raise ValueError(f"job stage must be one of {sorted(STAGES)}, not {job.get('stage')!r}")
    if job.get("state"):  # the state of exactly this job: its settings, inputs and output
        what = {k: v for k, v in job.items() if k != "state"}
        keyed_by = json.dumps(what, sort_keys=True, default=str).encode()
        job = {**job, "state": str(state_file(job["state"], keyed_by))}
    return STAGES[job["stage"]](job, report or Reporter())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", type=Path, required=True, help="the job file")
    args = parser.parse_args(argv)
    quiet_libraries()
    return run_job(train, read_job(args.job))


if __name__ == "__main__":
    sys.exit(main())
