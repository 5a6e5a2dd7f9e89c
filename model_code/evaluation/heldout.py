"""The retrieval benchmark: held-out clips, reference captions, zero-shot classes, and scoring
a dual encoder on them (MSR-VTT protocol)."""

from __future__ import annotations

import json
from pathlib import Path

from model_code.data import corpus, shards
from model_code.data.annotations import AnnotatedVideo
from model_code.data.ingest import IngestConfig, ingest_source
from model_code.data.manifest import VideoSource


def zero_shot_prompts() -> dict[str, tuple[list[str], list[list[str]]]]:
    """Class names and prompt ensembles for motion and shape: CLIP-style templates over the
    corpus words, so no class is favoured by its wording (words a caption-trained model never
    saw, like "object", would only add noise)."""
    motion = [
        [f"a {c} {s} {m}" for c in corpus.COLOURS for s in corpus.SHAPES]
        + [f"a video of something that {m}"]
        for m in corpus.MOTIONS
    ]
    shape = [[f"a {c} {s}" for c in corpus.COLOURS] for s in corpus.SHAPES]
    return {"motion": (list(corpus.MOTIONS), motion), "shape": (list(corpus.SHAPES), shape)}


def embedded(config: corpus.CorpusConfig, n: int):
    """The embedded held-out split: clips, no rejects, one ground-truth caption per video, and
    zero-shot tasks over the single-object clips (motion: 7 classes, shape: 3)."""
    specs = corpus.split_specs("benchmark", config, 0, n)
    clips = shards.embedded_clips(specs)
    refs = [(s.key, [corpus.ground_truth_caption(s)]) for s in specs]
    return clips, [], refs, embedded_classes(specs)


def embedded_classes(specs) -> dict:
    """The zero-shot tasks over the single-object clips of `specs`: motion and shape, each
    {classes, prompts, labels: {key: class index}} (what classes.json holds)."""
    single = [s for s in specs if not s.ordered]
    prompts = zero_shot_prompts()
    return {
        task: {
            "classes": names,
            "prompts": prompts[task][1],
            "labels": {s.key: names.index(getattr(s.objects[0], task)) for s in single},
        }
        for task, names in (("motion", list(corpus.MOTIONS)), ("shape", list(corpus.SHAPES)))
    }


def from_annotated(videos: list[AnnotatedVideo], ingest: IngestConfig):
    """A local MSR-VTT-style set: each video becomes one clip (its first `clip_seconds`),
    keyed by video_id. No zero-shot tasks."""
    clips, rejects, refs = [], [], []
    for v in videos:
        got, bad = ingest_source(VideoSource(v.path, alt_text=v.captions[0]), ingest)
        rejects += bad
        if got:
            first = got[0]
            clips.append(shards.Clip(v.video_id, first.mp4, {**first.meta, "key": v.video_id}))
            refs.append((v.video_id, v.captions))
    return clips, rejects, refs, {}


def labelled_task(
    names: list[str],
    items: list[tuple[str, int]],
    ingest: IngestConfig,
    task: str = "classes",
):
    """Zero-shot classification videos (annotations.read_labelled): each becomes one clip
    (its first `clip_seconds`), keyed zs-{i}; (clips, rejects, {task: classes, prompts, labels})."""
    from model_code.data.annotations import class_prompts

    clips, rejects, labels = [], [], {}
    for i, (path, label) in enumerate(items):
        got, bad = ingest_source(VideoSource(path), ingest)
        rejects += bad
        if got:
            key = f"zs-{i:05d}"
            clips.append(shards.Clip(key, got[0].mp4, {**got[0].meta, "key": key}))
            labels[key] = label
    return (
        clips,
        rejects,
        {task: {"classes": names, "prompts": class_prompts(names), "labels": labels}},
    )


def class_prompt_texts(classes: dict) -> list[str]:
    return [p for task in classes.values() for group in task["prompts"] for p in group]


