"""Which files the Hub stores with LFS: `.gitattributes` patterns, size and binary sniffing."""

from __future__ import annotations

import fnmatch
import re

# The `.gitattributes` a new model repo starts with on huggingface.co.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "saved_model/**/*",
        "*.tar.*",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)

# Files above this size always go through LFS on the Hub.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024


def lfs_patterns(gitattributes: str) -> list[str]:
    """The patterns of a `.gitattributes` text that carry `filter=lfs`."""
    patterns = []
    for line in gitattributes.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, *attributes = line.split()
        if "filter=lfs" in attributes:
            patterns.append(pattern)
    return patterns


def _matches(pattern: str, path: str) -> bool:
    # gitattributes: a pattern without '/' matches the basename at any depth; with '/', the full path.
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    regex = re.escape(pattern.lstrip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def is_lfs(path: str, size: int, sample: bytes, gitattributes: str) -> bool:
    """Decide `lfs` vs `regular` the way the Hub does for preupload."""
    if any(_matches(p, path) for p in lfs_patterns(gitattributes)):
        return True
    if size > LFS_SIZE_THRESHOLD:
        return True
    return b"\x00" in sample


def is_ignored(path: str, gitignore: str) -> bool:
    """True if `path` matches a pattern of a `.gitignore` text (no negations, like a simple Hub check)."""
    for line in gitignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith(("#", "!")):
            continue
        anchored = pattern.startswith("/")
        pattern = pattern.strip("/")
        if "/" in pattern or anchored:
            if fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/"):
                return True
        else:
            parts = path.split("/")
            if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
                return True
    return False
