"""Load a revision: a state dict (only the shards holding the requested keys), a transformers model, a folder."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DestinationExistsError, HubConfigError, IntegrityError
from ..formats.index import RevisionInfo, info_from_manifest
from ..formats.manifest import MANIFEST_FILE, TRAINING_STATE_DIR, loads
from ..formats.untrusted import Source
from ..hub.reader import HubReader
from ..hub.select import Hub
from .download import INDEX_JSON, Downloader, RevisionFiles, read_capped, require_weights
from .fast_read import read_weight_files, take
from .lazy import LazyRevision
from .resolve import RepoRevisions

# Tied output heads transformers' save_pretrained leaves out, and the input embeddings they are tied to.
OUTPUT_HEADS = ("lm_head", "embed_out")
INPUT_EMBEDDINGS = (
    "transformer.wte.weight",  # GPT-2, GPT-J, nanoGPT-style
    "model.embed_tokens.weight",  # Llama, Mistral, Qwen, Gemma
    "model.decoder.embed_tokens.weight",  # OPT
    "gpt_neox.embed_in.weight",  # GPT-NeoX, Pythia
    "transformer.word_embeddings.weight",  # BLOOM
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Besides the weights, what a model folder needs for `from_pretrained` (tokenizer files are pulled too).
MODEL_FILES = ("config.json", "generation_config.json")


class Revision:
    """One resolved revision of a repo, with the reader and downloader that serve it (shared by the loaders)."""

    def __init__(
        self,
        repo_id: str,
        revision: str | None = None,
        *,
        step: int | None = None,
        tokens: int | None = None,
        match: str = "exact",
        hub: Hub | str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        info: RevisionInfo | None = None,
        revisions: RepoRevisions | None = None,
        lazy: bool = False,
    ) -> None:
        self.revisions = revisions or RepoRevisions(HubReader(hub, repo_id, token=token))
        self.reader = self.revisions.reader
        self.downloader = Downloader(self.reader, cache_dir=cache_dir)
        self.info = (
            info
            or self._cached_commit(revision)
            or self.revisions.resolve(revision, step=step, tokens=tokens, match=match)
        )
        self._files: RevisionFiles | None = None
        self._config_tied: dict[str, str] = {}  # output heads save_pretrained left out (see _tie_from_config)
        self.lazy = lazy  # reading ranges only: fetch checkpoint.json with one GET, not into the cache

    def _cached_commit(self, revision: str | None) -> RevisionInfo | None:
        """A full commit sha whose checkpoint.json is cached: described from it, with no request at all.

        (Commits never change, so nothing can be stale; the record is named by the sha, as asked.)
        """
        from ..formats.untrusted import is_commit

        if revision is None or not is_commit(revision):
            return None
        local = self.downloader.cached(RevisionInfo(name=revision, step=None, commit=revision), MANIFEST_FILE)
        if local is None:
            return None
        source = Source(self.repo_id, revision, MANIFEST_FILE)
        return info_from_manifest(revision, revision, loads(read_capped(local, source), source))

    @property
    def repo_id(self) -> str:
        return self.reader.repo_id

    @property
    def commit(self) -> str:
        assert self.info.commit
        return self.info.commit

    @property
    def files(self) -> RevisionFiles:
        if self._files is None:
            self._files = self.downloader.revision_files(self.info, via_cache=not self.lazy)
        return self._files

    @property
    def tied(self) -> dict[str, str]:
        """Tied tensors the converter stored once: alias → the name it is stored under."""
        manifest = self.files.manifest or {}
        return {**self._config_tied, **dict((manifest.get("weights") or {}).get("tied") or {})}

    def _tie_from_config(self, missing: list[str], weight_map: dict[str, str]) -> None:
        """Serve an output head that `save_pretrained` left out as the input embedding it is tied to.

        transformers drops `lm_head.weight` of a model whose config ties word embeddings (GPT-2's
        default), so a revision published from such a folder stores only `transformer.wte.weight`.
        """
        heads = [k for k in missing if k.rpartition(".")[0].rpartition(".")[2] in OUTPUT_HEADS]
        if not heads or "config.json" not in self.files.files:
            return
        from ..formats.untrusted import load_json

        source = Source(self.repo_id, self.info.name, "config.json")
        config = load_json(read_capped(self.download(["config.json"])["config.json"], source), source)
        if not isinstance(config, dict) or config.get("tie_word_embeddings", True) is False:
            return
        embedding = next((name for name in INPUT_EMBEDDINGS if name in weight_map), None)
        if embedding is not None:
            self._config_tied.update(dict.fromkeys(heads, embedding))

    def plan(self, keys: Iterable[str] | None, prefix: str | None) -> tuple[dict[str, list[str] | None], list[str]]:
        """(weight file → stored names to read from it, None meaning all; the names asked for, aliases included).

        Only files holding wanted tensors appear. Tied aliases (e.g. lm_head.weight stored as
        transformer.wte.weight) are served from the stored tensor.
        """
        weights = require_weights(self.files, self.repo_id)
        tied = self.tied
        if keys is None and prefix is None:
            return {w: None for w in weights}, []
        # names → files: the sharded index, else the headers (one file, or shards without an index)
        weight_map = self.downloader.weight_map(self.files) or self._keys_from_headers(weights)
        if keys is None:
            wanted = [k for k in [*weight_map, *tied] if k.startswith(prefix or "")]
        else:
            wanted = list(dict.fromkeys(keys))
            if prefix is not None:
                wanted = [k for k in wanted if k.startswith(prefix)]
        missing = [k for k in wanted if tied.get(k, k) not in weight_map]
        if missing:
            self._tie_from_config(missing, weight_map)
            tied = self.tied
            missing = [k for k in wanted if tied.get(k, k) not in weight_map]
        if missing:
            raise KeyError(
                f"{self.repo_id}@{self.info.name} has no tensor(s) {', '.join(missing[:5])}"
                + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            )
        plan: dict[str, list[str]] = {}
        for k in wanted:
            stored = tied.get(k, k)
            names = plan.setdefault(weight_map[stored], [])
            if stored not in names:
                names.append(stored)
        return dict(sorted(plan.items())), wanted

    def _keys_from_headers(self, weights: list[str]) -> dict[str, str]:
        """Unsharded (or shards without an index): tensor names from each file's header, read lazily."""
        with LazyRevision(self) as lazy:
            return {name: lazy.meta(name).file for name in lazy.keys()}

    def download(self, paths: Iterable[str]) -> dict[str, Path]:
        files = self.files
        return self.downloader.fetch_many(files, [p for p in paths if p in files.files or p == MANIFEST_FILE])

    def download_folder(self, prefix: str) -> Path | None:
        """Download every file under `prefix` (e.g. "training_state/"), verified; the local folder, or None
        if the revision has no such files. The folder lies in this commit's cached snapshot."""
        prefix = prefix.rstrip("/") + "/"
        paths = sorted(p for p in self.files.files if p.startswith(prefix))
        if not paths:
            return None
        local = self.download(paths)
        root = local[paths[0]]
        for _ in range(paths[0].count("/") + 1):  # up from the file to the snapshot folder
            root = root.parent
        return root / prefix.rstrip("/")

    def snapshot_dir(self, extra: Iterable[str] = ()) -> Path:
        """The cached snapshot folder of this commit holding config, generation config and all weights."""
        weights = require_weights(self.files, self.repo_id)
        paths = [*weights, *([INDEX_JSON] if self.files.sharded else []), *MODEL_FILES, *extra]
        local = self.download(dict.fromkeys(paths))
        if "config.json" not in local:
            raise HubConfigError(
                f"{self.repo_id}@{self.info.name} has no config.json, so transformers cannot build "
                "a model from it; use hubckpt.load_state_dict instead"
            )
        return local[weights[0]].parent