def score_dual_encoder(model_folder: str | Path, benchmark_dir: str | Path) -> dict[str, float]:
    """All retrieval metrics plus zs_{task}_top1/top5 for each zero-shot task, of the dual
    encoder in `model_folder` on the benchmark written by the retrieval_benchmark asset."""
    from model_code.models.dual_encoder import DualEncoder

    benchmark_dir = Path(benchmark_dir)
    model = DualEncoder.from_pretrained(model_folder)
    keys, frames, _, _ = shards.load_clips(benchmark_dir / "clips.tar", model.config.num_frames)
    sentences = json.loads((benchmark_dir / "annotations.json").read_text())["sentences"]
    classes = json.loads((benchmark_dir / "classes.json").read_text())
    return score_model(model, keys, frames, sentences, classes)


def score_model(
    model, keys: list[str], frames, sentences: list[dict], classes: dict
) -> dict[str, float]:
    """Text->video / video->text retrieval of `sentences` ({video_id, caption}) among the clips
    that have one, and zero-shot classification for each task of `classes` (embedded_classes'
    form) over its labelled clips; `frames` [N, T, H, W, 3] in the order of `keys`."""
    from model_code.evaluation.retrieval_metrics import retrieval_metrics, zero_shot_classification
    from model_code.models.dual_encoder import embed_classes, embed_texts, embed_videos

    column = {k: i for i, k in enumerate(keys)}
    sentences = [s for s in sentences if s["video_id"] in column]
    video_emb = embed_videos(model, frames)
    text_emb = embed_texts(model, [s["caption"] for s in sentences])
    # retrieval among the videos that have sentences (zero-shot-only clips are not candidates)
    described = sorted({column[s["video_id"]] for s in sentences})
    row = {c: i for i, c in enumerate(described)}
    scores = retrieval_metrics(
        text_emb @ video_emb[described].T, [row[column[s["video_id"]]] for s in sentences]
    )
    for task, spec in classes.items():
        labelled = [k for k in keys if k in spec["labels"]]
        if not labelled:
            continue
        zs = zero_shot_classification(
            video_emb[[column[k] for k in labelled]],
            embed_classes(model, spec["prompts"]),
            [spec["labels"][k] for k in labelled],
        )
        scores[f"zs_{task}_top1"], scores[f"zs_{task}_top5"] = zs["top1"], zs["top5"]
    return {k: float(v) for k, v in scores.items()}


def seed_summary(scores, metrics: list[str], order: list[str], primary: str = "t2v_R1"):
    """One row per caption source from every score row: the latest score of each seed, then
    the mean and sample standard deviation over seeds of each metric (0 with one seed), the
    number of seeds, and whether the source's `primary` mean lies within one standard
    deviation (the larger of the two) of the previous source's in `order`."""
    import pandas as pd

    df = scores.copy()
    df["seed"] = df["seed"].fillna(-1).astype(int) if "seed" in df else -1
    latest = df.sort_values("scored_at").groupby(["source", "seed"], as_index=False).last()
    rows = []
    for source, group in latest.groupby("source"):
        row = {"source": source, "seeds": len(group)}
        if "protocol" in group:
            row["protocol"] = ", ".join(sorted(group["protocol"].dropna().astype(str).unique()))
        for m in metrics:
            values = group[m].astype(float)
            row[m] = float(values.mean())
            row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    out = pd.DataFrame(rows)
    rank = {s: i for i, s in enumerate(order)}
    out = out.sort_values("source", key=lambda s: s.map(rank)).reset_index(drop=True)
    close = [False]
    for prev, cur in zip(out.to_dict("records"), out.to_dict("records")[1:], strict=False):
        spread = max(prev[f"{primary}_std"], cur[f"{primary}_std"])
        close.append(bool(spread > 0 and abs(cur[primary] - prev[primary]) <= spread))
    out[f"{primary}_within_1sd_of_previous"] = close
    return out
