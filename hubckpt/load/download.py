"""Downloading a revision's files into the one huggingface_hub cache, pinned to its commit, verified.

Files go through `hf_hub_download` into the shared cache (never a cache folder per revision), so a file
identical across revisions is one blob. Each downloaded file is checked once against the sha256 its
revision's `checkpoint.json` records (for repos without one: against the LFS sha256 the hub gave as
ETag); a mismatch removes the bad copy from the cache and raises `IntegrityError` naming the file. A
verified blob is remembered by (inode, size, mtime), so warm loads do not re-hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HubckptError, HubUnavailableError, IntegrityError
from ..formats import manifest as manifest_format
from ..formats.index import RevisionInfo
from ..formats.manifest import MANIFEST_FILE
from ..formats.untrusted import (
    MAX_JSON_BYTES,
    Source,
    check_commit,
    check_repo_path,
    check_sha256,
    check_str,
    check_type,
    is_sha256,
    load_json,
    printable,
)
from ..hub.guard import guarded
from ..hub.reader import HubReader
from ..hub.retries import is_transient

logger = logging.getLogger(__name__)

INDEX_JSON = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_HASH_CHUNK = 8 * 1024 * 1024


def _verified_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hubckpt" / "verified"


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_cached(snapshot_path: Path) -> None:
    """Remove a cached file: its blob and the snapshot entry pointing at it."""
    blob = snapshot_path.resolve()
    for p in (blob, snapshot_path):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def is_verified(path: Path, sha256: str) -> bool:
    """Was this cached file hashed to `sha256` since it last changed?"""
    marker = _verified_dir() / sha256
    try:
        return marker.read_text() == _fingerprint(path.resolve())
    except OSError:
        return False


def verify_cached(path: Path, expected: str | None, where: str) -> None:
    """Check a cached file against `expected` (its sha256); on mismatch remove it and raise IntegrityError."""
    blob = path.resolve()
    recorded_in_manifest = expected is not None
    if expected is None and is_sha256(blob.name):
        expected = blob.name  # an LFS file: the hub's ETag is its sha256
    if expected is None:
        logger.debug("%s: no sha256 recorded; not verified", where)
        return
    if is_verified(path, expected):
        return
    actual = sha256_file(blob)
    if actual != expected:
        _remove_cached(path)
        recorded = f"recorded in {MANIFEST_FILE}" if recorded_in_manifest else "the hub gave as its ETag (LFS sha256)"
        raise IntegrityError(
            f"{where} is corrupt: sha256 {actual[:16]}… instead of {expected[:16]}… {recorded}; "
            "the bad copy was removed from the cache, nothing was loaded "
            "(retry to download it again; if it fails again the hub holds a bad copy)",
            path=where,
        )
    mark_verified(blob, expected)


def mark_verified(blob: Path, sha256: str) -> None:
    """Remember that the cached `blob` hashed to `sha256` (a checked 64-hex digest: it names the marker)."""
    assert is_sha256(sha256), "marker names are derived from checked sha256s"
    marker = _verified_dir() / sha256
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{sha256}.{os.getpid()}")
    tmp.write_text(_fingerprint(blob))
    os.replace(tmp, marker)


@dataclass
class RevisionFiles:
    """What a revision holds, from its `checkpoint.json` (or a listing for repos without one)."""

    info: RevisionInfo
    manifest: dict | None
    files: dict[str, dict] = field(default_factory=dict)  # path → {"sha256", "size"} (sha256 may be None)

    @property
    def weight_files(self) -> list[str]:
        """The safetensors weights at the top level (shards in order), excluding training state."""
        return sorted(p for p in self.files if p.endswith(".safetensors") and "/" not in p)

    @property
    def sharded(self) -> bool:
        return INDEX_JSON in self.files

    def sha256(self, path: str) -> str | None:
        return (self.files.get(path) or {}).get("sha256")


class Downloader:
    """Downloads files of pinned revisions of one repo into the huggingface_hub cache, verified."""

    def __init__(self, reader: HubReader, *, cache_dir: str | Path | None = None) -> None:
        self.reader = reader
        self.cache_dir = cache_dir

    def where(self, info: RevisionInfo, path: str) -> str:
        return f"{self.reader.repo_id}@{info.name}/{path}"

    def cached(self, info: RevisionInfo, path: str) -> Path | None:
        """The cached copy of `path` at the revision's commit, if there is one (no request)."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.reader.repo_id, path, cache_dir=self.cache_dir, revision=info.commit)
        return Path(found) if isinstance(found, str) else None

    def fetch(self, info: RevisionInfo, path: str, sha256: str | None = None) -> Path:
        """`path` at the revision's commit, in the cache, verified against `sha256`.

        The commit must be 40-hex and `path` a valid repo path before either reaches the cache
        (huggingface_hub writes `refs/<revision>` and `snapshots/<commit>/<path>`); a transfer that fails
        for good (timeouts, dropped connections) is a `HubUnavailableError`.
        """
        from huggingface_hub import hf_hub_download

        source = Source(self.reader.repo_id, info.name, path)
        commit = pinned_commit(info)
        check_repo_path(path, source)
        check_sha256(sha256, source)
        local = self.cached(info, path)
        if local is None:
            try:
                with guarded(self.reader.endpoint, f"downloading {self.where(info, path)}"):
                    local = Path(
                        hf_hub_download(
                            self.reader.repo_id,
                            path,
                            revision=commit,
                            cache_dir=self.cache_dir,
                            endpoint=self.reader.endpoint,
                            token=self.reader.token,
                            library_name="hubckpt",
                        )
                    )
            except Exception as e:
                if is_transient(e) and not isinstance(e, HubckptError):
                    raise HubUnavailableError(
                        f"downloading {self.where(info, path)} from {self.reader.hub.describe()} failed: "
                        f"{type(e).__name__}: {printable(str(e), 200)}"
                    ) from e
                raise
        verify_cached(local, sha256, self.where(info, path))
        return local

    def fetch_many(self, files: RevisionFiles, paths: list[str]) -> dict[str, Path]:
        """Several files of one revision (in parallel when there are several to download)."""
        from concurrent.futures import ThreadPoolExecutor

        if len(paths) <= 1:
            return {p: self.fetch(files.info, p, files.sha256(p)) for p in paths}
        with ThreadPoolExecutor(max_workers=min(4, len(paths))) as pool:
            out = dict(zip(paths, pool.map(lambda p: self.fetch(files.info, p, files.sha256(p)), paths)))
        return out

    def manifest(self, info: RevisionInfo, *, via_cache: bool = True) -> dict | None:
        """The revision's checkpoint.json (None if it has none).

        `via_cache`: download it into the cache (later loads need no request); else read it with one
        GET unless it is cached already (what lazy reads do, to move as little as possible).
        """
        from huggingface_hub.errors import EntryNotFoundError

        source = Source(self.reader.repo_id, info.name, MANIFEST_FILE)
        local = self.cached(info, MANIFEST_FILE)
        if local is not None:
            return manifest_format.loads(read_capped(local, source), source)
        if not via_cache:
            return self.reader.manifest(pinned_commit(info))
        try:
            return manifest_format.loads(read_capped(self.fetch(info, MANIFEST_FILE), source), source)
        except EntryNotFoundError:
            return None

    def revision_files(self, info: RevisionInfo, *, via_cache: bool = True) -> RevisionFiles:
        """What the revision holds: checkpoint.json's file list, else a listing of the commit."""
        manifest = self.manifest(info, via_cache=via_cache)
        if manifest is not None and manifest.get("files"):
            files = {f["path"]: {"sha256": f.get("sha256"), "size": f.get("size")} for f in manifest["files"]}
        else:
            listed = self.reader.list_files(pinned_commit(info))
            files = {p: {"sha256": None, "size": size} for p, size in listed.items()}
        return RevisionFiles(info, manifest, files)

    def weight_map(self, files: RevisionFiles, *, via_cache: bool = True) -> dict[str, str]:
        """tensor name → shard file, from the sharded index (empty for a single file)."""
        if not files.sharded:
            return {}
        source = Source(self.reader.repo_id, files.info.name, INDEX_JSON)
        local = self.cached(files.info, INDEX_JSON)
        if local is None and not via_cache:
            index = self.reader.read_json(INDEX_JSON, pinned_commit(files.info)) or {}
        else:
            index = load_json(read_capped(self.fetch(files.info, INDEX_JSON, files.sha256(INDEX_JSON)), source), source)
        weight_map = check_type(
            check_type(index, dict, source, "content").get("weight_map") or {}, dict, source, "weight_map"
        )
        for name, shard in weight_map.items():
            check_str(name, source, "tensor name", optional=False)
            check_repo_path(shard, source, "shard name")
        unknown = sorted(set(weight_map.values()) - set(files.files))
        if unknown:
            raise IntegrityError(
                f"{self.where(files.info, INDEX_JSON)} maps tensors to {', '.join(unknown)}, which "
                "the revision does not have",
                path=self.where(files.info, INDEX_JSON),
            )
        return weight_map


