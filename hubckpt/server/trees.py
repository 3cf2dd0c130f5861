"""The JSON shapes of files and folders, as the Hub's tree, paths-info and model-info APIs return them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .blobs import lfs_pointer
from .storage import Commit, FileEntry


def file_json(entry: FileEntry, last_commit: Commit | None = None) -> dict:
    data: dict = {"type": "file", "path": entry.path, "oid": entry.git_oid, "size": entry.size}
    if entry.lfs:
        data["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    if last_commit is not None:
        data["lastCommit"] = {"id": last_commit.sha, "title": last_commit.title, "date": last_commit.date}
    return data


def folder_json(path: str, files: dict[str, FileEntry], last_commit: Commit | None = None) -> dict:
    prefix = path + "/"
    h = hashlib.sha1()
    for p in sorted(p for p in files if p.startswith(prefix)):
        h.update(f"{p}\0{files[p].git_oid}\n".encode())
    data: dict = {"type": "directory", "path": path, "oid": h.hexdigest(), "size": 0}
    if last_commit is not None:
        data["lastCommit"] = {"id": last_commit.sha, "title": last_commit.title, "date": last_commit.date}
    return data


def folders_of(files: Iterable[str]) -> set[str]:
    """Every folder that holds at least one of `files`."""
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def list_tree(files: dict[str, FileEntry], path: str, recursive: bool) -> list[tuple[str, str]] | None:
    """(kind, path) of the entries under `path` ('' = root), sorted; None if `path` does not exist.

    A file path lists just that file. Recursive listings include every intermediate folder.
    """
    folders = folders_of(files)
    if path and path in files:
        return [("file", path)]
    if path and path not in folders:
        return None
    prefix = path + "/" if path else ""
    out = []
    for folder in folders:
        if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix) :]):
            out.append(("directory", folder))
    for file in files:
        if file.startswith(prefix) and (recursive or "/" not in file[len(prefix) :]):
            out.append(("file", file))
    # Folders first, then files, each sorted: the Hub's order, and deterministic.
    out.sort(key=lambda item: (item[0] != "directory", item[1]))
    return out


def sibling_entries(files: Iterable[FileEntry], with_blobs: bool) -> list[dict]:
    """`siblings` of model info; with `blobs=true`, sizes and LFS info (keys differ from the tree API)."""
    out = []
    for entry in sorted(files, key=lambda e: e.path):
        item: dict = {"rfilename": entry.path}
        if with_blobs:
            item["size"] = entry.size
            item["blobId"] = entry.git_oid
            if entry.lfs:
                item["lfs"] = {
                    "sha256": entry.sha256,
                    "size": entry.size,
                    "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                }
        out.append(item)
    return out
