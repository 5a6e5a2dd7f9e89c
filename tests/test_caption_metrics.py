import math

import pytest

from model_code.evaluation.caption_metrics import (
    attribute_accuracy,
    bleu4,
    caption_statistics,
    cider,
    is_degenerate,
)

REFS = [
    "a red circle moves left",
    "a blue square grows, then a green triangle moves up",
    "a yellow triangle stays still",
    "a purple square shrinks",
]


def test_bleu4_is_one_for_identical_and_zero_for_unrelated_captions():
    assert bleu4(REFS, [[r] for r in REFS]) == pytest.approx(1.0)
    unrelated = ["stock footage hd loop"] * len(REFS)
    assert bleu4(unrelated, [[r] for r in REFS]) == 0.0


def test_bleu4_brevity_penalty_punishes_short_captions():
    full = bleu4(["a red circle moves left quickly"], [["a red circle moves left quickly"]])
    short = bleu4(["a red circle moves"], [["a red circle moves left quickly"]])
    assert full == pytest.approx(1.0)
    assert 0.0 < short < 0.8


def test_cider_ranks_identical_above_partial_above_unrelated():
    refs = [[r] for r in REFS]
    identical = cider(REFS, refs)
    partial = cider(["a red circle", "a blue square", "a yellow triangle", "a purple square"], refs)
    unrelated = cider(["stock footage hd loop"] * len(REFS), refs)
    assert identical > partial > unrelated
    assert unrelated == 0.0
    assert identical == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "   ",
        "a a red circle",
        "moves left moves left",
        "a red circle moves left moves left",
        "red red red red blue red red",
    ],
)
def test_is_degenerate_flags_planted_failures(caption):
    assert is_degenerate(caption)


@pytest.mark.parametrize(
    "caption", REFS + ["a red circle moves left, then a blue square moves left"]
)
def test_is_degenerate_passes_real_captions(caption):
    assert not is_degenerate(caption)


def test_attribute_accuracy_hand_checked():
    one = {
        "objects": [{"colour": "red", "shape": "circle", "motion": "moves left"}],
        "ordered": False,
    }
    two = {
        "objects": [
            {"colour": "blue", "shape": "square", "motion": "grows"},
            {"colour": "green", "shape": "triangle", "motion": "moves up"},
        ],
        "ordered": True,
    }
    captions = [
        "a red circle moves left",  # all right
        "a red square moves right",  # colour only
        "a green triangle moves up, then a blue square grows",  # all named, wrong order
        "a blue square",  # one object's colour/shape, no motion
    ]
    acc = attribute_accuracy(captions, [one, one, two, two])
    assert acc["colour"] == pytest.approx(3 / 4)
    assert acc["shape"] == pytest.approx(2 / 4)
    assert acc["motion"] == pytest.approx(2 / 4)
    assert acc["object"] == pytest.approx(2 / 4)
    assert acc["order"] == pytest.approx(0 / 2)


def test_attribute_accuracy_motion_needs_whole_phrase():
    attrs = [{"objects": [{"colour": "red", "shape": "circle", "motion": "moves up"}]}]
    assert attribute_accuracy(["a red circle moves upward"], attrs)["motion"] == 0.0
    assert math.isnan(attribute_accuracy(["a red circle moves up"], attrs)["order"])


def test_caption_statistics():
    stats = caption_statistics(["a red circle moves left", "a red circle moves left", "", "a a"])
    assert stats["duplicate_rate"] == pytest.approx(1 - 3 / 4)
    assert stats["empty_rate"] == pytest.approx(1 / 4)
    assert stats["degenerate_rate"] == pytest.approx(2 / 4)
    assert stats["motion_share"] == pytest.approx(2 / 4)
    assert stats["mean_words"] == pytest.approx(12 / 4)
    assert stats["vocab_size"] == 5
    assert 0 < stats["distinct_1"] < 1 and 0 < stats["distinct_2"] < 1
