"""Held-out video QA (model_code.evaluation.qa): its questions are fixed by the clips' attributes
and
answerable from them; its scores follow the stated rule (SQuAD's normalisation, exact match,
token F1 >= 0.5 for a soft match)."""

import math

import numpy as np
import pytest

from model_code.data import corpus
from model_code.evaluation.qa import (
    QA_TYPES,
    answer_questions,
    build_questions,
    evaluate_qa,
    normalise,
    score_answers,
    token_f1,
)

NUMBERS = ("none", "one", "two", "three", "four")
BASE_VERB = {
    "moves left": "move left",
    "moves right": "move right",
    "moves up": "move up",
    "moves down": "move down",
    "grows": "grow",
    "shrinks": "shrink",
    "stays still": "stay still",
}


@pytest.fixture(scope="module")
def clips_attributes():
    specs = corpus.split_specs("benchmark", corpus.CorpusConfig(), 0, 40)
    return [s.key for s in specs], [s.attributes() for s in specs]


def test_normalise_drops_case_punctuation_articles_and_extra_spaces():
    assert normalise("  The Red circle,  moves LEFT! ") == "red circle moves left"
    assert normalise("neither , it keeps its size") == "neither it keeps its size"
    assert normalise("an apple and a theme") == "apple and theme"  # whole words only


def test_scores_on_planted_answers_match_the_hand_computed_figures():
    rows = [
        {"type": "direction", "answer": "left"},
        {"type": "direction", "answer": "it stays in place"},
        {"type": "counting", "answer": "two"},
        {"type": "temporal_order", "answer": "a red circle moves left"},
        {"type": "verification", "answer": "yes"},
        {"type": "size_change", "answer": "neither , it keeps its size"},
    ]
    predictions = [
        "Left.",  # exact after normalising
        "it stays",  # F1 2/3: soft only
        "three",  # wrong
        "the red circle moves right",  # F1 3/4: soft only
        "no",  # wrong
        "neither",
    ]  # F1 1/3: not even soft
    assert token_f1(predictions[1], rows[1]["answer"]) == pytest.approx(2 / 3)
    assert token_f1(predictions[3], rows[3]["answer"]) == pytest.approx(3 / 4)
    assert token_f1(predictions[5], rows[5]["answer"]) == pytest.approx(1 / 3)
    figures = score_answers(predictions, rows)
    assert figures == pytest.approx(
        {
            "qa_exact": 100 / 6,
            "qa_soft": 50.0,
            "qa_direction_exact": 50.0,
            "qa_direction_soft": 100.0,
            "qa_size_change_exact": 0.0,
            "qa_size_change_soft": 0.0,
            "qa_counting_exact": 0.0,
            "qa_counting_soft": 0.0,
            "qa_verification_exact": 0.0,
            "qa_verification_soft": 0.0,
            "qa_temporal_order_exact": 0.0,
            "qa_temporal_order_soft": 100.0,
            "qa_questions": 6,
        }
    )
    assert score_answers([], []) == {}
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        score_answers(["a", "b"], rows[:1])


def test_empty_strings_match_only_each_other():
    assert token_f1("", "") == 1.0
    assert token_f1("the", "left") == 0.0  # nothing left after normalising
    assert token_f1("left", "") == 0.0


def test_questions_are_deterministic_and_of_the_trained_types(clips_attributes):
    keys, attributes = clips_attributes
    rows = build_questions(keys, attributes, seed=0)
    assert rows == build_questions(keys, attributes, seed=0)
    assert rows != build_questions(keys, attributes, seed=1)
    assert {r["type"] for r in rows} == set(QA_TYPES)
    # a clip's questions do not depend on which other clips are asked about
    assert build_questions(keys[3:4], attributes[3:4]) == [
        {**r, "clip_index": 0} for r in rows if r["key"] == keys[3]
    ]
    more = build_questions(keys, attributes, seed=0, per_type=3)
    assert len(more) > len(rows)
    assert len({(r["key"], r["question"]) for r in more}) == len(more)  # no repeats
    for key in keys:
        types = [r["type"] for r in rows if r["key"] == key]
        assert len(types) == len(set(types))  # one per type with per_type=1


