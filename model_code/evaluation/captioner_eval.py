"""One VLM on the held-out benchmark clips: its captions (CIDEr, BLEU-4, and on the embedded
corpus whether motion, colour and shape are named) and its answers to the video QA questions
(model_code.evaluation.qa). captioner_eval and adaptation_order compare their models with this one
function, so their rows mean the same thing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_code.data import shards
from model_code.evaluation import qa
from model_code.evaluation.caption_metrics import attribute_accuracy, bleu4, cider

CAPTION_BATCH = 64  # clips per generate call
HEADLINE_QA = ("qa_exact", "qa_soft", "qa_questions")  # the QA columns of the headline table


class Benchmark:
    """The benchmark folder (retrieval_benchmark's clips.tar + annotations.json): reference
    captions by key, and the clips decoded once per frame count."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.refs: dict[str, list[str]] = {}
        for s in json.loads((self.folder / "annotations.json").read_text())["sentences"]:
            self.refs.setdefault(s["video_id"], []).append(s["caption"])
        self._clips: dict[int, tuple[list[str], np.ndarray, list[dict]]] = {}

    def clips(self, num_frames: int) -> tuple[list[str], np.ndarray, list[dict]]:
        """keys, frames [N, T, H, W, 3] and metas of the benchmark clips."""
        if num_frames not in self._clips:
            keys, clips, metas, _ = shards.load_clips(self.folder / "clips.tar", num_frames)
            self._clips[num_frames] = (keys, clips, metas)
        return self._clips[num_frames]


def evaluate_vlm(vlm, bench: Benchmark, qa_seed: int = 0) -> tuple[dict, list[str]]:
    """(row, captions): BLEU-4, CIDEr, <attribute>_acc and the qa_* figures of `vlm` (the
    attribute and QA figures only where the clips have attributes), and its caption per clip."""
    keys, clips, metas = bench.clips(vlm.num_frames)
    captions = [
        c
        for i in range(0, len(clips), CAPTION_BATCH)
        for c in vlm.caption(clips[i : i + CAPTION_BATCH])
    ]
    refs = [bench.refs[k] for k in keys]
    row: dict = {"BLEU-4": bleu4(captions, refs), "CIDEr": cider(captions, refs)}
    if all(m.get("attributes") for m in metas):
        acc = attribute_accuracy(captions, [m["attributes"] for m in metas])
        row.update({f"{k}_acc": v for k, v in acc.items()})
    row.update(qa.evaluate_qa(vlm, keys, clips, metas, seed=qa_seed, batch_size=CAPTION_BATCH))
    return row, captions


@dataclass
class Comparison:
    """Several VLMs on one benchmark: a row of figures per model (its name in column `label`,
    its lineage version), and the first clips' reference and each model's caption."""

    label: str
    rows: list[dict]
    samples: list[dict]

    @property
    def has_qa(self) -> bool:
        """Whether the clips carried attributes to ask about (not on real data)."""
        return any("qa_exact" in r for r in self.rows)

    def headline(self) -> list[dict]:
        """Caption figures and the overall QA accuracy."""
        return [
            {k: v for k, v in r.items() if k in HEADLINE_QA or not k.startswith("qa_")}
            for r in self.rows
        ]

    def qa_by_type(self) -> list[dict]:
        """The QA accuracies by question type."""
        return [
            {
                self.label: r[self.label],
                **{k: v for k, v in r.items() if k.startswith("qa_") and k not in HEADLINE_QA},
            }
            for r in self.rows
        ]


def compare_vlms(
    folders: dict[str, str | Path],
    benchmark: str | Path,
    device: str = "auto",
    label: str = "model",
    sample_clips: int = 6,
) -> Comparison:
    """Each VLM checkpoint folder (name -> folder) through evaluate_vlm on the benchmark folder,
    loaded one at a time on `device`: what captioner_eval and adaptation_order report."""
    from model_code.models.lineage import read_lineage
    from model_code.models.video_vlm import VideoVLM

    bench = Benchmark(benchmark)
    rows, captions, keys = [], {}, []
    for model, folder in folders.items():
        vlm = VideoVLM.from_pretrained(folder, device=device)
        row, captions[model] = evaluate_vlm(vlm, bench)
        rows.append({label: model, "version": read_lineage(folder)["version"], **row})
        keys = bench.clips(vlm.num_frames)[0]
    samples = [
        {"key": k, "reference": bench.refs[k][0], **{m: captions[m][i] for m in captions}}
        for i, k in enumerate(keys[:sample_clips])
    ]
    return Comparison(label, rows, samples)
