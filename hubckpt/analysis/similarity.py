"""Similarity measures between two activation matrices `(n_examples, n_features)`.

Every measure takes torch tensors or numpy arrays (any float dtype; computed in float64 on the CPU),
compares the same `n_examples` inputs seen through two representations whose feature counts may differ,
and returns a Python float.

- `linear_cka`, `rbf_cka`: centered kernel alignment (Kornblith et al. 2019); `debiased=True` uses the
  unbiased HSIC estimator (Song et al. 2012), which is near 0 for unrelated representations at any `n`
  and may be negative.
- `MinibatchCKA` / `minibatch_cka`: CKA accumulated over minibatches with unbiased HSIC (Nguyen, Raghu &
  Kornblith 2021), for probes too large for one `n x n` Gram matrix.
- `svcca` (Raghu et al. 2017), `pwcca` (Morcos et al. 2018): mean / projection-weighted canonical
  correlation; similarities in [0, 1].
- `procrustes_distance` (Ding et al. 2021): orthogonal Procrustes distance between the centered,
  Frobenius-normalised matrices; a distance in [0, 2].
- `similarity_matrix`: every pair of a list of representations (revision x revision, layer x layer),
  with each Gram matrix computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Matrix = Any  # torch.Tensor | np.ndarray, shape (n_examples, n_features)

__all__ = [
    "linear_cka",
    "rbf_cka",
    "minibatch_cka",
    "MinibatchCKA",
    "svcca",
    "pwcca",
    "procrustes_distance",
    "gram_linear",
    "gram_rbf",
    "cka_from_grams",
    "similarity_matrix",
    "MEASURES",
]


def as_matrix(x: Matrix, name: str = "x") -> torch.Tensor:
    """`x` as a float64 CPU tensor of shape (n_examples, n_features); rejects other shapes."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    t = t.to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be (n_examples, n_features); got shape {tuple(t.shape)}. "
            "Pool or flatten extra dimensions first (e.g. mean over tokens)."
        )
    return t


