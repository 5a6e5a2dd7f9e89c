"""Adaptation group: an image VLM becomes a video VLM in two stages (DESIGN.md, step 1)."""

import json
from dataclasses import asdict, replace
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import checkpoint_result, file_version, md_table
from resources.devices import Accelerators
from resources.sources import ClipSource
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking


class TrainingConfig(Config):
    """Optimisation settings a user may change in the launchpad (defaults: the CPU demo)."""

    steps: int = 800
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    device: str = Field(default="auto", description="auto = CUDA when present, else CPU")

    def train_config(self, device: str):
        """The model_code settings, on the device this step leased."""
        from model_code.adaptation import TrainConfig

        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           seed=self.seed, device=device)


class LanguageAdaptationConfig(TrainingConfig):
    steps: int = 1200
    lora_rank: int = Field(default=0, description="0 = tune the whole LM; r > 0 = rank-r LoRA "
                           "adapters (peft) merged into the weights at the end")


class ImageVLMConfig(TrainingConfig):
    text_steps: int = Field(default=300, description="text-only LM pretraining steps (batch 32)")
    pretrained_path: str = Field(
        default="", description="A local image-text-to-text checkpoint folder (LLaVA-style). "
        "Empty: build the tiny default and train it on single frames of the embedded corpus.")
    trust_remote_code: bool = False
    image_examples: int = 1500


class VideoCaptionDataConfig(Config):
    annotations: str = Field(default="", description="MSR-VTT/VATEX-style annotation JSON; "
                             "empty = the embedded corpus's supervised adaptation split")
    videos_dir: str = ""
    clips: int = 900


class InstructionDataConfig(Config):
    llm_path: str = Field(default="", description="Local causal LM folder to write the "
                          "instructions; empty = templates")
    seed: int = 0


def _train(tracking: MlflowTracking, name: str, params: dict, fn, **kwargs) -> tuple[dict, str]:
    """Run a training function inside an MLflow run that gets its per-step curves."""
    with tracking.run(name, params=params) as run:
        metrics = fn(on_metrics=lambda step, m: run.log_metrics(m, step), **kwargs)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return metrics, run.run_id


def _save_checkpoint(vlm, folder: Path, tracking_run: str, metrics: dict, parents: dict,
                     config, data: dict) -> dict:
    from model_code.lineage import write_lineage
    from model_code.training import atomic_dir

    with atomic_dir(folder) as tmp:
        vlm.save_pretrained(tmp)
        lineage = write_lineage(tmp, parents=parents, training_config=asdict(config), data=data,
                                metrics=metrics, mlflow_run_id=tracking_run)
    return lineage


def _samples(vlm, clips, keys: list[str], refs: list[str], n: int = 6) -> MetadataValue:
    captions = vlm.caption(clips[:n])
    return md_table([{"key": k, "caption": c, "reference": r}
                     for k, c, r in zip(keys, captions, refs)])


