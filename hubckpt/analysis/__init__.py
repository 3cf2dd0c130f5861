"""Representations and weights across training revisions: similarity measures, activations, drift, plots.

Submodules load on first use so `import hubckpt.analysis` stays light:

- `similarity`: linear/RBF/minibatch CKA, SVCCA, PWCCA, Procrustes, pairwise matrices;
- `activations`: hidden states of models over one probe, via forward hooks, written to disk per revision;
- `weights`: per-parameter and per-layer drift from a reference revision, norms, with lazy tensor reads;
- `plots`: CKA heatmaps, drift curves, metric curves (PNG, matplotlib's Agg canvas).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "linear_cka": "similarity", "rbf_cka": "similarity", "minibatch_cka": "similarity",
    "MinibatchCKA": "similarity", "svcca": "similarity", "pwcca": "similarity",
    "procrustes_distance": "similarity", "similarity_matrix": "similarity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