def _convert(tensor: torch.Tensor, dtype, device) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.to(device) if str(device) != "cpu" else tensor


def load_state_dict(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    keys: Iterable[str] | None = None,
    prefix: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    hub: Hub | str | None = None,
    token: str | bool | None = None,
    match: str = "exact",
    cache_dir: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """The revision's tensors (all, `keys`, or those under `prefix`); only the shards holding them are fetched.

    Files are downloaded into the huggingface_hub cache at the resolved commit and verified against
    `checkpoint.json`. `dtype` converts floating-point tensors; `device` places them.

    Args:
        repo_id: the repo, `namespace/name`.
        revision: a branch, tag or commit, or `best`, `latest`, `final`; None (and no `step`) means `latest`.
        step: the revision published at this training step (instead of `revision`).
        match: for `step`: `exact`, `nearest` or `at_or_before`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).
        keys: only these tensors (tied aliases included; an output head `save_pretrained` left out of a
            model with tied word embeddings, e.g. GPT-2's `lm_head.weight`, is its input embedding).
        prefix: only the tensors whose name starts with this.
        dtype: convert floating-point tensors to this dtype.
        device: where to put the tensors.
        cache_dir: the huggingface_hub cache to use (default: its usual one).

    Returns:
        Tensor name -> tensor, as `model.state_dict()` names them (tied aliases included).

    Raises:
        RevisionLookupError: no revision at that step (the message names the nearest), or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name (a huggingface_hub RevisionNotFoundError).
        AmbiguousRevisionError: a name that is both a branch and a tag at different commits.
        HubConfigError: both `revision` and `step`, or an unknown `match`.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
        KeyError: a name in `keys` the revision does not have.
        IntegrityError: a downloaded file does not match its recorded sha256 (it is removed from the cache).
        NoSafetensorsError: the revision has no safetensors weights.
    """
    rev = Revision(repo_id, revision, step=step, match=match, hub=hub, token=token, cache_dir=cache_dir)
    return rev_state_dict(rev, keys=keys, prefix=prefix, dtype=dtype, device=device)


def rev_state_dict(rev: Revision, *, keys=None, prefix=None, dtype=None, device="cpu") -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    plan, wanted = rev.plan(keys, prefix)
    fast = read_weight_files(rev, list(plan))  # files not cached: parallel verified Range reads
    local = rev.download(shard for shard in plan if shard not in fast)
    stored: dict[str, torch.Tensor] = {}
    for shard, names in plan.items():
        if shard in fast:
            tensors = take(fast.pop(shard), names, f"{rev.repo_id}@{rev.info.name}/{shard}")
        elif names is None:
            tensors = load_file(local[shard], device="cpu")
        else:
            with safe_open(local[shard], framework="pt", device="cpu") as f:
                absent = sorted(set(names) - set(f.keys()))
                if absent:  # the sharded index names tensors its shard lacks (huggingface_hub#4725)
                    where = f"{rev.repo_id}@{rev.info.name}/{shard}"
                    raise IntegrityError(
                        f"{where} lacks {', '.join(absent[:5])}, which the sharded index puts there", path=where
                    )
                tensors = {k: f.get_tensor(k) for k in names}
        for k, t in tensors.items():
            stored[k] = _convert(t, dtype, device)
    if not wanted:  # everything: the stored tensors plus their tied aliases, as model.state_dict() has them
        listed = set(rev.downloader.weight_map(rev.files))
        if listed - set(stored):
            absent = sorted(listed - set(stored))
            where = f"{rev.repo_id}@{rev.info.name}"
            raise IntegrityError(
                f"{where}: the sharded index lists {', '.join(absent[:5])}, which no shard holds", path=where
            )
        return {**stored, **{alias: stored[name] for alias, name in sorted(rev.tied.items()) if name in stored}}
    tied = rev.tied
    return {k: stored[tied.get(k, k)] for k in wanted}


def _model_class(folder: Path, model_class: Any):
    import transformers

    if model_class is not None:
        return model_class
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
        logger.info("config names architecture %s, which this transformers does not have; using AutoModel", name)
    return transformers.AutoModel


def load_model(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    model_class: Any = None,
    hub: Hub | str | None = None,
    token: str | bool | None = None,
    match: str = "exact",
    cache_dir: str | Path | None = None,
    **from_pretrained_kwargs,
):
    """A transformers model of the revision, through `from_pretrained`, pinned to the resolved commit.

    The class is `model_class`, else the config's `architectures` (e.g. GPT2LMHeadModel), else AutoModel.
    Weights are downloaded into the huggingface_hub cache and verified first; transformers then loads
    that commit's snapshot folder, so nothing else is fetched behind the pin.

    Args:
        repo_id: the repo, `namespace/name`.
        revision: a branch, tag or commit, or `best`, `latest`, `final`; None (and no `step`) means `latest`.
        step: the revision published at this training step (instead of `revision`).
        match: for `step`: `exact`, `nearest` or `at_or_before`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).
        model_class: the transformers class to build (default: from the config, else AutoModel).
        cache_dir: the huggingface_hub cache to use (default: its usual one).
        **from_pretrained_kwargs: passed on to `from_pretrained` (`torch_dtype`, `device_map`...).

    Returns:
        The model, loaded by transformers from the revision's files.

    Raises:
        RevisionLookupError: no revision at that step (the message names the nearest), or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name (a huggingface_hub RevisionNotFoundError).
        AmbiguousRevisionError: a name that is both a branch and a tag at different commits.
        HubConfigError: both `revision` and `step`, or an unknown `match`.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
        IntegrityError: a downloaded file does not match its recorded sha256 (it is removed from the cache).
        NoSafetensorsError: the revision has no safetensors weights.
    """
    rev = Revision(repo_id, revision, step=step, match=match, hub=hub, token=token, cache_dir=cache_dir)
    return rev_model(rev, model_class=model_class, **from_pretrained_kwargs)


def rev_model(rev: Revision, *, model_class: Any = None, **from_pretrained_kwargs):
    folder = rev.snapshot_dir()
    # A revision's config may name custom code (`auto_map`): never run it, nor ask on the terminal,
    # unless the caller passed trust_remote_code=True themselves.
    from_pretrained_kwargs.setdefault("trust_remote_code", False)
    cls = _model_class(folder, model_class)
    model = cls.from_pretrained(folder, **from_pretrained_kwargs)
    # Where it came from, as from_pretrained(repo_id, revision=commit) would record it.
    model.config._name_or_path = rev.repo_id
    model.config._commit_hash = rev.commit
    model.hubckpt_revision = rev.info
    return model


# -- pull: a folder that from_pretrained(DIR) loads -------------------------------------------------------


@dataclass
class PullResult:
    """What `pull_revision` wrote."""

    info: RevisionInfo
    folder: Path
    files: list[str] = field(default_factory=list)
    bytes: int = 0


def pull_files(rev: Revision, *, training_state: bool = False) -> list[str]:
    """The files of a revision a pull copies: all of the commit's (the card and checkpoint.json included,
    which checkpoint.json's own list does not name) but .gitattributes and, unless asked for, training_state/."""
    listed = rev.reader.list_files(rev.commit)
    for path, size in listed.items():
        rev.files.files.setdefault(path, {"sha256": None, "size": size})
    skip = () if training_state else (TRAINING_STATE_DIR + "/",)
    paths = [p for p in listed if p != ".gitattributes" and not (skip and p.startswith(skip))]
    return sorted(paths)


def pull_revision(
    repo_id: str,
    dest: str | Path,
    revision: str | None = None,
    *,
    step: int | None = None,
    match: str = "exact",
    hub: Hub | str | None = None,
    token: str | bool | None = None,
    training_state: bool = False,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    rev: Revision | None = None,
) -> PullResult:
    """Copy a revision into `dest`: weights, config, tokenizer, card and checkpoint.json, verified.

    The folder loads with `from_pretrained(dest)`. Files come through the shared cache (so pulling many
    revisions stores identical files once there); `dest` is filled in a temporary sibling folder and
    renamed into place, so it is never half-written. `training_state=True` includes training_state/.

    Args:
        repo_id: the repo, `namespace/name`.
        dest: the folder to create.
        revision: a branch, tag or commit, or `best`, `latest`, `final`; None (and no `step`) means `latest`.
        step: the revision published at this training step (instead of `revision`).
        match: for `step`: `exact`, `nearest` or `at_or_before`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).
        training_state: also copy `training_state/`.
        overwrite: replace `dest` if it exists and is not empty.
        cache_dir: the huggingface_hub cache to use (default: its usual one).
        rev: an already resolved revision (internal; the CLI passes it).

    Returns:
        What was pulled: the revision, the folder and its files.

    Raises:
        RevisionLookupError: no revision at that step (the message names the nearest), or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name (a huggingface_hub RevisionNotFoundError).
        AmbiguousRevisionError: a name that is both a branch and a tag at different commits.
        HubConfigError: both `revision` and `step`, or an unknown `match`.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
        DestinationExistsError: `dest` exists, is not empty, and `overwrite` is False.
        IntegrityError: a downloaded file does not match its recorded sha256 (it is removed from the cache).
    """
    rev = rev or Revision(repo_id, revision, step=step, match=match, hub=hub, token=token, cache_dir=cache_dir)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not overwrite:
            raise DestinationExistsError(
                f"{dest} exists and is not empty; choose another folder, or pass overwrite=True"
            )
    require_weights(rev.files, rev.repo_id)
    paths = pull_files(rev, training_state=training_state)
    local = rev.download(paths)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        total = 0
        for path in paths:
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local[path], target)  # a copy, not a link: edits in dest must not touch the cache
            total += target.stat().st_size
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PullResult(rev.info, dest, paths, total)