def _pair(x: Matrix, y: Matrix, min_n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_matrix(x, "x"), as_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must have the same examples (rows): {a.shape[0]} != {b.shape[0]}")
    if a.shape[0] < min_n:
        raise ValueError(f"need at least {min_n} examples, got {a.shape[0]}")
    return a, b


def _center_columns(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)


# -- Gram matrices and HSIC ---------------------------------------------------------------------------


def gram_linear(x: Matrix) -> torch.Tensor:
    """Linear kernel Gram matrix `X X^T` (n x n)."""
    a = as_matrix(x)
    return a @ a.T


def gram_rbf(x: Matrix, sigma: float | None = None) -> torch.Tensor:
    """RBF kernel Gram matrix `exp(-|xi - xj|^2 / (2 sigma^2))`.

    `sigma=None` uses the median heuristic of Kornblith et al.: sigma = the median distance between
    examples of `x` (so the kernel adapts to each representation's scale).
    """
    a = as_matrix(x)
    sq_norms = (a * a).sum(dim=1)
    sq_dist = (sq_norms[:, None] + sq_norms[None, :] - 2 * (a @ a.T)).clamp_min(0)
    if sigma is None:
        sq_sigma = float(sq_dist.median())
        if sq_sigma == 0.0:  # more than half the pairs coincide; fall back to the mean distance
            sq_sigma = float(sq_dist.mean()) or 1.0
    else:
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        sq_sigma = float(sigma) ** 2
    return torch.exp(-sq_dist / (2 * sq_sigma))


def _center_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T/n (biased HSIC's centering)."""
    k = k - k.mean(dim=0, keepdim=True)
    return k - k.mean(dim=1, keepdim=True)


def _unbiased_center_gram(k: torch.Tensor) -> torch.Tensor:
    """The matrix U(K) such that <U(K), U(L)> is the unbiased HSIC estimator of Song et al. (2012).

    Zeroing the diagonal and applying this centering makes `sum(U(K) * U(L))` equal to
    `[tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))` up to the factor 1/(n(n-3)),
    which cancels in CKA (the same construction as Kornblith et al.'s reference code).
    """
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 examples, got {n}")
    k = k.clone()
    k.fill_diagonal_(0)
    means = k.sum(dim=0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    k = k - means[:, None] - means[None, :]
    k.fill_diagonal_(0)
    return k


def center_gram(k: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Center a Gram matrix for HSIC: biased (H K H) or, with `debiased`, the unbiased estimator's form."""
    return _unbiased_center_gram(k) if debiased else _center_gram(k)


def _cka_centered(kc: torch.Tensor, lc: torch.Tensor) -> float:
    hsic_kl = float((kc * lc).sum())
    denom = math.sqrt(max(float((kc * kc).sum()), 0.0) * max(float((lc * lc).sum()), 0.0))
    return hsic_kl / denom if denom > 0 else 0.0


def cka_from_grams(k: torch.Tensor, l: torch.Tensor, debiased: bool = False) -> float:  # noqa: E741 - paper's names
    """CKA between two (uncentered) Gram matrices over the same examples."""
    return _cka_centered(center_gram(k, debiased), center_gram(l, debiased))


# -- the measures -------------------------------------------------------------------------------------


def linear_cka(x: Matrix, y: Matrix, debiased: bool = False) -> float:
    """Linear CKA. Biased: computed in feature space, `|Y'X|_F^2 / (|X'X|_F |Y'Y|_F)` on centered
    columns (cost O(n d^2), no n x n matrix). Debiased: through the unbiased HSIC of the Gram matrices."""
    a, b = _pair(x, y, min_n=4 if debiased else 2)
    if debiased:
        return cka_from_grams(a @ a.T, b @ b.T, debiased=True)
    a, b = _center_columns(a), _center_columns(b)
    cross = float(torch.linalg.matrix_norm(b.T @ a) ** 2)
    denom = float(torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b))
    return cross / denom if denom > 0 else 0.0


def rbf_cka(x: Matrix, y: Matrix, sigma: float | None = None, debiased: bool = False) -> float:
    """CKA with an RBF kernel; `sigma=None` picks each input's bandwidth by the median heuristic."""
    a, b = _pair(x, y, min_n=4 if debiased else 2)
    return cka_from_grams(gram_rbf(a, sigma), gram_rbf(b, sigma), debiased=debiased)


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021).

    Each `update(x_batch, y_batch)` adds the unbiased HSIC of that batch's Gram matrices to running sums;
    `value()` is `sum HSIC(K,L) / sqrt(sum HSIC(K,K) * sum HSIC(L,L))`. Memory is O(batch^2), so the probe
    can be as large as wanted; with one batch holding every example it equals `linear_cka(debiased=True)`.
    """

    def __init__(self) -> None:
        self.kl = self.kk = self.ll = 0.0
        self.batches = 0

    def update(self, x: Matrix, y: Matrix) -> MinibatchCKA:
        a, b = _pair(x, y, min_n=4)
        kc, lc = _unbiased_center_gram(a @ a.T), _unbiased_center_gram(b @ b.T)
        n = a.shape[0]
        scale = 1.0 / (n * (n - 3))  # keeps batches of different sizes on the same scale
        self.kl += float((kc * lc).sum()) * scale
        self.kk += float((kc * kc).sum()) * scale
        self.ll += float((lc * lc).sum()) * scale
        self.batches += 1
        return self

    def value(self) -> float:
        if not self.batches:
            raise ValueError("MinibatchCKA.value() before any update()")
        denom = math.sqrt(max(self.kk, 0.0) * max(self.ll, 0.0))
        return self.kl / denom if denom > 0 else 0.0


def minibatch_cka(x: Matrix, y: Matrix, batch_size: int = 256) -> float:
    """Minibatch linear CKA over consecutive batches of `batch_size` rows (a final batch under 4 rows
    joins the previous one). Shuffle rows beforehand if their order is not random."""
    a, b = _pair(x, y, min_n=4)
    if batch_size < 4:
        raise ValueError(f"batch_size must be >= 4, got {batch_size}")
    acc = MinibatchCKA()
    n = a.shape[0]
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        acc.update(a[s:e], b[s:e])
    return acc.value()


def _orthonormal_basis(a: torch.Tensor, rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left singular vectors spanning the columns of `a` (rank-revealing), with singular values and V."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0], s[:0], vh[:0]
    rank = int((s > s[0] * rtol * max(a.shape)).sum())
    return u[:, :rank], s[:rank], vh[:rank]


def _cca(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical correlations of centered `a`, `b` (descending) and the canonical variates of each side
    (orthonormal n-vectors, one column per correlation)."""
    qa, _, _ = _orthonormal_basis(a)
    qb, _, _ = _orthonormal_basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        raise ValueError("a representation is constant over the examples (rank 0): CCA is undefined")
    u, rho, vh = torch.linalg.svd(qa.T @ qb, full_matrices=False)
    return rho.clamp(0.0, 1.0), qa @ u, qb @ vh.T


def _svd_reduce(a: torch.Tensor, keep: float) -> torch.Tensor:
    """The top singular directions of centered `a` that explain a `keep` fraction of its variance."""
    u, s, _ = _orthonormal_basis(a)
    var = s**2
    frac = torch.cumsum(var, 0) / var.sum()
    k = int(torch.searchsorted(frac, torch.tensor(keep, dtype=frac.dtype) - 1e-12)) + 1
    k = min(max(k, 1), s.numel())
    return u[:, :k] * s[:k]


def svcca(x: Matrix, y: Matrix, keep: float = 0.99) -> float:
    """SVCCA: reduce each centered representation to the singular directions explaining `keep` of its
    variance, then return the mean canonical correlation between the two reductions."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    a, b = _pair(x, y)
    a, b = _svd_reduce(_center_columns(a), keep), _svd_reduce(_center_columns(b), keep)
    rho, _, _ = _cca(a, b)
    return float(rho.mean())


def pwcca(x: Matrix, y: Matrix) -> float:
    """Projection-weighted CCA similarity: canonical correlations weighted by how much of the
    representation with fewer features (x on a tie) each canonical variate accounts for,
    `alpha_i = sum_j |<h_i, x_j>|` over its centered feature columns `x_j` (Morcos et al. 2018; the
    distance they report is 1 minus this)."""
    a, b = _pair(x, y)
    a, b = _center_columns(a), _center_columns(b)
    rho, ha, hb = _cca(a, b)
    side, h = (b, hb) if b.shape[1] < a.shape[1] else (a, ha)
    weights = (h.T @ side).abs().sum(dim=1)
    total = float(weights.sum())
    return float((weights * rho).sum() / total) if total > 0 else 0.0


def procrustes_distance(x: Matrix, y: Matrix) -> float:
    """Orthogonal Procrustes distance `|X|^2 + |Y|^2 - 2 |X'Y|_*` between the centered matrices scaled to
    unit Frobenius norm (Ding et al. 2021): `min_Q |X - Y Q|_F^2` over orthogonal Q (zero-padding the
    narrower one); 0 when one is a rotation of the other, at most 2."""
    a, b = _pair(x, y)
    a, b = _center_columns(a), _center_columns(b)
    na, nb = torch.linalg.matrix_norm(a), torch.linalg.matrix_norm(b)
    if float(na) == 0 or float(nb) == 0:
        raise ValueError("a representation is constant over the examples: Procrustes distance is undefined")
    nuclear = torch.linalg.matrix_norm((a / na).T @ (b / nb), ord="nuc")
    return float((2.0 - 2.0 * nuclear).clamp_min(0.0))


MEASURES: dict[str, Callable[..., float]] = {
    "linear_cka": linear_cka,
    "rbf_cka": rbf_cka,
    "minibatch_cka": minibatch_cka,
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes_distance,
}


def _tall(reps: Sequence[Matrix]) -> bool:
    return all(len(np.shape(r)) == 2 and np.shape(r)[0] > np.shape(r)[1] for r in reps)


def _pairwise(n_rows: int, n_cols: int, symmetric: bool, pair) -> np.ndarray:
    """An (n_rows, n_cols) matrix of `pair(i, j)`; a symmetric one computes each pair once."""
    out = np.zeros((n_rows, n_cols))
    for i in range(n_rows):
        for j in range(n_cols):
            out[i, j] = out[j, i] if symmetric and j < i else pair(i, j)
    return out


def similarity_matrix(
    reps: Sequence[Matrix], others: Sequence[Matrix] | None = None, *, measure: str = "linear_cka", **kwargs: Any
) -> np.ndarray:
    """Pairwise measure between every representation in `reps` (and `others`, else `reps` itself).

    Returns a float64 array `[len(reps), len(others)]`. For linear/RBF CKA each centered Gram matrix is
    computed once (a revision x revision matrix over R revisions costs R Gram matrices, not R^2); biased
    linear CKA of representations with more examples than features stays in feature space instead.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {sorted(MEASURES)}")
    symmetric = others is None
    rows = list(reps)
    cols = rows if others is None else list(others)
    if measure == "linear_cka" and not kwargs.get("debiased") and _tall(rows) and _tall(cols):
        # more examples than features (e.g. every token a row): feature space, O(d^2) per pair, no n x n
        row_m = [_center_columns(as_matrix(r)) for r in rows]
        col_m = row_m if symmetric else [_center_columns(as_matrix(c)) for c in cols]
        if len({m.shape[0] for m in row_m + col_m}) > 1:
            raise ValueError("every representation must have the same number of examples")
        nr = [float(torch.linalg.matrix_norm(m.T @ m)) for m in row_m]
        nc = nr if symmetric else [float(torch.linalg.matrix_norm(m.T @ m)) for m in col_m]

        def feature_pair(i: int, j: int) -> float:
            d = nr[i] * nc[j]
            return float(torch.linalg.matrix_norm(col_m[j].T @ row_m[i]) ** 2) / d if d > 0 else 0.0

        return _pairwise(len(rows), len(cols), symmetric, feature_pair)
    if measure in ("linear_cka", "rbf_cka"):
        debiased = bool(kwargs.get("debiased", False))

        def centered(r: Matrix) -> torch.Tensor:
            m = as_matrix(r)
            gram = m @ m.T if measure == "linear_cka" else gram_rbf(m, kwargs.get("sigma"))
            return center_gram(gram, debiased)

        row_grams = [centered(r) for r in rows]
        col_grams = row_grams if symmetric else [centered(c) for c in cols]
        if len({g.shape[0] for g in row_grams + col_grams}) > 1:
            raise ValueError("every representation must have the same number of examples")
        norms_r = [math.sqrt(max(float((g * g).sum()), 0.0)) for g in row_grams]
        norms_c = norms_r if symmetric else [math.sqrt(max(float((g * g).sum()), 0.0)) for g in col_grams]

        def gram_pair(i: int, j: int) -> float:
            d = norms_r[i] * norms_c[j]
            return float((row_grams[i] * col_grams[j]).sum()) / d if d > 0 else 0.0

        return _pairwise(len(rows), len(cols), symmetric, gram_pair)
    fn = MEASURES[measure]
    out = np.zeros((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if symmetric and j < i and measure != "pwcca":  # pwcca is not symmetric
                out[i, j] = out[j, i]
            else:
                out[i, j] = fn(r, c, **kwargs)
    return out
