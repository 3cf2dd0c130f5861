"""Lazy reads of a revision: tensor names, shapes and dtypes from safetensors headers; one tensor by HTTP Range.

A header costs one Range request (two if larger than 16 KiB); `get_tensor` then moves exactly that
tensor's bytes. Plain Range GETs through huggingface_hub's session are used rather than `HfFileSystem`,
whose fsspec buffering reads ahead 5 MB by default. Headers are cached in memory and on disk (keyed by
the file's sha256 once the whole file was verified, so identical files share one entry; else by hub,
repo, commit and path) and checked again on every read. Files already in the local cache (and verified)
are read from disk instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import IntegrityError
from ..formats.safetensors_header import TORCH_DTYPES, parse_header, read_file_header
from ..formats.untrusted import is_sha256
from .download import is_verified, require_weights

if TYPE_CHECKING:
    import torch

    from ..formats.index import RevisionInfo
    from ..hub.reader import HubReader
    from .download import Downloader, RevisionFiles


class ResolvedRevision(Protocol):
    """What a lazy read uses of a resolved revision (`loaders.Revision`), named here so that this module
    need not import the loaders, which import it."""

    @property
    def repo_id(self) -> str: ...
    @property
    def info(self) -> RevisionInfo: ...
    @property
    def commit(self) -> str: ...
    @property
    def reader(self) -> HubReader: ...
    @property
    def downloader(self) -> Downloader: ...
    @property
    def files(self) -> RevisionFiles: ...
    @property
    def tied(self) -> dict[str, str]: ...
    @property
    def lazy(self) -> bool: ...


logger = logging.getLogger(__name__)


def torch_dtype(name: str) -> torch.dtype:
    import torch

    try:
        return getattr(torch, TORCH_DTYPES[name])
    except (KeyError, AttributeError):
        raise IntegrityError(f"safetensors dtype {name} has no torch equivalent here") from None


@dataclass(frozen=True)
class TensorMeta:
    """Where one tensor lives: its file, dtype, shape and absolute byte range [start, end) in the file."""

    name: str
    file: str
    dtype: str  # safetensors name: F32, BF16, ...
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _header_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hubckpt" / "headers"


class LazyRevision:
    """A revision opened for lazy reads; made by `hubckpt.open_revision`, not directly.

    Metadata (`keys()`, `shape()`, `dtype()`, `meta()`, `tensors()`) comes from the safetensors headers;
    `get_tensor()` reads one tensor's bytes with HTTP Range requests (from disk when the file is cached).
    Use it as a context manager, or call `close()`.

    Args:
        rev: the resolved revision to read (internal).
        count_from_now: count `bytes_received` from now rather than from the start of the resolution.

    Raises:
        KeyError: `meta()` / `get_tensor()` of a name the revision does not have.
        IntegrityError: a header or byte range that does not match the file.
    """

    def __init__(self, rev: ResolvedRevision, *, count_from_now: bool = False) -> None:
        self.rev = rev
        counter = rev.reader.counter
        # open_revision counts from the start (resolving the revision included); a revision opened from
        # an iteration counts from here, its reader having served the iteration's earlier reads.
        self._base = (counter.bytes, counter.requests) if count_from_now else (0, 0)
        self._headers: dict[str, tuple[dict, int]] = {}  # file → (header, data start)
        self._weight_map: dict[str, str] | None = None
        self._weights: list[str] | None = None

    # -- context manager --------------------------------------------------------------------------
    def __enter__(self) -> LazyRevision:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Forget the headers held in memory (the on-disk header cache stays)."""
        self._headers.clear()

    # -- what is there ----------------------------------------------------------------------------
    @property
    def info(self):
        """The resolved RevisionInfo (name, step, commit, metrics...)."""
        return self.rev.info

    @property
    def commit(self) -> str:
        """The 40-hex commit every read is pinned to."""
        return self.rev.commit

    @property
    def bytes_received(self) -> int:
        """Response bytes received for this revision (index, manifest, headers, tensors), bodies only."""
        return self.rev.reader.counter.bytes - self._base[0]

    @property
    def requests(self) -> int:
        """HTTP requests made for this revision."""
        return self.rev.reader.counter.requests - self._base[1]

    def _layout(self) -> tuple[list[str], dict[str, str]]:
        weights, weight_map = self._weights, self._weight_map
        if weights is None or weight_map is None:
            weights = self._weights = require_weights(self.rev.files, self.rev.repo_id)
            weight_map = self._weight_map = self.rev.downloader.weight_map(self.rev.files, via_cache=not self.rev.lazy)
        return weights, weight_map

    @property
    def files(self) -> list[str]:
        """The safetensors files holding the weights."""
        return list(self._layout()[0])

    def keys(self) -> list[str]:
        """Stored tensor names, sorted (from the sharded index, else the header); tied aliases are not listed
        but `meta`/`get_tensor` accept them."""
        weights, weight_map = self._layout()
        if weight_map:
            return sorted(weight_map)
        return sorted(k for w in weights for k in self._header(w)[0] if k != "__metadata__")

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in set(self.keys()) or name in self.rev.tied)

    def __len__(self) -> int:
        return len(self.keys())

    def meta(self, name: str) -> TensorMeta:
        """dtype, shape and byte range of a tensor, from its file's header.

        A tied alias the converter stored once (e.g. lm_head.weight) gives the stored tensor's entry.

        Args:
            name: the tensor's name (a tied alias works too).

        Returns:
            Its `TensorMeta`: file, dtype, shape and byte range.

        Raises:
            KeyError: the revision has no tensor of that name.
            IntegrityError: the sharded index names a shard whose header lacks the tensor.
        """
        weights, weight_map = self._layout()
        tied = self.rev.tied
        if name in tied and name not in weight_map:
            name = tied[name]
        candidates = [weight_map[name]] if name in weight_map else [] if weight_map else weights
        for file in candidates:
            header, data_start = self._header(file)
            entry = header.get(name)
            if entry is not None and name != "__metadata__":
                start, end = entry["data_offsets"]
                return TensorMeta(
                    name, file, entry["dtype"], tuple(entry["shape"]), data_start + start, data_start + end
                )
            if weight_map:  # the index names a tensor its shard lacks (huggingface_hub#4725)
                raise IntegrityError(
                    f"{self.rev.repo_id}@{self.info.name}: the sharded index puts {name!r} in {file}, "
                    "whose header has no such tensor",
                    path=f"{self.rev.repo_id}@{self.info.name}/{file}",
                )
        raise KeyError(f"{self.rev.repo_id}@{self.info.name} has no tensor {name!r}")

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, from its file's header (see `meta`)."""
        return self.meta(name).shape

    def dtype(self, name: str) -> torch.dtype:
        """A tensor's torch dtype, from its file's header (see `meta`)."""
        return self.meta(name).torch_dtype

    def tensors(self) -> dict[str, TensorMeta]:
        """Every tensor's TensorMeta (reads each weight file's header once)."""
        weights, _ = self._layout()
        if len(weights) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(weights))) as pool:
                list(pool.map(self._header, weights))
        return {k: self.meta(k) for k in self.keys()}

    def metadata(self) -> dict[str, str]:
        """The `__metadata__` of the (first) weight file's header."""
        return dict(self._header(self._layout()[0][0])[0].get("__metadata__") or {})

    # -- reading ------------------------------------------------------------------------------------
    def get_tensor(self, name: str) -> torch.Tensor:
        """One tensor, reading just its bytes (a Range request, or the verified local copy when cached).

        Args:
            name: the tensor's name (a tied alias works too).

        Returns:
            The tensor, on the CPU, in its stored dtype.

        Raises:
            KeyError: the revision has no tensor of that name.
            IntegrityError: the bytes read do not match the header's byte range.
        """
        import torch

        meta = self.meta(name)
        dtype = meta.torch_dtype
        if meta.nbytes == 0:
            return torch.empty(meta.shape, dtype=dtype)
        local = self._local(meta.file)
        if local is not None:
            with open(local, "rb") as f:
                f.seek(meta.start)
                data = bytearray(f.read(meta.nbytes))
        else:
            raw, _ = self.rev.reader.read_range(meta.file, self.commit, meta.start, meta.end)
            data = bytearray(raw)
        if len(data) != meta.nbytes:
            raise IntegrityError(
                f"{self.rev.repo_id}@{self.info.name}/{meta.file}: {name} should be {meta.nbytes} "
                f"bytes, read {len(data)}",
                path=f"{self.rev.repo_id}@{self.info.name}/{meta.file}",
            )
        return torch.frombuffer(data, dtype=dtype).reshape(meta.shape)

    def _local(self, file: str) -> Path | None:
        local = self.rev.downloader.cached(self.info, file)
        sha256 = self.rev.files.sha256(file) or (local.resolve().name if local is not None else None)
        if local is not None and sha256 and is_verified(local, sha256):
            return local
        return None

    def _header(self, file: str) -> tuple[dict, int]:
        """(parsed header, data start) of one weight file: from memory, the header cache, the local cache
        (verified), or by Range reads.

        The on-disk cache is shared by every repo and hub, so what it holds is never taken on trust: an
        entry is stored under a file's sha256 only when the whole file was hashed to it (a verified local
        copy), else under a key of (hub, repo, commit, path), which only that repo's own reads can fill;
        every entry is parsed and checked again when it is read, like a header fresh from the hub.
        """
        if file in self._headers:
            return self._headers[file]
        where = f"{self.rev.repo_id}@{self.info.name}/{file}"
        sha256 = self.rev.files.sha256(file)
        expected = (self.rev.files.files.get(file) or {}).get("size")
        local = self._local(file)
        if local is not None:  # verified: the whole file hashed to the sha256 that keys the entry
            key = sha256 or local.resolve().name
        else:  # a sha256 checkpoint.json only claims: the entry is this repo's own
            origin = f"{self.rev.reader.endpoint}\n{self.rev.repo_id}\n{self.commit}\n{file}"
            key = "at-" + hashlib.sha256(origin.encode()).hexdigest()
        cache_path = _header_cache_dir() / f"{key}.json" if is_sha256(key.removeprefix("at-")) else None
        found = _cached_header(cache_path, where, expected) if cache_path is not None else None
        if found is None:
            data_size: int | None
            if local is not None:
                header, data_start, raw = read_file_header(local, where)
                found, data_size = (header, data_start), local.stat().st_size - data_start
            else:
                header, data_start, total = self.rev.reader.safetensors_header(file, self.commit)  # parsed there
                if expected is not None and total is not None and int(expected) != total:
                    raise IntegrityError(
                        f"{where} is {total} bytes on the hub, {expected} in checkpoint.json", path=file
                    )
                raw, data_size = json.dumps(header).encode(), None if total is None else total - data_start
                found = (header, data_start)
            if cache_path is not None:
                _store_header(cache_path, raw, found[1], data_size)
        self._headers[file] = found
        return found


def _cached_header(path: Path, where: str, expected_size: int | None) -> tuple[dict, int] | None:
    """A header cache entry, parsed and checked as if fresh; None when absent or not right (then read again)."""
    try:
        doc = json.loads(path.read_bytes())
        raw, data_start, data_size = doc["raw"].encode(), int(doc["data_start"]), doc["data_size"]
        data_size = None if data_size is None else int(data_size)
        if expected_size is not None and data_size is not None and int(expected_size) != data_start + data_size:
            return None
        return parse_header(raw, where, data_size=data_size), data_start
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, IntegrityError):
        return None


def _store_header(path: Path, raw: bytes, data_start: int, data_size: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"raw": raw.decode(), "data_start": data_start, "data_size": data_size}))
    os.replace(tmp, path)
