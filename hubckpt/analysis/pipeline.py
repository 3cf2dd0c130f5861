"""`analyze()`: representations and weights across a repo's revisions, end to end (what `hubckpt analyze` runs).

For each chosen revision in step order: load the model at its commit (one in memory at a time), collect
hidden states over the probe into `OUT/activations/` (skipped when already stored for the same probe,
layers and pooling, so a killed run resumes), and compare its weights with the first revision's (from the
model already loaded: no extra download). Then per layer a revision x revision similarity matrix, and
the files:

    OUT/results.json   {"revisions", "steps", "layers", "cka": {layer: matrix}, "drift": {layer: [...]}}
    OUT/weights.json   drift and norms per tensor and per layer (see `weights.DriftResult`)
    OUT/cka.png        one revision x revision heatmap per layer
    OUT/layers.png     layer x layer similarity within the last revision
    OUT/drift.png      per-layer drift over steps
    OUT/metrics.png    the index's metrics over steps (when revisions record any)
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import AnalysisError
from .activations import ActivationStore, Probe, collect_activations, is_text_probe, read_text_probe, resolve_layers
from .compare import layer_similarity, revision_similarity
from .weights import DriftTracker

if TYPE_CHECKING:
    from ..formats.index import RevisionInfo

logger = logging.getLogger(__name__)

# What AutoTokenizer may need from a revision (config.json tells it the model type).
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "config.json",
]


@dataclass
class AnalysisResult:
    """What `analyze()` computed and wrote."""

    results: dict[str, Any]
    out: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def select_revisions(
    repo_id: str,
    revisions: Sequence[str] | None = None,
    every: int | None = None,
    *,
    hub: Any = None,
    token: Any = None,
) -> list[Any]:
    """The revisions to analyse, in step order: `revisions` (names, tags, commits or best/latest/final),
    else those whose step is a multiple of `every` (as `hubckpt.iter_revisions(every=)`), else all."""
    from ..load import list_revisions, resolve_revision

    if revisions and every:
        raise AnalysisError("Pass either revisions or every, not both.")
    if revisions:
        infos = [resolve_revision(repo_id, r.strip(), hub=hub, token=token) for r in revisions if r.strip()]
        unique: dict[str | None, RevisionInfo] = {}
        for info in infos:
            unique.setdefault(info.commit, info)
        chosen = sorted(unique.values(), key=lambda r: (r.step is None, r.step or 0, r.name))
    else:
        chosen = list(list_revisions(repo_id, hub=hub, token=token))
        if every is not None:
            if every < 1:
                raise AnalysisError(f"every must be >= 1, got {every}.")
            steps = [r.step for r in chosen if r.step is not None]
            chosen = [r for r in chosen if r.step is not None and r.step % every == 0]
            if not chosen:
                shown = ", ".join(map(str, steps[:8])) + (" ..." if len(steps) > 8 else "")
                raise AnalysisError(
                    f"No revision of {repo_id} has a step that is a multiple of {every} (steps: {shown or 'none'})."
                )
    if not chosen:
        raise AnalysisError(f"{repo_id} has no revisions to analyse.")
    return chosen


def _models(
    repo_id: str, infos: list[Any], *, hub: Any, token: Any, cache: str, max_cache_bytes: int | None, model_class: Any
) -> Iterator[tuple[Any, Callable[[], Any]]]:
    """(info, load) per revision, in order. Through `iter_revisions` (so its cache policy applies: the
    files of a revision analysed already can be deleted) when every revision has its own step."""
    from ..load import iter_revisions, load_model

    kwargs = {"model_class": model_class} if model_class is not None else {}
    steps = [i.step for i in infos]
    if None not in steps and len(set(steps)) == len(steps):
        for rev in iter_revisions(
            repo_id, steps=steps, hub=hub, token=token, cache=cache, max_cache_bytes=max_cache_bytes
        ):
            yield rev.info, functools.partial(rev.load_model, **kwargs)
        return
    if cache != "keep":
        logger.warning("cache=%r needs revisions with distinct steps; keeping every download", cache)
    for info in infos:
        yield info, functools.partial(load_model, repo_id, info.commit, hub=hub, token=token, **kwargs)


def load_tokenizer(repo_id: str, info: Any, *, hub: Any, token: Any = None):
    """The tokenizer stored in a revision (at its commit); AnalysisError when it has none.

    Its files are downloaded like every other file hubckpt loads (`Downloader`: repo paths checked,
    verified against checkpoint.json, the token only to the hub's origin, a stalled download bounded).
    """
    from fnmatch import fnmatch

    from transformers import AutoTokenizer

    from ..hub.reader import HubReader
    from ..load.download import Downloader

    downloader = Downloader(HubReader(hub, repo_id, token=token))
    files = downloader.revision_files(info)
    wanted = sorted(p for p in files.files if "/" not in p and any(fnmatch(p, f) for f in TOKENIZER_FILES))
    local = downloader.fetch_many(files, wanted)
    folder = next(iter(local.values())).parent if local else Path()
    if not local or (
        not any((folder / f).exists() for f in TOKENIZER_FILES[:-1] if "*" not in f)
        and not list(folder.glob("*.model"))
    ):
        raise AnalysisError(
            f"{repo_id}@{info.name} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}...), so "
            "a text probe cannot be tokenised. Publish the tokenizer with the checkpoint, or pass "
            "--probe as a safetensors file holding an `input_ids` tensor [n, seq]."
        )
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as e:
        raise AnalysisError(f"The tokenizer of {repo_id}@{info.name} does not load: {e}") from e


def make_probe(
    probe: Probe | str | Path | torch.Tensor, repo_id: str, first: Any, *, hub: Any, token: Any, max_length: int
) -> Probe:
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, torch.Tensor):
        return Probe(input_ids=probe) if not probe.dtype.is_floating_point else Probe(inputs=probe)
    path = Path(probe)
    if not path.is_file():
        raise AnalysisError(f"Probe file {path} does not exist.")
    if is_text_probe(path):
        texts = read_text_probe(path)
        tokenizer = load_tokenizer(repo_id, first, hub=hub, token=token)
        logger.info("tokenised %d probe lines with the tokenizer of %s", len(texts), first.name)
        return Probe.from_texts(texts, tokenizer, max_length=max_length)
    return Probe.from_safetensors(path)


def probe_fingerprint(probe: Probe) -> str:
    h = hashlib.sha256()
    for t in (probe.input_ids, probe.attention_mask, probe.inputs):
        if t is not None:
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _distinct_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied aliases (lm_head.weight = wte.weight is one tensor, listed once)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to("cpu")
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def analyze(
    repo_id: str,
    *,
    probe: Probe | str | Path | torch.Tensor,
    out: str | Path,
    revisions: Sequence[str] | None = None,
    every: int | None = None,
    layers: Sequence[str | int] | None = None,
    hub: Any = None,
    token: Any = None,
    measure: str = "linear_cka",
    pool: str = "mean",
    batch_size: int = 32,
    max_length: int = 128,
    device: str = "cpu",
    plots: bool = True,
    model_class: Any = None,
    cache: str = "keep",
    max_cache_bytes: int | None = None,
    on_revision: Callable[[Any, float], None] | None = None,
) -> AnalysisResult:
    """Analyse `repo_id`'s revisions over `probe` and write results.json, weights.json and PNGs to `out`.

    `probe`: a text file (one example a line; tokenised with the first chosen revision's tokenizer), a
    safetensors file with `input_ids` [n, seq], a `Probe`, or a tensor. `layers`: module names or
    indices into the transformer blocks (default: every block). `cache` (`keep`, `previous`, `bounded`
    with `max_cache_bytes`) is `iter_revisions`' policy for the downloaded checkpoints, so analysing
    hundreds of revisions cannot fill the disk. `on_revision(info, seconds)` is called after each
    revision (the CLI prints progress with it).

    Args:
        repo_id: the repo, `namespace/name`.
        probe: the inputs every revision sees: a text file, a safetensors file, a `Probe` or a tensor.
        out: the output folder (`activations/` in it makes a killed run resume).
        revisions: the revisions to analyse, by name (default: all; not with `every`).
        every: only the revisions whose step is a multiple of this.
        layers: module names or block indices (negative from the end) to collect (default: every block).
        hub: `local` (default), `hf`, a URL or a `Hub`.
        token: token for that hub; None picks the hub's own.
        measure: `linear_cka`, `rbf_cka`, `minibatch_cka`, `svcca`, `pwcca` or `procrustes`.
        pool: how a sequence becomes one vector: `mean` (over real tokens), `last`, `tokens` or `flatten`.
        batch_size: probe examples per forward pass.
        max_length: tokens per text example (longer ones are cut).
        device: where the forward passes run.
        plots: write the PNGs (needs `pip install "hubckpt[analysis]"`).
        model_class: the transformers class to build (default: from the config).
        cache: `keep`, `previous` or `bounded`, as for `iter_revisions`.
        max_cache_bytes: the bound for `cache="bounded"`.
        on_revision: called with (revision info, seconds) after each revision.

    Returns:
        An `AnalysisResult`: the results (also in `out/results.json`), the files written, the time taken.

    Raises:
        AnalysisError: an unreadable probe, a text probe without a tokenizer, unknown layers, both
            `revisions` and `every`, or too few revisions.
        UnknownRevisionError: a name in `revisions` that the repo does not have.
    """
    from ..hub.select import Hub, ensure_running, resolve_hub

    if plots:  # before any download or forward pass, not after them
        from .plots import require_matplotlib

        require_matplotlib()
    started = time.perf_counter()
    hub_obj = ensure_running(hub if isinstance(hub, Hub) else resolve_hub(hub))
    infos = select_revisions(repo_id, revisions, every, hub=hub_obj, token=token)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = ActivationStore(out / "activations")
    the_probe = make_probe(probe, repo_id, infos[0], hub=hub_obj, token=token, max_length=max_length)
    fingerprint = probe_fingerprint(the_probe)
    layer_names: list[str] | None = None
    tracker: DriftTracker | None = None
    analysed = []
    for info, load in _models(
        repo_id, infos, hub=hub_obj, token=token, cache=cache, max_cache_bytes=max_cache_bytes, model_class=model_class
    ):
        t0 = time.perf_counter()
        model = load().to(device)
        analysed.append(info)
        if layer_names is None:
            layer_names = resolve_layers(model, layers)
        wanted = {"probe_sha256": fingerprint, "pool": pool, "layers": layer_names, "commit": info.commit}
        have = store.metadata(info.name) if info.name in store else {}
        if any(have.get(k) != v for k, v in wanted.items()):
            acts = collect_activations(model, the_probe, layer_names, batch_size=batch_size, pool=pool)
            store.save(info.name, acts, {**wanted, "revision": info.name, "step": info.step})
            del acts
        else:
            logger.info("activations of %s already in %s", info.name, store.root)
        tensors = _distinct_tensors(model)
        if tracker is None:
            tracker = DriftTracker({k: v.clone() for k, v in tensors.items()}, name=info.name)
        tracker.add(info.name, tensors, info.step)
        del model, tensors
        gc.collect()
        if on_revision is not None:
            on_revision(info, time.perf_counter() - t0)
    assert tracker is not None and layer_names is not None
    infos = analysed
    names = [i.name for i in infos]
    cka = revision_similarity(store, names, layer_names, measure=measure)
    results = {
        "revisions": names,
        "steps": [i.step for i in infos],
        "layers": layer_names,
        "cka": {layer: m.tolist() for layer, m in cka.items()},
        "drift": tracker.result.layers,
    }
    results = _json_safe(results)
    files = [out / "results.json", out / "weights.json"]
    files[0].write_text(json.dumps(results, indent=1) + "\n")
    files[1].write_text(json.dumps(_json_safe(tracker.result.to_json()), indent=1) + "\n")
    if plots:
        from . import plots as p

        labels = [str(i.step) if i.step is not None else i.name for i in infos]
        shown = {"linear_cka": "Linear CKA", "procrustes": "Procrustes distance"}.get(measure, measure)
        title = f"{shown} between revisions of {repo_id}"
        axis = "step" if all(i.step is not None for i in infos) else "revision"
        # colours scaled to the data: between nearby checkpoints CKA is often > 0.99 everywhere
        files.append(p.plot_cka_heatmaps(cka, labels, out / "cka.png", title=title, axis_label=axis))
        last = infos[-1]
        files.append(
            p.plot_similarity_matrix(
                layer_similarity(store, names[-1], layer_names, measure=measure),
                layer_names,
                out / "layers.png",
                title=f"{shown} between layers of {names[-1]}"
                + (f" (step {last.step})" if last.step is not None else ""),
                axis_label="layer",
            )
        )
        files.append(p.plot_drift(results["steps"], tracker.result.layers, out / "drift.png", reference=names[0]))
        if any(i.metrics for i in infos):
            files.append(p.plot_metrics(infos, out / "metrics.png"))
    return AnalysisResult(results, out, files, time.perf_counter() - started)
