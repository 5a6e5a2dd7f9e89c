"""Held-out video QA: open-ended questions about the benchmark clips, asked to a VLM.

The questions are stage 2's instruction templates (model_code.data.instructions.template_questions)
over each benchmark clip's corpus attributes, for the question types stage 2 trains on that
have one short answer (detailed descriptions and captions are scored as captions elsewhere).
The clips are held out: no stage trained on them. Real data has no attributes, so no questions.

Scoring (SQuAD's rule): both strings are normalised — lower case, punctuation removed, the
articles a / an / the dropped, whitespace collapsed. A prediction is an *exact* match when the
normalised strings are equal, and a *soft* match when it is exact or the token-level F1 of the
normalised prediction against the normalised answer is at least 0.5. Figures are percentages
of the questions, per type and over all of them (each question counts once).
"""

from __future__ import annotations

import re
import string
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from model_code.data.instructions import template_questions

QA_TYPES: tuple[str, ...] = (
    "direction",
    "size_change",
    "counting",
    "verification",
    "temporal_order",
)
SOFT_F1 = 0.5  # token F1 at or above which an answer counts as a soft match
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def build_questions(
    keys: Sequence[str], attributes: Sequence[dict], seed: int = 0, per_type: int = 1
) -> list[dict]:
    """Rows {key, clip_index, type, question, answer}: up to `per_type` different questions of
    each QA type per clip (draws that repeat a question are dropped). Draw j of a clip uses a
    generator seeded by (seed, the key's CRC-32, j), so a clip gets the same questions whatever
    else is in the set."""
    rows = []
    for index, (key, attrs) in enumerate(zip(keys, attributes, strict=True)):
        seen: set[tuple[str, str]] = set()
        for draw in range(per_type):
            rng = np.random.default_rng([seed, zlib.crc32(key.encode()), draw])
            for qtype, (question, answer) in template_questions(attrs["objects"], "", rng).items():
                if qtype in QA_TYPES and (qtype, question) not in seen:
                    seen.add((qtype, question))
                    rows.append(
                        {
                            "key": key,
                            "clip_index": index,
                            "type": qtype,
                            "question": question,
                            "answer": answer,
                        }
                    )
    return rows


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, answer: str) -> float:
    """F1 of the normalised tokens (a bag of words); two empty strings match."""
    pred, gold = normalise(prediction).split(), normalise(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def score_answers(predictions: Sequence[str], rows: Sequence[dict]) -> dict[str, float]:
    """qa_exact, qa_soft and qa_<type>_exact, qa_<type>_soft (percent) for the types asked, and
    qa_questions (their number). No rows: no figures."""
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} questions")
    if not rows:
        return {}
    exact: dict[str, list[bool]] = {}
    soft: dict[str, list[bool]] = {}
    for prediction, row in zip(predictions, rows, strict=True):
        hit = normalise(prediction) == normalise(row["answer"])
        exact.setdefault(row["type"], []).append(hit)
        soft.setdefault(row["type"], []).append(
            hit or token_f1(prediction, row["answer"]) >= SOFT_F1
        )

    def percent(hits: list[bool]) -> float:
        return 100.0 * sum(hits) / len(hits)

    figures = {
        "qa_exact": percent([h for v in exact.values() for h in v]),
        "qa_soft": percent([h for v in soft.values() for h in v]),
    }
    for qtype in [t for t in QA_TYPES if t in exact] + sorted(set(exact) - set(QA_TYPES)):
        figures[f"qa_{qtype}_exact"] = percent(exact[qtype])
        figures[f"qa_{qtype}_soft"] = percent(soft[qtype])
    figures["qa_questions"] = len(rows)
    return figures


def answer_questions(
    vlm, clips: np.ndarray, rows: Sequence[dict], batch_size: int = 64, **generation
) -> list[str]:
    """The VLM's answer to each row's question about clips[row["clip_index"]], `batch_size`
    rows per generate call (greedy unless `generation` says otherwise)."""
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        answers += vlm.answer(
            clips[[r["clip_index"] for r in chunk]], [r["question"] for r in chunk], **generation
        )
    return answers


def evaluate_qa(
    vlm,
    keys: Sequence[str],
    clips: np.ndarray,
    metas: Sequence[dict],
    seed: int = 0,
    per_type: int = 1,
    batch_size: int = 64,
) -> dict[str, float]:
    """The QA figures of `vlm` on these clips; {} when a clip has no attributes (real data)."""
    if not metas or not all(m.get("attributes") for m in metas):
        return {}
    rows = build_questions(keys, [m["attributes"] for m in metas], seed=seed, per_type=per_type)
    return score_answers(answer_questions(vlm, clips, rows, batch_size=batch_size), rows)