@asset(group_name="adaptation", code_version="2", pool="gpu")
def image_vlm(
    context: AssetExecutionContext,
    config: ImageVLMConfig,
    clip_source: ClipSource,
    store: ArtifactStore,
    tracking: MlflowTracking,
    accelerators: Accelerators,
) -> MaterializeResult:
    """The starting point: a user's local image VLM, or by default a tiny VLM that learned
    language from text and captioning from single still frames — it knows no motion."""
    import numpy as np

    from model_code import corpus, instructions
    from model_code.adaptation import pretrain_image_vlm
    from model_code.lineage import folder_hash
    from model_code.vlm import TinyVLMConfig, VideoVLM, build_tiny_image_vlm

    with accelerators.device(config.device) as device:  # leased for the whole step
        folder = store.checkpoint("image_vlm")
        if config.pretrained_path:
            source = Path(config.pretrained_path)
            vlm = VideoVLM.from_pretrained(source, trust_remote_code=config.trust_remote_code)
            lineage = _save_checkpoint(vlm, folder, "", {}, {"pretrained": str(source)}, config,
                                       {"pretrained_version": folder_hash(source)})
            return checkpoint_result(folder, lineage)

        cc = clip_source.corpus_config()
        specs = corpus.split_specs("image", cc, 0, config.image_examples)
        frames = np.stack([corpus.render_still(s) for s in specs])
        still = [corpus.still_caption(s) for s in specs]
        # the text an LLM would already know: sentences and Q&A about shapes and how they move
        texts = instructions.pretraining_texts(
            [{"key": s.key, "caption": corpus.ground_truth_caption(s), "attributes": s.attributes()}
             for s in specs], seed=config.seed)
        vlm = build_tiny_image_vlm(texts + still, TinyVLMConfig(), seed=config.seed)
        train_config = config.train_config(device)
        text_config = replace(train_config, steps=config.text_steps, batch_size=32)
        metrics, run_id = _train(tracking, "image_vlm", {**vars(train_config), "examples": len(specs),
                                                         "text_steps": config.text_steps},
                                 pretrain_image_vlm, vlm=vlm, frames=frames, captions=still, texts=texts,
                                 config=train_config, text_config=text_config)
        lineage = _save_checkpoint(vlm, folder, run_id, metrics, {}, train_config,
                                   {"image_examples": len(specs), "corpus_seed": cc.seed})
        clips = np.repeat(frames[:6, None], vlm.num_frames, axis=1)
        return checkpoint_result(folder, lineage, {
            "sample_captions": _samples(vlm, clips, [s.key for s in specs[:6]], still[:6])})


@asset(group_name="adaptation", code_version="1")
def video_caption_data(
    context: AssetExecutionContext,
    config: VideoCaptionDataConfig,
    clip_source: ClipSource,
    store: ArtifactStore,
) -> MaterializeResult:
    """Supervised (clip, caption) pairs for visual adaptation: the embedded adaptation split,
    or a local MSR-VTT/VATEX-style annotation file with its videos."""
    import pandas as pd

    from model_code import annotations, corpus, shards

    out = store.path("video_caption_data")
    if config.annotations:
        videos = annotations.read_msrvtt(config.annotations, config.videos_dir, limit=config.clips)
        sources = [shards.VideoSource(v.path, alt_text=v.captions[0]) for v in videos]
        clips, rejects = shards.ingest(sources, clip_source.ingest_config())
        by_path = {v.path: v for v in videos}
        rows = [{"key": c.key, "caption": by_path[c.meta["source"]].captions[0],
                 "attributes": None} for c in clips]
    else:
        specs = corpus.split_specs("adapt", clip_source.corpus_config(), 0, config.clips)
        clips, rejects = shards.embedded_clips(specs), []
        rows = [{"key": s.key, "caption": corpus.ground_truth_caption(s),
                 "attributes": json.dumps(s.attributes())} for s in specs]
    shards.write_shard(out / "clips.tar", clips)
    df = pd.DataFrame(rows, columns=["key", "caption", "attributes"])
    store.write_parquet(out / "captions.parquet", df)
    store.write_bytes(out / "rejects.parquet", shards.rejects_bytes(rejects))
    from dagster import DataVersion

    return MaterializeResult(
        metadata={"path": MetadataValue.path(str(out)), "clips": len(clips), "rejects": len(rejects),
                  "samples": md_table(rows[:8])},
        data_version=DataVersion(file_version(out / "captions.parquet")[:8] + file_version(
            out / "clips.tar")[:8]),
    )


def _caption_data(store: ArtifactStore, num_frames: int):
    import pandas as pd

    from model_code import shards

    folder = store.path("video_caption_data")
    keys, clips, _, _ = shards.load_clips(folder / "clips.tar", num_frames)
    df = pd.read_parquet(folder / "captions.parquet").set_index("key").loc[keys].reset_index()
    return keys, clips, df


