"""`publish(snapshot=True)`: keep a checkpoint's bytes as they were at `publish()` time.

Hard links are free and protect against deletion (the Trainer's `save_total_limit`), but not against a
framework that writes the next checkpoint *into the same file*: nanoGPT's `torch.save(..., "ckpt.pt")`
truncates and rewrites the same inode, so a link would follow the new bytes. So:

- a single file whose name carries no step (`ckpt.pt`, `last.ckpt`) is copied: the next save goes to the
  same name, and in place;
- a file whose inode an earlier snapshot of this process already linked under the same path is copied
  (the framework evidently reuses the file);
- everything else is hard-linked (copied where links are impossible), and its size, mtime and inode are
  recorded; `check_snapshot` compares them before and after conversion and refuses clearly
  (`SnapshotChangedError`) if the file changed in place meanwhile, instead of publishing other bytes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
from pathlib import Path

from .errors import PublishError

logger = logging.getLogger(__name__)

RECORD = ".hubckpt-snapshot.json"
_linked: dict[str, int] = {}  # source path → inode linked by a snapshot of this process
_lock = threading.Lock()


class SnapshotChangedError(PublishError):
    """A hard-linked snapshot changed: the framework overwrote the checkpoint file in place."""


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _must_copy(path: Path, single_file: bool) -> bool:
    from .readers.steps import step_from_name

    if single_file and step_from_name(path.name) is None:
        return True
    with _lock:
        return _linked.get(str(path)) == path.stat().st_ino


def take_snapshot(source: Path, dest: Path) -> Path:
    """Snapshot `source` (a file or folder) into the folder `dest`; return the snapshot's path.

    See the module docstring for how.
    """
    source = Path(source)
    target = dest / source.name
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    linked: dict[str, dict[str, int]] = {}

    def place(src: str, dst: str) -> None:
        src_path = Path(src)
        if not _must_copy(src_path, single_file=not source.is_dir()):
            try:
                os.link(src, dst)
                linked[Path(dst).relative_to(dest).as_posix()] = _stat(src_path)
                with _lock:
                    _linked[str(src_path)] = src_path.stat().st_ino
                return
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
        shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=place)
    else:
        place(str(source), str(target))
    (dest / RECORD).write_text(json.dumps({"linked": linked}, sort_keys=True))
    return target


def check_snapshot(path: Path) -> None:
    """Raise `SnapshotChangedError` if a hard-linked file of the snapshot at `path` changed since it was taken."""
    record_path = Path(path).parent / RECORD
    try:
        linked = json.loads(record_path.read_text()).get("linked", {})
    except (OSError, ValueError):
        return  # not a snapshot (or taken by an older hubckpt)
    for rel, expected in sorted(linked.items()):
        file = record_path.parent / rel
        try:
            now = _stat(file)
        except OSError:
            now = None
        if now != expected:
            raise SnapshotChangedError(
                f"{rel} changed after publish(snapshot=True) captured it: the training framework overwrote the file "
                "in place, so its bytes at capture time are gone and this revision is not published. hubckpt now "
                "copies files this framework reuses; to be safe from the start, save each checkpoint under a new "
                "name (e.g. with the step in it) or publish it before the next save overwrites it."
            )