def open_revision(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    match: str = "exact",
    hub: Hub | str | None = None,
    token: str | bool | None = None,
) -> LazyRevision:
    """Open a revision for lazy reads; use as a context manager.

    `keys()`, `meta(name)` / `shape(name)` / `dtype(name)` come from the safetensors headers only;
    `get_tensor(name)` reads just that tensor's bytes with HTTP Range requests. Sharded revisions are
    read through their index. `bytes_received` says how much the reads moved.

    Args:
        repo_id: the repo, `namespace/name`.
        revision: a branch, tag or commit, or `best`, `latest`, `final`; None (and no `step`) means `latest`.
        step: the revision published at this training step (instead of `revision`).
        match: for `step`: `exact`, `nearest` or `at_or_before`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).

    Returns:
        A `LazyRevision`; nothing but the revision's small files is read until a tensor is asked for.

    Raises:
        RevisionLookupError: no revision at that step (the message names the nearest), or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name (a huggingface_hub RevisionNotFoundError).
        AmbiguousRevisionError: a name that is both a branch and a tag at different commits.
        HubConfigError: both `revision` and `step`, or an unknown `match`.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
        NoSafetensorsError: the revision has no safetensors weights.

    Example:
        >>> with hubckpt.open_revision("me/run", step=1200) as rev:
        ...     w = rev.get_tensor("transformer.h.0.attn.c_attn.weight")
    """
    return LazyRevision(Revision(repo_id, revision, step=step, match=match, hub=hub, token=token, lazy=True))
