"""Caption quality: corpus BLEU-4, CIDEr-D, attribute accuracy against the corpus ground
truth, and statistics that expose collapse (duplicates, repetition, empty output).

Text is split with model_code.models.text.words, the unit the tokenizers use. BLEU-4 is on 0..1;
CIDEr-D on its usual 0..10 scale (x10, as in the COCO caption toolkit).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

from model_code.data.corpus import mentions_motion
from model_code.models.text import words


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu4(candidates: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): clipped n-gram precisions pooled over the corpus,
    geometric mean of n=1..4, brevity penalty against the closest reference length. 0..1."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    matched, total = [0] * 4, [0] * 4
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        c = words(cand)
        ref_tokens = [words(r) for r in refs]
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in ref_tokens)[1] if refs else 0
        for n in range(1, 5):
            counts = _ngrams(c, n)
            best: Counter = Counter()
            for r in ref_tokens:
                best |= _ngrams(r, n)
            matched[n - 1] += sum(min(k, best[g]) for g, k in counts.items())
            total[n - 1] += max(len(c) - n + 1, 0)
    if cand_len == 0 or min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / 4
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(log_precision)


def cider(candidates: list[str], references: list[list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al.): tf-idf weighted n-gram cosine (n=1..4) with document
    frequencies over the references of this eval set, candidate counts clipped to the
    reference's, and a Gaussian length penalty. Mean over clips, x10."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    if not candidates:
        return 0.0
    refs_tokens = [[words(r) for r in refs] for refs in references]
    doc_freq: Counter = Counter()
    for refs in refs_tokens:
        doc_freq.update({g for r in refs for n in range(1, 5) for g in _ngrams(r, n)})
    log_docs = math.log(float(len(candidates)))

    def vector(tokens: list[str], n: int) -> tuple[dict, float]:
        counts = _ngrams(tokens, n)
        vec = {g: k * (log_docs - math.log(max(1.0, doc_freq[g]))) for g, k in counts.items()}
        return vec, math.sqrt(sum(v * v for v in vec.values()))

    scores = []
    for cand, refs in zip(candidates, refs_tokens, strict=True):
        c = words(cand)
        score = 0.0
        for n in range(1, 5):
            vc, norm_c = vector(c, n)
            for r in refs:
                vr, norm_r = vector(r, n)
                dot = sum(min(v, vr[g]) * vr[g] for g, v in vc.items() if g in vr)
                penalty = math.exp(-((len(c) - len(r)) ** 2) / (2 * sigma**2))
                if norm_c and norm_r:
                    score += penalty * dot / (norm_c * norm_r) / 4
        scores.append(10.0 * score / max(1, len(refs)))
    return sum(scores) / len(scores)


def attribute_accuracy(captions: list[str], attributes: list[dict]) -> dict:
    """Share of captions that name every object's colour / shape / motion phrase (corpus
    attributes). `object` asks for each full phrase 'a red circle moves left'; `order` asks,
    on clips with several objects, that those phrases come in time order."""
    hits = Counter()
    ordered_clips = 0
    for caption, attrs in zip(captions, attributes, strict=True):
        text = f" {' '.join(words(caption))} "
        objects = attrs["objects"]
        hits["colour"] += all(f" {o['colour']} " in text for o in objects)
        hits["shape"] += all(f" {o['shape']} " in text for o in objects)
        hits["motion"] += all(f" {o['motion']} " in text for o in objects)
        phrases = [f" a {o['colour']} {o['shape']} {o['motion']} " for o in objects]
        hits["object"] += all(p in text for p in phrases)
        if len(objects) > 1:
            ordered_clips += 1
            positions = [text.find(p) for p in phrases]
            hits["order"] += min(positions) >= 0 and positions == sorted(positions)
    n = max(1, len(captions))
    result = {k: hits[k] / n for k in ("motion", "colour", "shape", "object")}
    result["order"] = hits["order"] / ordered_clips if ordered_clips else float("nan")
    return result


def is_degenerate(caption: str) -> bool:
    """Empty, an n-gram (n<=4) repeated back to back ('moves left moves left'), or one word
    making up more than half of a caption of six words or more."""
    tokens = words(caption)
    if not tokens:
        return True
    for n in range(1, 5):
        for i in range(len(tokens) - 2 * n + 1):
            if tokens[i : i + n] == tokens[i + n : i + 2 * n]:
                return True
    top = Counter(tokens).most_common(1)[0][1]
    return len(tokens) >= 6 and top > len(tokens) / 2


def caption_statistics(captions: list[str]) -> dict:
    """Length, diversity and failure rates of a set of captions."""
    tokenized = [words(c) for c in captions]
    n = max(1, len(captions))
    unigrams = [t for toks in tokenized for t in toks]
    bigrams = [g for toks in tokenized for g in itertools.pairwise(toks)]
    return {
        "mean_words": len(unigrams) / n,
        "vocab_size": len(set(unigrams)),
        "distinct_1": len(set(unigrams)) / max(1, len(unigrams)),
        "distinct_2": len(set(bigrams)) / max(1, len(bigrams)),
        "motion_share": sum(mentions_motion(c) for c in captions) / n,
        "duplicate_rate": 1 - len(set(captions)) / n if captions else 0.0,
        "degenerate_rate": sum(is_degenerate(c) for c in captions) / n,
        "empty_rate": sum(not toks for toks in tokenized) / n,
    }


def within_clip_diversity(keys: list[str], captions: list[str]) -> dict:
    """How different a clip's several captions are (rows: one caption each, a clip's rows share
    its key): the mean number per clip, the mean number of distinct ones, the share of a clip's
    extra captions that are new ((distinct - 1) / (n - 1), over clips with n > 1), and the mean
    word-set Jaccard similarity of a clip's caption pairs (1: all the same)."""
    by_key: dict[str, list[str]] = {}
    for key, caption in zip(keys, captions, strict=True):
        by_key.setdefault(key, []).append(" ".join(str(caption).split()))
    if not by_key:
        return {
            "captions_per_clip": 0.0,
            "distinct_per_clip": 0.0,
            "within_clip_distinct_rate": 0.0,
            "within_clip_jaccard": 0.0,
        }
    several = [c for c in by_key.values() if len(c) > 1]
    jaccard = []
    for group in several:
        words = [set(c.split()) for c in group]
        jaccard += [
            len(a & b) / max(len(a | b), 1) for i, a in enumerate(words) for b in words[i + 1 :]
        ]
    return {
        "captions_per_clip": sum(map(len, by_key.values())) / len(by_key),
        "distinct_per_clip": sum(len(set(c)) for c in by_key.values()) / len(by_key),
        "within_clip_distinct_rate": (
            sum((len(set(c)) - 1) / (len(c) - 1) for c in several) / len(several)
        )
        if several
        else 0.0,
        "within_clip_jaccard": sum(jaccard) / len(jaccard) if jaccard else 1.0,
    }
