"""Similarity across stored activations: revision x revision per layer, and layer x layer per revision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import AnalysisError
from .activations import ActivationStore
from .similarity import similarity_matrix


def revision_similarity(
    store: ActivationStore,
    names: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    *,
    measure: str = "linear_cka",
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """`{layer: matrix [revision, revision]}` of `measure` between the stored revisions `names`.

    Reads one layer of every revision at a time, so memory holds one layer's activations, not all.
    """
    names = list(names) if names is not None else store.names()
    if not names:
        raise AnalysisError(f"No activations stored in {store.root}.")
    layers = list(layers) if layers is not None else store.layers(names[0])
    return {layer: similarity_matrix(store.layer(layer, names), measure=measure, **kwargs) for layer in layers}


def layer_similarity(
    store: ActivationStore,
    name: str,
    layers: Sequence[str] | None = None,
    *,
    measure: str = "linear_cka",
    **kwargs: Any,
) -> np.ndarray:
    """Matrix [layer, layer] of `measure` between the layers of one stored revision."""
    layers = list(layers) if layers is not None else store.layers(name)
    return similarity_matrix([store.load(name, layer) for layer in layers], measure=measure, **kwargs)
