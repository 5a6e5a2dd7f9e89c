import numpy as np
import pytest

from model_code.evaluation.retrieval_metrics import (
    retrieval_metrics,
    text_to_video_ranks,
    video_to_text_ranks,
    zero_shot_classification,
)

# 4 texts x 3 videos; texts 0 and 1 both caption video 0 (MSR-VTT style multi-caption video).
SIM = np.array(
    [
        [0.9, 0.5, 0.1],  # t0 -> v0: best                                  rank 1
        [0.4, 0.4, 0.8],  # t1 -> v0: v2 above, v1 ties (pessimistic)       rank 3
        [0.2, 0.7, 0.7],  # t2 -> v1: v2 ties                               rank 2
        [0.3, 0.6, 0.1],  # t3 -> v2: v0 and v1 above                       rank 3
    ]
)
TEXT_VIDEO = [0, 0, 1, 2]
# video -> text, by column:
#   v0: own t0 (0.9) best, nobody else >= 0.9                          rank 1
#   v1: own t2 (0.7); t0 0.5, t1 0.4, t3 0.6 below                      rank 1
#   v2: own t3 (0.1); t1 0.8, t2 0.7 above, t0 0.1 ties (pessimistic)   rank 4


def test_retrieval_metrics_match_hand_computed_values_with_ties_and_multi_caption_videos():
    m = retrieval_metrics(SIM, TEXT_VIDEO)
    assert text_to_video_ranks(SIM, TEXT_VIDEO).tolist() == [1, 3, 2, 3]
    assert video_to_text_ranks(SIM, TEXT_VIDEO).tolist() == [1, 1, 4]
    expected = {
        "t2v_R1": 25.0,
        "t2v_R5": 100.0,
        "t2v_R10": 100.0,
        "t2v_MedR": 2.5,
        "t2v_MeanR": 2.25,
        "v2t_R1": 100 * 2 / 3,
        "v2t_R5": 100.0,
        "v2t_R10": 100.0,
        "v2t_MedR": 1.0,
        "v2t_MeanR": 2.0,
    }
    assert m == pytest.approx(expected)


def test_video_to_text_uses_the_best_of_its_captions_and_never_counts_its_own_against_it():
    sim = np.array([[0.1, 0.5], [0.9, 0.2], [0.8, 0.3]])  # v0 has captions t0 (poor) and t1 (good)
    ranks = video_to_text_ranks(sim, [0, 0, 1])
    assert ranks.tolist() == [1, 2]  # v0: t1 wins; v1: its only caption t2 (0.3) is below t0 (0.5)


def test_ties_are_pessimistic_so_a_collapsed_model_scores_worst():
    m = retrieval_metrics(np.ones((5, 5)), list(range(5)))
    assert m["t2v_R1"] == 0.0 and m["t2v_MedR"] == 5.0
    assert m["v2t_R1"] == 0.0 and m["v2t_MeanR"] == 5.0


def test_ranks_agree_with_a_naive_sort_on_random_matrices_with_ties():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(30, 12)).astype(float)  # many ties
    text_video = rng.integers(0, 12, size=30)
    for i, v in enumerate(text_video):
        order = sorted(range(12), key=lambda j: (-sim[i, j], j == v))  # own video last among ties
        assert text_to_video_ranks(sim, text_video)[i] == order.index(v) + 1
    got = video_to_text_ranks(sim, text_video)
    for k, v in enumerate(np.unique(text_video)):
        mine = set(np.flatnonzero(text_video == v))
        order = sorted(range(30), key=lambda i: (-sim[i, v], i in mine))
        best = min(order.index(i) for i in mine)
        assert got[k] == 1 + sum(1 for i in order[:best] if i not in mine)


def test_retrieval_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError):
        retrieval_metrics(SIM, [0, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(SIM, [0, 0, 1, 3])


def test_zero_shot_classification_top1_top5_with_pessimistic_ties():
    video = np.eye(3)[[0, 1, 2, 2]]
    classes = np.eye(3)
    classes[2] = [0, 1, 0]  # class 2 is indistinguishable from class 1
    m = zero_shot_classification(video, classes, [0, 1, 2, 0])
    # v0 -> class 0 right; v1 ties classes 1 and 2 -> wrong; v2, v3 score 0 on everything
    assert m["top1"] == 25.0
    assert m["top5"] == 100.0
    assert m["n"] == 4
