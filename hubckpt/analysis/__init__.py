"""Representations and weights across training revisions: similarity measures, activations, drift, plots.

Submodules load on first use so `import hubckpt.analysis` stays light:

- `similarity`: linear/RBF/minibatch CKA, SVCCA, PWCCA, Procrustes, pairwise matrices;
- `activations`: hidden states of models over one probe, via forward hooks, written to disk per revision;
- `weights`: per-parameter and per-layer drift from a reference revision, norms, with lazy tensor reads;
- `plots`: CKA heatmaps, drift curves, metric curves (PNG, matplotlib's Agg canvas);
- `pipeline`: `analyze(repo_id, probe=..., out=...)`, what `hubckpt analyze` runs.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "linear_cka": "similarity",
    "rbf_cka": "similarity",
    "minibatch_cka": "similarity",
    "MinibatchCKA": "similarity",
    "svcca": "similarity",
    "pwcca": "similarity",
    "procrustes_distance": "similarity",
    "similarity_matrix": "similarity",
    "Probe": "activations",
    "ActivationStore": "activations",
    "collect_activations": "activations",
    "collect_for_models": "activations",
    "collect_across_revisions": "activations",
    "default_layers": "activations",
    "revision_similarity": "compare",
    "layer_similarity": "compare",
    "weight_drift": "weights",
    "drift_over": "weights",
    "DriftTracker": "weights",
    "DriftResult": "weights",
    "plot_cka_heatmaps": "plots",
    "plot_drift": "plots",
    "plot_metrics": "plots",
    "plot_similarity_matrix": "plots",
    "analyze": "pipeline",
    "AnalysisResult": "pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
