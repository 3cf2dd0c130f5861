"""Similarity measures checked against their known properties and hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hubckpt.analysis import similarity as sim


def _rand(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_rand(d, d, seed))
    return q


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    x = _rand(60, 12, 0)
    y = x @ _rand(12, 8, 1) + 0.5 * _rand(60, 8, 2)  # related, not identical, fewer features
    return x, y


# Four centered, mutually orthogonal vectors over 4 examples: the hand-computed cases below use them.
A = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
B = torch.tensor([0.0, 0.0, 1.0, -1.0], dtype=torch.float64)
C = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64) / math.sqrt(2)  # |C| = |A| = |B| = sqrt(2)


@pytest.mark.parametrize(
    "measure",
    [
        lambda x, y: sim.linear_cka(x, y),
        lambda x, y: sim.linear_cka(x, y, debiased=True),
        lambda x, y: sim.rbf_cka(x, y),
        lambda x, y: sim.rbf_cka(x, y, sigma=3.0),
        lambda x, y: sim.minibatch_cka(x, y, batch_size=16),
        lambda x, y: sim.svcca(x, y),
        sim.pwcca,
    ],
    ids=["linear", "linear-debiased", "rbf-median", "rbf-sigma", "minibatch", "svcca", "pwcca"],
)
def test_a_representation_is_identical_to_itself(measure, xy):
    x, _ = xy
    assert measure(x, x) == pytest.approx(1.0, abs=1e-9)


def test_procrustes_of_a_representation_with_itself_is_zero(xy):
    assert sim.procrustes_distance(xy[0], xy[0]) == pytest.approx(0.0, abs=1e-9)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(xy):
    x, y = xy
    ref = sim.linear_cka(x, y)
    assert 0.3 < ref < 0.99  # a case where the invariance is not trivially 1 == 1
    qx, qy = _orthogonal(12, 3), _orthogonal(8, 4)
    assert sim.linear_cka(x @ qx, y @ qy) == pytest.approx(ref, abs=1e-10)
    assert sim.linear_cka(7.5 * x, 0.01 * y) == pytest.approx(ref, abs=1e-10)
    assert sim.linear_cka(x @ qx, y, debiased=True) == pytest.approx(sim.linear_cka(x, y, debiased=True), abs=1e-10)
    # RBF with the median heuristic: the bandwidth follows the scale, distances survive rotations
    assert sim.rbf_cka(3 * x @ qx, y) == pytest.approx(sim.rbf_cka(x, y), abs=1e-10)
    # Procrustes: rotations and scale of either side do not move it
    assert sim.procrustes_distance(x @ qx, 5 * y) == pytest.approx(sim.procrustes_distance(x, y), abs=1e-10)
    assert sim.procrustes_distance(x, 2 * x @ qx) == pytest.approx(0.0, abs=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling_while_cca_is(xy):
    x, _ = xy
    stretch = torch.diag(torch.logspace(-2, 2, 12, dtype=torch.float64))
    assert sim.linear_cka(x, x @ stretch) < 0.9
    # CCA-based measures are invariant to any invertible linear map (the contrast Kornblith et al. draw)
    assert sim.svcca(x, x @ stretch, keep=1.0) == pytest.approx(1.0, abs=1e-8)
    assert sim.procrustes_distance(x, x @ stretch) > 0.1


def test_feature_space_and_gram_space_linear_cka_agree(xy):
    x, y = xy
    feature = sim.linear_cka(x, y)
    gram = sim.cka_from_grams(sim.gram_linear(x), sim.gram_linear(y))
    assert feature == pytest.approx(gram, abs=1e-12)


def test_debiased_cka_of_independent_random_matrices_is_near_zero_where_biased_is_not():
    # few examples, many features: the regime where biased CKA is high by chance (Murphy et al. 2024)
    pairs = [(_rand(24, 800, s), _rand(24, 800, s + 100)) for s in range(6)]
    biased = [sim.linear_cka(x, y) for x, y in pairs]
    debiased = [sim.linear_cka(x, y, debiased=True) for x, y in pairs]
    assert min(biased) > 0.9
    assert max(abs(v) for v in debiased) < 0.3
    assert abs(sum(debiased) / len(debiased)) < 0.08  # an unbiased estimate of 0: signs vary, mean ~ 0
    assert min(debiased) < 0 < max(debiased)
    # and it still sees a real relation between the same examples
    x = _rand(24, 800, 0)
    assert sim.linear_cka(x, x + 0.5 * _rand(24, 800, 1), debiased=True) > 0.7


def test_minibatch_cka_matches_full_debiased_cka():
    x = _rand(400, 16, 20)
    y = torch.tanh(x @ _rand(16, 10, 21)) + 0.3 * _rand(400, 10, 22)
    full = sim.linear_cka(x, y, debiased=True)
    assert sim.minibatch_cka(x, y, batch_size=400) == pytest.approx(full, abs=1e-10)  # one batch: identical
    assert sim.minibatch_cka(x, y, batch_size=100) == pytest.approx(full, abs=0.03)
    acc = sim.MinibatchCKA()
    for s in range(0, 400, 50):
        acc.update(x[s : s + 50], y[s : s + 50])
    assert acc.batches == 8 and acc.value() == pytest.approx(full, abs=0.03)
    with pytest.raises(ValueError):
        sim.MinibatchCKA().value()


def test_svcca_hand_computed():
    # x spans {A, B}, y spans {A, C}: canonical correlations are exactly 1 (A) and 0 (B vs C)
    x = torch.stack([2 * A, B], 1)  # variance shares 0.8 (A) and 0.2 (B)
    y = torch.stack([A, 3 * C], 1)  # variance shares 0.1 (A) and 0.9 (C)
    assert sim.svcca(x, y, keep=1.0) == pytest.approx(0.5, abs=1e-12)
    assert sim.svcca(x, y, keep=0.99) == pytest.approx(0.5, abs=1e-12)
    # keeping 80% of the variance leaves x = A and y = C, which are uncorrelated
    assert sim.svcca(x, y, keep=0.8) == pytest.approx(0.0, abs=1e-12)
    # ... and 1-D y = A alone matches x's first direction exactly
    assert sim.svcca(x, A[:, None], keep=1.0) == pytest.approx(1.0, abs=1e-12)


def test_pwcca_hand_computed():
    # canonical variates of x: A/|A| (rho 1) and B/|B| (rho 0); x's columns put weight 2|A| on the first
    # and |B| on the second (|A| = |B|), so PWCCA = (2 * 1 + 1 * 0) / 3
    x = torch.stack([2 * A, B], 1)
    y = torch.stack([A, C], 1)
    assert sim.pwcca(x, y) == pytest.approx(2 / 3, abs=1e-12)
    # mixing x's columns changes the weights: columns A+B and A-B weigh both directions equally
    assert sim.pwcca(torch.stack([A + B, A - B], 1), y) == pytest.approx(0.5, abs=1e-12)
    # the side with fewer features gives the weights: y = A alone -> one variate, rho 1
    assert sim.pwcca(x, A[:, None]) == pytest.approx(1.0, abs=1e-12)


def test_procrustes_hand_computed():
    # 1-D: y at angle theta from x (|A| = |C|): distance 2 - 2|cos theta|
    for theta, expected in [(0.0, 0.0), (math.pi / 3, 1.0), (math.pi / 2, 2.0), (math.pi, 0.0)]:
        y = A * math.cos(theta) + C * math.sin(theta)
        assert sim.procrustes_distance(A[:, None], y[:, None]) == pytest.approx(expected, abs=1e-12)
    # 2-D: x = [A, B], y = [A, C] (normalised by sqrt(2) * |A| each): X'Y = [[1/2, 0], [0, 0]], nuclear 1/2
    assert sim.procrustes_distance(torch.stack([A, B], 1), torch.stack([A, C], 1)) == pytest.approx(1.0, abs=1e-12)


def test_numpy_and_torch_inputs_agree_and_bad_shapes_are_refused(xy):
    x, y = xy
    for fn in (sim.linear_cka, sim.rbf_cka, sim.svcca, sim.pwcca, sim.procrustes_distance):
        assert fn(x.numpy(), y.numpy().astype(np.float32)) == pytest.approx(fn(x, y), abs=1e-5)
    with pytest.raises(ValueError, match="same examples"):
        sim.linear_cka(x, y[:-1])
    with pytest.raises(ValueError, match="n_examples, n_features"):
        sim.linear_cka(x[None], y[None])
    with pytest.raises(ValueError, match="at least 4"):
        sim.linear_cka(x[:3], y[:3], debiased=True)


def test_similarity_matrix_matches_pairwise_measures(xy):
    x, y = xy
    z = _rand(60, 5, 30)
    reps = [x, y, z]
    m = sim.similarity_matrix(reps)
    assert m.shape == (3, 3)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert m[0, 1] == pytest.approx(sim.linear_cka(x, y), abs=1e-12)
    assert m[1, 2] == pytest.approx(sim.linear_cka(y, z), abs=1e-12)
    d = sim.similarity_matrix(reps, measure="linear_cka", debiased=True)
    assert d[0, 2] == pytest.approx(sim.linear_cka(x, z, debiased=True), abs=1e-12)
    cross = sim.similarity_matrix([x], [y, z], measure="procrustes")
    assert cross.shape == (1, 2) and cross[0, 1] == pytest.approx(sim.procrustes_distance(x, z), abs=1e-12)
    p = sim.similarity_matrix([x, y], measure="pwcca")
    assert p[1, 0] == pytest.approx(sim.pwcca(y, x), abs=1e-12)
    wide = [_rand(10, 40, 40), _rand(10, 30, 41), _rand(10, 40, 42)]  # fewer examples than features: Gram space
    w = sim.similarity_matrix(wide)
    assert w[0, 1] == pytest.approx(sim.linear_cka(wide[0], wide[1]), abs=1e-12)
    assert w[2, 1] == pytest.approx(sim.linear_cka(wide[2], wide[1]), abs=1e-12)
    with pytest.raises(ValueError, match="same number of examples"):
        sim.similarity_matrix([x, y[:-1]])
    with pytest.raises(ValueError, match="unknown measure"):
        sim.similarity_matrix(reps, measure="nope")