def _version(store: ArtifactStore, name: str) -> str:
    from model_code.lineage import read_lineage

    return read_lineage(store.checkpoint(name))["version"]


@asset(group_name="adaptation", code_version="2", deps=[image_vlm, video_caption_data], pool="gpu")
def visual_adapted_vlm(
    context: AssetExecutionContext, config: TrainingConfig, store: ArtifactStore,
    tracking: MlflowTracking, accelerators: Accelerators,
) -> MaterializeResult:
    """Stage 1: vision tower and projector learn from video captions; the LM stays frozen."""
    from model_code.adaptation import visual_adaptation
    from model_code.vlm import VideoVLM

    with accelerators.device(config.device) as device:  # leased for the whole step
        vlm = VideoVLM.from_pretrained(store.checkpoint("image_vlm"), device=device)
        keys, clips, df = _caption_data(store, vlm.num_frames)
        captions = df["caption"].tolist()
        train_config = config.train_config(device)
        metrics, run_id = _train(tracking, "visual_adapted_vlm", {**vars(train_config), "clips": len(keys)},
                                 visual_adaptation, vlm=vlm, clips=clips, captions=captions,
                                 config=train_config,
                                 state_path=store.path("training_state", "visual_adapted_vlm.pt"))
        folder = store.checkpoint("visual_adapted_vlm")
        lineage = _save_checkpoint(vlm, folder, run_id, metrics, {"image_vlm": _version(store, "image_vlm")},
                                   train_config, {"video_caption_data": len(keys)})
        return checkpoint_result(folder, lineage, {"sample_captions": _samples(vlm, clips, keys, captions)})


@asset(group_name="adaptation", code_version="2", deps=[video_caption_data])
def instruction_data(
    context: AssetExecutionContext, config: InstructionDataConfig, store: ArtifactStore
) -> MaterializeResult:
    """Instruction-following examples about the videos (describe, direction, order, change,
    counting, yes/no, short caption), made from the video captions."""
    import pandas as pd

    from model_code import instructions

    df = pd.read_parquet(store.path("video_caption_data", "captions.parquet"))
    records = [{"key": r["key"], "caption": r["caption"],
                **({"attributes": json.loads(r["attributes"])} if r["attributes"] else {})}
               for r in df.to_dict("records")]
    if config.llm_path:
        rows = instructions.make_instructions_with_llm(records, config.llm_path, seed=config.seed)
    else:
        rows = instructions.make_instructions(records, seed=config.seed)
    out = pd.DataFrame(rows)
    path = store.write_parquet(store.path("instruction_data", "instructions.parquet"), out)
    counts = out["type"].value_counts().to_dict()
    from dagster import DataVersion

    return MaterializeResult(
        metadata={"path": MetadataValue.path(str(path)), "examples": len(out),
                  "per_type": md_table([{"type": k, "examples": v} for k, v in counts.items()], 20),
                  "samples": md_table(out.groupby("type").head(1).to_dict("records"), 20)},
        data_version=DataVersion(file_version(path)),
    )


@asset(group_name="adaptation", code_version="2", deps=[visual_adapted_vlm, instruction_data],
       pool="gpu")
