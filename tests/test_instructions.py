import pytest
import torch

from model_code.data.corpus import CorpusConfig, ground_truth_caption, split_specs
from model_code.data.instructions import (
    CAPTION_PROMPT,
    IMAGE_PROMPT,
    QUESTION_TYPES,
    make_instructions,
    make_instructions_with_llm,
    parse_caption,
    pretraining_texts,
)

TWO = {
    "key": "clip-2",
    "caption": "a red circle moves left, then a blue square grows",
    "attributes": {
        "objects": [
            {"colour": "red", "shape": "circle", "motion": "moves left"},
            {"colour": "blue", "shape": "square", "motion": "grows"},
        ],
        "ordered": True,
    },
}


def _by_type(rows):
    return {r["type"]: r for r in rows}


def test_every_question_type_is_made_for_a_two_object_clip():
    rows = make_instructions([TWO])
    assert {r["type"] for r in rows} == set(QUESTION_TYPES)
    assert all(r["key"] == "clip-2" and r["prompt"] and r["answer"] for r in rows)


@pytest.mark.parametrize("seed", range(12))
def test_answers_are_correct_for_known_attributes(seed):
    rows = _by_type(make_instructions([TWO], seed=seed))
    assert rows["short_caption"] == {
        **rows["short_caption"],
        "prompt": CAPTION_PROMPT,
        "answer": TWO["caption"],
    }
    assert rows["detailed_description"]["answer"] == (
        "there are two shapes . first a red circle moves to the left . "
        "after that a blue square gets bigger ."
    )
    direction, size = rows["direction"], rows["size_change"]
    if "red circle" in direction["prompt"]:
        assert direction["answer"] == "left"
    else:
        assert direction["answer"] == "it stays in place"
    expected_size = "neither , it keeps its size" if "red circle" in size["prompt"] else "bigger"
    assert size["answer"] == expected_size
    counting = rows["counting"]
    assert (
        counting["answer"]
        == {"how many shapes are there ?": "two", "how many shapes move ?": "two"}[
            counting["prompt"]
        ]
    )
    verification = rows["verification"]
    truth = {"red circle": "move left", "blue square": "grow"}
    named = next(n for n in truth if n in verification["prompt"])
    claimed = verification["prompt"].split(named)[1].strip(" ?")
    assert verification["answer"] == ("yes" if claimed == truth[named] else "no")
    order = rows["temporal_order"]
    assert (
        order["answer"]
        == {
            "what happens first ?": "a red circle moves left",
            "what happens after the red circle move left ?": "a blue square grows",
        }[order["prompt"]]
    )


def test_verification_asks_both_true_and_false_claims():
    rows = make_instructions([dict(TWO, key=f"k{i}") for i in range(40)])
    answers = {r["answer"] for r in rows if r["type"] == "verification"}
    assert answers == {"yes", "no"}


def test_caption_text_alone_gives_the_same_rows_as_attributes():
    specs = split_specs("adapt", CorpusConfig(), 0, 30)
    with_attrs = [
        {"key": s.key, "caption": ground_truth_caption(s), "attributes": s.attributes()}
        for s in specs
    ]
    text_only = [{"key": r["key"], "caption": r["caption"]} for r in with_attrs]
    assert make_instructions(text_only, seed=3) == make_instructions(with_attrs, seed=3)


def test_caption_outside_the_grammar_yields_only_a_short_caption():
    rows = make_instructions([{"key": "k", "caption": "a dog runs across a field"}])
    assert [r["type"] for r in rows] == ["short_caption"]
    assert parse_caption("a dog runs across a field") is None
    assert parse_caption("a red circle stays still") == [
        {"colour": "red", "shape": "circle", "motion": "stays still"}
    ]


def test_one_object_clip_skips_temporal_order():
    rows = make_instructions([{"key": "k", "caption": "a green triangle shrinks"}])
    types = {r["type"] for r in rows}
    assert "temporal_order" not in types and len(types) == len(QUESTION_TYPES) - 1
    assert _by_type(rows)["size_change"]["answer"] == "smaller"


def test_pretraining_texts_hold_still_and_video_language():
    texts = pretraining_texts([TWO])
    assert f"{IMAGE_PROMPT} a red circle and a blue square" in texts
    assert f"{CAPTION_PROMPT} {TWO['caption']}" in texts
    # one document per video strings its rows together: the motion is stated more than once
    document = max(texts, key=len)
    assert document.count("moves left") >= 2 and f"{CAPTION_PROMPT} {TWO['caption']}" in document


def test_instructions_with_a_tiny_local_llm(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from model_code.models.text import build_word_tokenizer

    tokenizer = build_word_tokenizer(["video description question answer a red circle moves"])
    torch.manual_seed(0)  # a random LM: seeded so what it writes is the same every run
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    records = [{"key": f"k{i}", "caption": "a red circle moves left"} for i in range(3)]
    rows = make_instructions_with_llm(records, tmp_path, max_new_tokens=5)
    assert 1 <= len(rows) <= 3
    for row in rows:
        assert set(row) == {"key", "type", "prompt", "answer"}
        assert row["type"] == "llm" and row["prompt"] and row["answer"]