def pinned_commit(info: RevisionInfo) -> str:
    """The commit a resolved revision is pinned to (`RepoRevisions.resolve` always sets it): 40-hex, checked
    again here because it becomes `revision=` of the download and a folder name in the cache."""
    assert info.commit, "resolve the revision first: downloads are pinned to commits"
    return check_commit(info.commit, Source(revision=info.name))


def read_capped(path: Path, source: Source) -> bytes:
    """A downloaded metadata file's bytes, refused unread when larger than the cap on metadata files."""
    if path.stat().st_size > MAX_JSON_BYTES:
        raise source.error(f"it is larger than {MAX_JSON_BYTES} bytes")
    return path.read_bytes()


def require_weights(files: RevisionFiles, repo_id: str) -> list[str]:
    """The revision's safetensors weight files; NoSafetensorsError if it has none."""
    from .. import errors

    weights = files.weight_files
    if not weights:
        others = sorted(p for p in files.files if p.endswith((".bin", ".pt", ".pth", ".ckpt")))
        hint = (
            f" (it has {', '.join(others[:3])}: hubckpt loads safetensors only; `hubckpt convert` converts)"
            if others
            else ""
        )
        raise errors.NoSafetensorsError(f"{repo_id}@{files.info.name} has no safetensors weights{hint}")
    return weights
