"""Convert a checkpoint (any format the readers know) into a verified, pickle-free folder.

Output layout (what a Hub revision holds, see DESIGN §3)::

    DEST/
      model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
      config.json, generation_config.json, tokenizer files ...   (safe companions, copied)
      checkpoint.json            step, epoch, tokens, metrics, source, files with sha256, versions
      training_state/            optimizer / scheduler / scaler / rng / loop as safetensors + JSON

Crash and error safety: everything is written into `.DEST.tmp-<uuid>` beside DEST and renamed into
place at the end; on any error (including a full disk) the temp folder is removed and DEST is left
untouched. An existing DEST is never replaced unless `overwrite=True`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import Checkpoint
from ..defaults import MAX_SHARD_SIZE, REVISION_TEMPLATE
from ..errors import DestinationExistsError, DiskFullError
from ..formats.manifest import MANIFEST_FILE, TRAINING_STATE_DIR, build_manifest, dumps
from ..readers import discover, kind_of, read_checkpoint
from ..revisions import render_revision_name
from .paths import scrub_paths
from .reuse import reusable, reuse_weights
from .training_state import load_training_state, save_training_state
from .weights import WeightsReport, WrittenFile, write_weights

logger = logging.getLogger(__name__)

__all__ = ["convert", "convert_checkpoint", "ConvertResult", "load_training_state"]


@dataclass
class ConvertResult:
    """What one conversion produced.

    Attributes:
        dest: the output folder.
        checkpoint: the checkpoint as read (step, metrics, files, training state...).
        weights: what was written for the weights (shards, tied aliases dropped, bytes).
        files: every file written, with its sha256 and size.
        skipped: (file, reason) for each input file not carried over.
    """

    dest: Path
    checkpoint: Checkpoint
    weights: WeightsReport
    files: list[WrittenFile] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.checkpoint.skipped


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _size(value: int | str) -> int:
    from huggingface_hub.serialization._base import parse_size_to_int

    return value if isinstance(value, int) else parse_size_to_int(value)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for d in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_dest(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite and (dest.is_file() or any(dest.iterdir())):
        raise DestinationExistsError(
            f"{dest} already exists; choose another destination or pass overwrite=True (CLI: --overwrite)"
        )


def convert_checkpoint(
    ckpt: Checkpoint,
    dest: str | Path,
    *,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    dtype: str = "keep",
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
    link: bool = False,
) -> ConvertResult:
    """Write an already-read `Checkpoint` into `dest` (see the module docstring).

    Weights that already are valid safetensors in the transformers layout are validated and copied in one
    read (`reuse.py`), or hard-linked with `link=True`, instead of being rewritten and verified.
    """
    dest = Path(dest)
    _check_dest(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # our own leftovers from a killed run, nothing else
        shutil.rmtree(stale, ignore_errors=True)
    # Nothing from the user's machine is published: absolute paths in metadata become names (paths.py).
    run_dir = Path(ckpt.source).resolve().parent if ckpt.source_format != "live" else None
    ckpt.best = scrub_paths(ckpt.best, run_dir)
    ckpt.training_state = scrub_paths(ckpt.training_state, run_dir)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        if reusable(ckpt.weight_files, dtype=dtype, max_shard_size=_size(max_shard_size)):
            # Already safetensors: validated, hashed and linked in one read instead of rewritten.
            report = reuse_weights(ckpt.weight_files, tmp, link=link, progress=progress)
        else:
            report = write_weights(
                dict(ckpt.weights.items()) if not isinstance(ckpt.weights, dict) else ckpt.weights,
                tmp,
                max_shard_size=max_shard_size,
                dtype=dtype,
                progress=progress,
            )
        files = list(report.files)
        for companion in sorted(ckpt.companions):
            shutil.copyfile(companion, tmp / companion.name)
            files.append(WrittenFile(companion.name, _sha256_file(tmp / companion.name), companion.stat().st_size))
        if ckpt.training_state:
            for path, sha256 in save_training_state(ckpt.training_state, tmp / TRAINING_STATE_DIR).items():
                files.append(WrittenFile(path.relative_to(tmp).as_posix(), sha256, path.stat().st_size))
        (tmp / MANIFEST_FILE).write_bytes(dumps(build_manifest(ckpt, report, files, dtype)))
        _fsync_tree(tmp)
        if dest.exists():
            backup = dest.parent / f".{dest.name}.tmp-old-{uuid.uuid4().hex[:12]}"
            os.replace(dest, backup)
            os.replace(tmp, dest)
            shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink()
        else:
            os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, DiskFullError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(
                e.errno, f"No space left while converting into {dest} ({e.strerror}); nothing was left behind"
            ) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %s -> %s (%d tensors, %d shards)", ckpt.source, dest, report.tensors, report.shards)
    return ConvertResult(dest=dest, checkpoint=ckpt, weights=report, files=sorted(files, key=lambda f: f.path))


def convert(
    src: str | Path,
    dest: str | Path,
    *,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    dtype: str = "keep",
    allow_globals: Iterable[str] = (),
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> list[ConvertResult]:
    """Convert one checkpoint into `dest`, or every checkpoint of a run folder into `dest/step-NNNNNNN/`.

    The input is recognised by content (Trainer folders, `torch.save` files, nanoGPT, Lightning,
    safetensors, torch.distributed.checkpoint). Output is written beside `dest`, verified bit for bit
    against the input, then renamed into place: on any error nothing is left behind.

    Args:
        src: a checkpoint file or folder, or a run folder holding many.
        dest: the output folder.
        max_shard_size: shard the weights above this size (bytes, or `"5GB"`, `"500MB"`).
        dtype: `keep`, `bf16` or `fp16` (floating-point tensors only).
        allow_globals: pickle globals (`module.Name`) to trust beyond the weights-only allowlist.
        overwrite: replace an existing `dest`.
        progress: called with the number of bytes written, as they are.

    Returns:
        One `ConvertResult` per checkpoint converted, in step order.

    Raises:
        UnsupportedCheckpointError: `src` is no format hubckpt reads.
        CorruptCheckpointError: a truncated, malformed or inconsistent input file.
        UnsafeCheckpointError: a pickle needs globals outside the allowlist and `allow_globals`.
        VerificationError: the output does not read back bit-identical to the input.
        DestinationExistsError: `dest` exists and `overwrite` is False.
        DiskFullError: the disk filled up while writing.

    Example:
        >>> hubckpt.convert("runs/exp1/checkpoint-500", "out/step-500")
    """
    src, dest = Path(src), Path(dest)
    if kind_of(src) == "run":
        _check_dest(dest, overwrite) if dest.is_file() else None
        results = []
        for step, path in discover(src):
            ckpt = read_checkpoint(path, allow_globals=allow_globals)
            ckpt.step = ckpt.step if ckpt.step is not None else step
            results.append(
                convert_checkpoint(
                    ckpt,
                    dest / render_revision_name(REVISION_TEMPLATE, step=step),
                    max_shard_size=max_shard_size,
                    dtype=dtype,
                    overwrite=overwrite,
                    progress=progress,
                )
            )
        return results
    _check_dest(dest, overwrite)
    ckpt = read_checkpoint(src, allow_globals=allow_globals)
    return [
        convert_checkpoint(
            ckpt, dest, max_shard_size=max_shard_size, dtype=dtype, overwrite=overwrite, progress=progress
        )
    ]