def video_vlm(
    context: AssetExecutionContext, config: LanguageAdaptationConfig, store: ArtifactStore,
    tracking: MlflowTracking, accelerators: Accelerators,
) -> MaterializeResult:
    """Stage 2: the LM learns to follow instructions about videos; vision stays frozen."""
    import pandas as pd

    from model_code.adaptation import language_adaptation
    from model_code.vlm import VideoVLM

    with accelerators.device(config.device) as device:  # leased for the whole step
        vlm = VideoVLM.from_pretrained(store.checkpoint("visual_adapted_vlm"), device=device)
        keys, clips, df = _caption_data(store, vlm.num_frames)
        index = {k: i for i, k in enumerate(keys)}
        rows = pd.read_parquet(store.path("instruction_data", "instructions.parquet"))
        examples = [{"clip_index": index[r["key"]], "prompt": r["prompt"], "answer": r["answer"],
                     "type": r["type"]} for r in rows.to_dict("records") if r["key"] in index]
        train_config = config.train_config(device)
        metrics, run_id = _train(tracking, "video_vlm", {**vars(train_config), "examples": len(examples),
                                                           "lora_rank": config.lora_rank},
                                 language_adaptation, vlm=vlm, clips=clips, examples=examples,
                                 config=train_config, lora_rank=config.lora_rank,
                                 state_path=store.path("training_state", "video_vlm.pt"))
        folder = store.checkpoint("video_vlm")
        lineage = _save_checkpoint(
            vlm, folder, run_id, metrics,
            {"visual_adapted_vlm": _version(store, "visual_adapted_vlm")}, train_config,
            {"instruction_examples": len(examples)})
        return checkpoint_result(folder, lineage, {
            "sample_captions": _samples(vlm, clips, keys, df["caption"].tolist())})


@asset(group_name="adaptation", code_version="1", pool="gpu",
       deps=[image_vlm, visual_adapted_vlm, video_vlm, "retrieval_benchmark"])
def captioner_eval(context: AssetExecutionContext, store: ArtifactStore,
                   tracking: MlflowTracking, accelerators: Accelerators) -> MaterializeResult:
    """Caption the held-out clips with each VLM stage; CIDEr, BLEU-4 and (on the embedded
    corpus) whether motion, colour and shape are named correctly, side by side."""
    from model_code import shards
    from model_code.caption_metrics import attribute_accuracy, bleu4, cider
    from model_code.lineage import read_lineage
    from model_code.vlm import VideoVLM

    bench = store.path("benchmark")
    refs = {}
    for s in json.loads((bench / "annotations.json").read_text())["sentences"]:
        refs.setdefault(s["video_id"], []).append(s["caption"])
    with accelerators.device() as device:  # leased while the models run
        rows, samples, clips_cache = [], {}, {}
        for name in ("image_vlm", "visual_adapted_vlm", "video_vlm"):
            vlm = VideoVLM.from_pretrained(store.checkpoint(name), device=device)
            if vlm.num_frames not in clips_cache:
                clips_cache[vlm.num_frames] = shards.load_clips(bench / "clips.tar", vlm.num_frames)
            keys, clips, metas, _ = clips_cache[vlm.num_frames]
            captions = [c for i in range(0, len(clips), 64) for c in vlm.caption(clips[i : i + 64])]
            row = {"model": name, "version": read_lineage(store.checkpoint(name))["version"],
                   "BLEU-4": bleu4(captions, [refs[k] for k in keys]),
                   "CIDEr": cider(captions, [refs[k] for k in keys])}
            if all("attributes" in m for m in metas):
                acc = attribute_accuracy(captions, [m["attributes"] for m in metas])
                row.update({f"{k}_acc": v for k, v in acc.items()})
            rows.append(row)
            samples[name] = captions[:6]


    table = md_table(rows)
    sample_rows = [{"key": k, "reference": refs[k][0], **{n: samples[n][i] for n in samples}}
                   for i, k in enumerate(keys[:6])]
    with tracking.run("captioner_eval") as run:
        run.log_text(table.value, "captioner_eval.md")
        for r in rows:
            run.log_metrics({f"{r['model']}.{k}": v for k, v in r.items()
                             if isinstance(v, (int, float))})
    store.write_bytes(store.path("captioner_eval.json"), json.dumps(rows, indent=1).encode())
    return MaterializeResult(metadata={"comparison": table, "samples": md_table(sample_rows),
                                       **{f"{r['model']}.{k}": float(v) for r in rows
                                          for k, v in r.items() if isinstance(v, (int, float))}})
