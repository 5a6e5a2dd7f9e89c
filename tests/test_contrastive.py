import math

import pytest
import torch
import torch.nn.functional as F

from model_code.training.contrastive import contrastive_loss, gather_features, sigmoid_loss


def _embeddings(n: int = 5, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return v, t


def naive_infonce(v, t, scale):
    n = len(v)
    total = 0.0
    for i in range(n):
        v2t = [math.exp(scale * float(v[i] @ t[j])) for j in range(n)]
        t2v = [math.exp(scale * float(t[i] @ v[j])) for j in range(n)]
        total += -math.log(v2t[i] / sum(v2t)) - math.log(t2v[i] / sum(t2v))
    return total / (2 * n)


def naive_sigmoid(v, t, scale, bias):
    n = len(v)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-z * (scale * float(v[i] @ t[j]) + bias))))
    return total / n


def test_infonce_equals_a_naive_loop():
    v, t = _embeddings()
    scale = torch.tensor(7.5, dtype=torch.float64)
    assert contrastive_loss(v, t, scale).item() == pytest.approx(
        naive_infonce(v, t, 7.5), rel=1e-10
    )


def test_sigmoid_loss_equals_a_naive_loop():
    v, t = _embeddings(seed=1)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    got = sigmoid_loss(v, t, scale, bias).item()
    assert got == pytest.approx(naive_sigmoid(v, t, 10.0, -3.0), rel=1e-10)


def test_infonce_is_low_for_matched_pairs_and_high_for_shuffled_ones():
    v, _ = _embeddings(n=16, d=32)
    scale = torch.tensor(20.0, dtype=torch.float64)
    assert contrastive_loss(v, v, scale) < contrastive_loss(v, v.roll(1, dims=0), scale)


def test_losses_give_gradients_to_both_towers_and_the_scale():
    v, t = _embeddings()
    v.requires_grad_(True)
    t.requires_grad_(True)
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    (contrastive_loss(v, t, scale) + sigmoid_loss(v, t, scale, bias)).backward()
    for x in (v, t, scale, bias):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gather_features_is_the_identity_without_a_process_group():
    v, t = _embeddings()
    gv, gt = gather_features(v, t)
    assert gv is v and gt is t
    assert contrastive_loss(v, t, torch.tensor(3.0), gather=True) == contrastive_loss(
        v, t, torch.tensor(3.0)
    )