def _oracle(question: str, objects: list[dict]) -> str:
    """The answer, read off the attributes independently of the templates' code."""
    named = {f"{o['colour']} {o['shape']}": o for o in objects}
    phrase = [f"a {o['colour']} {o['shape']} {o['motion']}" for o in objects]
    if question == "how many shapes are there ?":
        return NUMBERS[len(objects)]
    if question == "how many shapes move ?":
        return NUMBERS[sum(o["motion"] != "stays still" for o in objects)]
    if question == "what happens first ?":
        return phrase[0]
    if question.startswith("what happens after the "):
        i = next(
            i
            for i, o in enumerate(objects)
            if question == f"what happens after the {o['colour']} {o['shape']} "
            f"{BASE_VERB[o['motion']]} ?"
        )
        return phrase[i + 1]
    if question.startswith("which way does the "):
        o = named[question.removeprefix("which way does the ").removesuffix(" move ?")]
        return (
            o["motion"].removeprefix("moves ")
            if o["motion"].startswith("moves")
            else "it stays in place"
        )
    if question.endswith(" get bigger or smaller ?"):
        o = named[question.removeprefix("does the ").removesuffix(" get bigger or smaller ?")]
        return {"grows": "bigger", "shrinks": "smaller"}.get(
            o["motion"], "neither , it keeps its size"
        )
    name, verb = next(
        (n, v) for n in named for v in BASE_VERB.values() if question == f"does the {n} {v} ?"
    )
    return "yes" if BASE_VERB[named[name]["motion"]] == verb else "no"


def test_every_answer_follows_from_the_clip_attributes(clips_attributes):
    keys, attributes = clips_attributes
    rows = build_questions(keys, attributes, seed=3, per_type=2)
    by_key = dict(zip(keys, attributes, strict=True))
    for row in rows:
        objects = by_key[row["key"]]["objects"]
        if len({(o["colour"], o["shape"]) for o in objects}) < len(objects):
            continue  # two objects of one name: the question does not say which
        assert _oracle(row["question"], objects) == row["answer"], row
    assert all(len(by_key[r["key"]]["objects"]) > 1 for r in rows if r["type"] == "temporal_order")


class _PlantedVLM:
    """Answers from a lookup by the clip's first pixel (its index): right, or always 'left'."""

    def __init__(self, answers: dict[tuple[int, str], str]):
        self.answers, self.calls = answers, []

    def answer(self, clips, questions, **generation):
        self.calls.append(len(questions))
        return [
            self.answers.get((int(c[0, 0, 0, 0]), q), "left")
            for c, q in zip(clips, questions, strict=True)
        ]


def test_answers_are_batched_and_a_perfect_model_scores_100(clips_attributes):
    keys, attributes = clips_attributes
    clips = np.zeros((len(keys), 2, 4, 4, 3), np.uint8)
    clips[:, 0, 0, 0, 0] = np.arange(len(keys))
    metas = [{"attributes": a} for a in attributes]
    rows = build_questions(keys, attributes)
    perfect = _PlantedVLM({(r["clip_index"], r["question"]): r["answer"] for r in rows})
    figures = evaluate_qa(perfect, keys, clips, metas, batch_size=64)
    assert perfect.calls == [64] * (len(rows) // 64) + [len(rows) % 64]
    assert figures["qa_exact"] == figures["qa_soft"] == 100.0
    assert figures["qa_questions"] == len(rows)
    lazy = _PlantedVLM({})
    answers = answer_questions(lazy, clips, rows, batch_size=1000)
    assert lazy.calls == [len(rows)] and set(answers) == {"left"}
    wrong = score_answers(answers, rows)
    expected = 100 * sum(r["answer"] == "left" for r in rows) / len(rows)
    assert math.isclose(wrong["qa_exact"], expected)


def test_clips_without_attributes_get_no_questions(clips_attributes):
    keys, _ = clips_attributes
    vlm = _PlantedVLM({})
    clips = np.zeros((len(keys), 2, 4, 4, 3), np.uint8)
    assert evaluate_qa(vlm, keys, clips, [{"source": "x.mp4"}] * len(keys)) == {}
    assert evaluate_qa(vlm, keys, clips, [{"attributes": None}] * len(keys)) == {}
    assert vlm.calls == []
