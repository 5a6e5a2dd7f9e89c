"""Instruction data for language adaptation (stage 2), made from video captions.

By default questions and answers come from templates over the caption's content: the corpus
attributes when a record has them, else the parsed caption ("a red circle moves left, then a
blue square grows"). A question type that cannot be answered from what is known is skipped.
Optionally a local causal LM writes the questions and answers instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from model_code.data.corpus import COLOURS, MOTIONS, SHAPES

CAPTION_PROMPT = "caption the video ."
IMAGE_PROMPT = "caption the image ."  # what the image VLM learns on single frames
QUESTION_TYPES: tuple[str, ...] = (
    "detailed_description",
    "direction",
    "temporal_order",
    "size_change",
    "counting",
    "verification",
    "short_caption",
)

_OBJECT = re.compile(rf"^a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) ({'|'.join(MOTIONS)})$")
_DETAIL = {
    "moves left": "moves to the left",
    "moves right": "moves to the right",
    "moves up": "moves up",
    "moves down": "moves down",
    "grows": "gets bigger",
    "shrinks": "gets smaller",
    "stays still": "does not move",
}
_BASE_VERB = {
    "moves left": "move left",
    "moves right": "move right",
    "moves up": "move up",
    "moves down": "move down",
    "grows": "grow",
    "shrinks": "shrink",
    "stays still": "stay still",
}
_NUMBERS = ("none", "one", "two", "three", "four")


def parse_caption(caption: str) -> list[dict] | None:
    """Objects of a caption in the corpus grammar, in time order; None if it does not parse."""
    parts = [p.strip() for p in caption.lower().strip().rstrip(".").split(", then ")]
    objects = []
    for part in parts:
        m = _OBJECT.match(" ".join(part.split()))
        if m is None:
            return None
        objects.append({"colour": m[1], "shape": m[2], "motion": m[3]})
    return objects


def _name(o: dict) -> str:
    return f"{o['colour']} {o['shape']}"


def _phrase(o: dict) -> str:
    return f"a {_name(o)} {o['motion']}"


def template_questions(
    objects: list[dict], caption: str, rng: np.random.Generator
) -> dict[str, tuple]:
    """One (prompt, answer) per question type that these objects can answer: the instruction
    rows of stage 2, and the held-out video QA of model_code.evaluation.qa."""
    qa: dict[str, tuple[str, str]] = {"short_caption": (CAPTION_PROMPT, caption)}
    if not objects:
        return qa
    n = len(objects)
    o = objects[int(rng.integers(n))]
    count = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    sentences = [f"there {'is' if n == 1 else 'are'} {count} shape{'s' if n > 1 else ''} ."]
    for i, obj in enumerate(objects):
        lead = "" if n == 1 else ("first " if i == 0 else "after that ")
        sentences.append(f"{lead}a {_name(obj)} {_DETAIL[obj['motion']]} .")
    qa["detailed_description"] = ("describe the video in detail .", " ".join(sentences))

    direction = o["motion"].removeprefix("moves ") if o["motion"].startswith("moves ") else None
    qa["direction"] = (
        f"which way does the {_name(o)} move ?",
        direction or "it stays in place",
    )
    size = {"grows": "bigger", "shrinks": "smaller"}.get(o["motion"], "neither , it keeps its size")
    qa["size_change"] = (f"does the {_name(o)} get bigger or smaller ?", size)
    if rng.random() < 0.5:
        qa["counting"] = ("how many shapes are there ?", count)
    else:
        moving = sum(obj["motion"] != "stays still" for obj in objects)
        qa["counting"] = ("how many shapes move ?", _NUMBERS[moving] if moving < 5 else str(moving))
    claimed = (
        o["motion"]
        if rng.random() < 0.5
        else str(rng.choice([m for m in MOTIONS if m != o["motion"]]))
    )
    qa["verification"] = (
        f"does the {_name(o)} {_BASE_VERB[claimed]} ?",
        "yes" if claimed == o["motion"] else "no",
    )
    if n > 1:
        if rng.random() < 0.5:
            qa["temporal_order"] = ("what happens first ?", _phrase(objects[0]))
        else:
            i = int(rng.integers(n - 1))
            qa["temporal_order"] = (
                f"what happens after the {_name(objects[i])} {_BASE_VERB[objects[i]['motion']]} ?",
                _phrase(objects[i + 1]),
            )
    return qa


def make_instructions(records: list[dict], seed: int = 0) -> list[dict]:
    """Rows {key, type, prompt, answer}: one per answerable question type per record.

    A record is {"key", "caption", optional "attributes"} (corpus attributes). Without
    attributes the caption is parsed; a caption outside the corpus grammar yields only its
    short_caption row.
    """
    rows = []
    for i, record in enumerate(records):
        rng = np.random.default_rng([seed, i])
        attributes = record.get("attributes")
        objects = attributes["objects"] if attributes else parse_caption(record["caption"])
        questions = template_questions(objects or [], record["caption"], rng)
        for qtype, (prompt, answer) in questions.items():
            rows.append({"key": record["key"], "type": qtype, "prompt": prompt, "answer": answer})
    return rows


def pretraining_texts(records: list[dict], seed: int = 0) -> list[str]:
    """What the language model reads before it ever sees an image, like an LLM's text corpus:
    the captions and their instruction rows as plain text, one row per text, plus one document
    per video that strings all its rows together in a random order. In those documents what a
    video shows (its motion, colour, shape) is stated more than once, so the LM learns to carry
    earlier context into what it writes, as any LLM does; that is what lets stage 1 steer a
    frozen LM with visual tokens alone. Also the tokenizer's vocabulary."""
    rows = make_instructions(records, seed=seed)
    by_key: dict[str, list[str]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(f"{row['prompt']} {row['answer']}")
    texts, documents = [], []
    for i, record in enumerate(records):
        attributes = record.get("attributes")
        objects = attributes["objects"] if attributes else parse_caption(record["caption"])
        parts = list(by_key.get(record["key"], []))
        if objects:
            still = " and ".join(f"a {_name(o)}" for o in objects)
            texts.append(f"{IMAGE_PROMPT} {still}")
            parts.append(f"{IMAGE_PROMPT} {still}")
        if len(parts) > 1:
            order = np.random.default_rng([seed, i, 1]).permutation(len(parts))
            documents.append(" ".join(parts[j] for j in order))
    return texts + [f"{row['prompt']} {row['answer']}" for row in rows] + documents


def make_instructions_with_llm(
    records: list[dict],
    llm_path: str | Path,
    max_new_tokens: int = 32,
    device: str = "auto",
    seed: int = 0,
) -> list[dict]:
    """Rows {key, type="llm", prompt, answer} written by a local causal LM (safetensors only):
    it is asked for a question about each caption, then for that question's answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model_code.training.common import pick_device

    dev = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(llm_path, local_files_only=True)
    model = (
        AutoModelForCausalLM.from_pretrained(llm_path, local_files_only=True, use_safetensors=True)
        .to(dev)
        .eval()
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def complete(texts: list[str]) -> list[str]:
        batch = tokenizer(texts, return_tensors="pt", padding=True).to(dev)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = tokenizer.batch_decode(
            out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [" ".join(t.split("\n")[0].split()) for t in new]

    torch.manual_seed(seed)
    rows = []
    for start in range(0, len(records), 16):
        chunk = records[start : start + 16]
        context = [f"video description: {r['caption']}\n" for r in chunk]
        questions = complete([c + "a question about the video:" for c in context])
        answers = complete(
            [c + f"question: {q}\nanswer:" for c, q in zip(context, questions, strict=True)]
        )
        for r, q, a in zip(chunk, questions, answers, strict=True):
            if q and a:
                rows.append({"key": r["key"], "type": "llm", "prompt": q, "answer": a})
    return rows
