"""The write side of a hub for publishing: repos, revision branches, the index on `main`, tags.

Reads (index, refs, manifests, listings) are delegated to a `HubReader` (`HubTarget.reader`), the one
shared with the consumer side; this module keeps the writes. Every change is a single `create_commit`
(all-or-nothing). Writes to `main` are compare-and-swap (`parent_commit`), re-read and retried on
conflict. Transient failures are retried by `retries.with_retries` (backoff, `Retry-After`); a commit
whose outcome is ambiguous (the request may have landed) is settled by re-reading the branch before
trying again, so a revision is never committed twice. Every request has a timeout (`retries.hub_timeouts`).

A revision branch never exists without its commit. The Hub API has no "create a branch holding this
commit" call (`create_branch` then `create_commit` are two requests), so a revision is committed on a
staging branch `hubckpt-staging-<name>` started from the previous revision, and the revision branch
is then created *at that commit*. Readers ignore staging branches (`is_staging_branch`); a crash
leaves at most a staging branch, which the next attempt reuses or replaces and then deletes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ReadOnlyTokenError, RevisionCollisionError
from ..formats.index import RevisionIndex
from ..formats.manifest import MANIFEST_FILE, manifest_digest, read_manifest
from .commits import folder_operations, quiet_xet_notice
from .reader import HubReader
from .retries import retry_after, status_of
from .select import Hub, resolve_token

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAIN = "main"
STAGING_PREFIX = "hubckpt-staging-"


def staging_branch(name: str) -> str:
    """Where revision `name` is committed before its branch is created at that commit."""
    return STAGING_PREFIX + name


def is_staging_branch(name: str) -> bool:
    """A branch that is not (yet) a revision: readers skip it."""
    return name.startswith(STAGING_PREFIX)


def _rewind(ops: list[Any]) -> None:
    """A retried commit must upload each stream from its start (delete operations have no stream)."""
    for op in ops:
        stream = getattr(op, "path_or_fileobj", None)
        if stream is not None and hasattr(stream, "seek"):
            stream.seek(0)


def _kept_on_main(files: dict[str, bytes], path: str) -> bool:
    """Files of a revision's folder that an update of `main` does not copy (written separately, or never)."""
    return path == "README.md" or path in files or path.startswith("training_state/")


class HubTarget:
    """One repo on one hub, as the publisher sees it.

    `token`: an explicit token for this hub; None picks the hub's own (see `select.resolve_token`: the
    stored huggingface.co token only ever goes to huggingface.co).
    """

    def __init__(self, hub: Hub, repo_id: str, *, token: str | bool | None = None, private: bool = False) -> None:
        self.repo_id = repo_id
        self.private = private
        self.token = resolve_token(hub, token)
        # Every read goes through it; it starts a local hub not started yet (targets are written to) and
        # installs the request timeouts.
        self.reader = HubReader(hub, repo_id, token=self.token)
        self._rate_limited_at: float | None = None  # when the hub last refused a commit (429), monotonic
        self._rate_window_s = 0.0  # and the window its budget counts over (RateLimit-Policy, else Retry-After)

    def _note_refusal(self, error: BaseException) -> None:
        """Remember a 429 from the hub's commit budget (the publisher then coalesces updates of `main` more)."""
        from huggingface_hub.utils import parse_ratelimit_headers

        if status_of(error) != 429:
            return
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        info = parse_ratelimit_headers(headers)
        window = info.window_seconds if info is not None and info.window_seconds else retry_after(error)
        self._rate_limited_at = time.monotonic()
        self._rate_window_s = min(float(window or 60.0), 3600.0)

    def rate_limited(self) -> float | None:
        """The window (seconds) of the commit budget that refused a commit of this repo within it; None if none did."""
        if self._rate_limited_at is None or time.monotonic() - self._rate_limited_at > self._rate_window_s:
            return None
        return self._rate_window_s

    @property
    def hub(self) -> Hub:
        """The hub, as the reader knows it: a local hub restarted on another port is followed (`HubReader.revive`)."""
        return self.reader.hub

    @property
    def api(self) -> HfApi:
        return self.reader.api

    def _retrying(self, action: Callable[[], T], *, what: str) -> T:
        """A write through `with_retries` (a refused connection: `reader.retrying`); a 403 is explained."""
        with self._explain_forbidden():
            return self.reader.retrying(action, what=what)

    @contextlib.contextmanager
    def _explain_forbidden(self) -> Iterator[None]:
        """Turn the hub's 403 on a write into `ReadOnlyTokenError` when the token is a read token.

        The Hub answers a read token's `create_repo` with "You don't have the rights to create a model
        under the namespace 'bob'", even in bob's own namespace; whoami tells the token's role.
        """
        try:
            yield
        except Exception as e:
            if status_of(e) == 403 and self.token_role() == "read":
                raise ReadOnlyTokenError(
                    f"The token for {self.hub.endpoint} is a read token: it cannot create or write to "
                    f"{self.repo_id} ({status_of(e)} from the hub). Publish with a write token: on a hubckpt "
                    "local hub `hubckpt token create --user NAME --role write`, on huggingface.co "
                    "https://huggingface.co/settings/tokens; pass it with --token / token= (or HUBCKPT_TOKEN, "
                    "HF_TOKEN for huggingface.co).",
                    role="read",
                ) from e
            raise

    def token_role(self) -> str | None:
        """The role of this target's token as the hub reports it (`read`, `write`, `fineGrained`); None if unknown."""
        try:
            try:
                info = self.api.whoami(token=self.token, cache=True)
            except TypeError:  # a huggingface_hub without whoami(cache=)
                info = self.api.whoami(token=self.token)
        except Exception:  # noqa: BLE001 - only used to explain another error, which must not be hidden by this one
            return None
        role = ((info.get("auth") or {}).get("accessToken") or {}).get("role") if isinstance(info, dict) else None
        return role if isinstance(role, str) else None

    @property
    def repo_url(self) -> str:
        return f"{self.hub.endpoint}/{self.repo_id}"

    def describe(self) -> str:
        return f"{self.repo_id} on {self.hub.describe()}"

    # -- reads (delegated to `self.reader`, shared with the consumer side) ---------------------------------------

    def ensure_repo(self) -> None:
        self._retrying(
            lambda: self.api.create_repo(self.repo_id, private=self.private, exist_ok=True),
            what=f"creating {self.repo_id}",
        )

    def read_index(self, revision: str = MAIN) -> tuple[RevisionIndex, str | None]:
        """(index, commit it was read at) with one request; an empty index if there is none yet."""
        return self.reader.read_index(revision)

    def read_bytes(self, path: str, revision: str) -> bytes | None:
        """A small file at a revision (None if absent)."""
        return self.reader.get(path, revision)[0]

    def read_json(self, path: str, revision: str) -> dict | None:
        """A small JSON file at a revision (None if absent)."""
        return self.reader.read_json(path, revision)

    def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """(branches, tags) as name → commit, with one request."""
        return self.reader.refs()

    def branches(self) -> dict[str, str]:
        return self.reader.branches()

    def list_files(self, revision: str) -> list[str]:
        """Every file path at `revision`."""
        return list(self.reader.list_files(revision))

    # -- writes -------------------------------------------------------------------------------------

    def commit_revision(
        self,
        name: str,
        folder: Path,
        *,
        start_from: str,
        message: str,
        manifest_sha256: str,
        replace: bool = False,
        extra_files: dict[str, bytes] | None = None,
        uploaded: list[CommitOperationAdd] | None = None,
    ) -> str:
        """Make branch `name` hold exactly `folder`, as one commit on top of `start_from`; return the commit.

        Files inherited from the starting revision that this one does not have are deleted in the same
        commit. The commit is made on the staging branch and `name` is created at it (module docstring),
        so `name` never exists without this revision's files. An existing `name` that does not hold this
        revision is either half-made (no checkpoint.json, or another step's: left by an interrupted publish
        of an older hubckpt) and is repaired, or a different checkpoint of the same step, which is a
        `RevisionCollisionError` unless `replace=True`. `extra_files` (path → bytes, e.g. this target's
        card as README.md) are committed too, in place of the folder's files of the same path. `uploaded`:
        operations for files other processes uploaded already (`uploaded.operation`: multi-rank publishing).
        """
        step = _folder_step(folder)
        branches = self.branches()
        staging = staging_branch(name)
        head = branches.get(name)
        if head is not None:
            manifest = self.read_json(MANIFEST_FILE, head)
            if manifest is not None and manifest_digest(manifest) == manifest_sha256:
                if staging in branches:  # a previous attempt stopped after creating the branch
                    self.delete_branch(staging)
                return head
            if manifest is not None and manifest.get("step") == step and not replace:
                raise RevisionCollisionError.of(self.repo_id, name, self.hub.endpoint)
        commit = branches.get(staging)
        if commit is None or not self._holds(commit, manifest_sha256):
            if commit is not None:
                self.delete_branch(staging)  # a different or half-finished attempt: start it again
            start = branches.get(start_from) or branches[MAIN]
            self._create_branch(staging, start)
            commit = self._commit_folder(
                staging, start, folder, message, manifest_sha256, extra_files or {}, uploaded or []
            )
        if head is not None:
            logger.warning(
                "branch %s of %s did not hold its revision (an interrupted publish); repairing it", name, self.repo_id
            )
            self.delete_branch(name)
        self._create_branch(name, commit)
        self.delete_branch(staging)
        return commit

    def _create_branch(self, name: str, revision: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self._retrying(
                lambda: self.api.create_branch(self.repo_id, branch=name, revision=revision),
                what=f"creating branch {name}",
            )
        except HfHubHTTPError as e:
            # 409: it exists; a retried request whose first attempt had landed ends here too. Only the
            # right commit will do.
            if status_of(e) != 409 or self.branches().get(name) != revision:
                raise

    def _commit_folder(
        self,
        branch: str,
        head: str,
        folder: Path,
        message: str,
        manifest_sha256: str,
        extra_files: dict[str, bytes],
        uploaded: list[CommitOperationAdd] | None = None,
    ) -> str:
        """One commit on `branch` (at `head`) that makes it hold exactly the files of `folder` (+ `extra_files`)."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        existing = self.list_files(head)
        uploaded = uploaded or []
        ours = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} | set(extra_files)
        ours |= {op.path_in_repo for op in uploaded}
        stale = [p for p in existing if p not in ours and p != ".gitattributes"]
        with contextlib.ExitStack() as stack, quiet_xet_notice():
            ops: list[CommitOperationAdd | CommitOperationDelete] = []
            ops += folder_operations(folder, stack, use_xet=self.hub.is_huggingface_co, skip=lambda p: p in extra_files)
            ops += [CommitOperationAdd(path, data) for path, data in sorted(extra_files.items())]
            ops += uploaded
            ops += [CommitOperationDelete(p) for p in stale]

            def send() -> str:
                _rewind(ops)
                return self.api.create_commit(
                    self.repo_id, ops, commit_message=message, revision=branch, parent_commit=head
                ).oid

            with self._explain_forbidden():
                return self._commit_once(send, branch, manifest_sha256)

    def _holds(self, commit: str, manifest_sha256: str) -> bool:
        manifest = self.read_json(MANIFEST_FILE, commit)
        return manifest is not None and manifest_digest(manifest) == manifest_sha256

    def landed_commit(self, branch: str, manifest_sha256: str) -> str | None:
        """The branch head if it already holds the revision with this manifest (a previous attempt landed)."""
        head = self.branches().get(branch)
        return head if head is not None and self._holds(head, manifest_sha256) else None

    def _commit_once(self, send: Callable[[], str], branch: str, manifest_sha256: str) -> str:
        """`send()` (a commit to `branch`) through `reader.retrying`, never committing the revision twice.

        A transient failure may hide a commit that landed: before each retry the branch is looked at
        (`settle`). A 412 (the branch moved) is our own earlier attempt when the branch holds the revision.
        A commit that keeps failing ends in `HubUnavailableError`, as every other request does.
        """
        from huggingface_hub.errors import HfHubHTTPError

        def attempt() -> str:
            try:
                return send()
            except HfHubHTTPError as e:
                self._note_refusal(e)
                landed = self.landed_commit(branch, manifest_sha256) if status_of(e) == 412 else None
                if landed:
                    return landed
                raise

        def settle(error: BaseException) -> str | None:
            landed = self.landed_commit(branch, manifest_sha256)
            if landed:
                logger.info("commit to %s had landed despite %s", branch, error)
            return landed

        return self.reader.retrying(attempt, what=f"committing to {branch} of {self.repo_id}", settle=settle)

    def update_main(
        self,
        mutate: Callable[[RevisionIndex], tuple[dict[str, bytes], Path | None, list[str], str]],
        attempts: int = 8,
        *,
        yield_to: Callable[[], bool] | None = None,
    ) -> tuple[str, RevisionIndex]:
        """Read the index at main's head, let `mutate` change it, commit with `parent_commit`; retry on conflict.

        `mutate(index)` returns (files to write on main: path → bytes, a folder whose files also go to main
        or None, paths to delete from main, commit message). `yield_to()`: asked when the hub's commit budget
        refuses the commit (429); True gives up at once (the 429 is raised) instead of waiting it out.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(1, attempts + 1):
            index, head = self.read_index()
            files, folder, deletes, message = mutate(index)
            with contextlib.ExitStack() as stack, quiet_xet_notice():
                ops: list[CommitOperationAdd | CommitOperationDelete] = []
                if folder is not None:
                    ops += folder_operations(
                        folder,
                        stack,
                        use_xet=self.hub.is_huggingface_co,
                        skip=partial(_kept_on_main, files),
                    )
                ops += [CommitOperationAdd(path, data) for path, data in sorted(files.items())]
                existing = set(self.list_files(head or MAIN)) if deletes else set()
                ops += [CommitOperationDelete(p) for p in deletes if p in existing]

                def send(ops: list = ops, message: str = message, head: str | None = head) -> str:
                    _rewind(ops)
                    try:
                        return self.api.create_commit(
                            self.repo_id, ops, commit_message=message, revision=MAIN, parent_commit=head
                        ).oid
                    except HfHubHTTPError as e:
                        self._note_refusal(e)
                        raise

                try:
                    with self._explain_forbidden():
                        commit = self.reader.retrying(
                            send,
                            what=f"updating main of {self.repo_id}",
                            give_up=(lambda _e: yield_to()) if yield_to is not None else None,
                        )
                    return commit, index
                except HfHubHTTPError as e:
                    if status_of(e) != 412 or attempt == attempts:
                        raise
                    logger.info("main of %s moved meanwhile; re-reading the index (attempt %d)", self.repo_id, attempt)
        raise AssertionError("unreachable")

    def move_tag(self, tag: str, revision: str) -> None:
        """Point `tag` at the head of `revision` (delete + create; tags cannot be updated in place)."""
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            self._retrying(lambda: self.api.delete_tag(self.repo_id, tag=tag), what=f"deleting tag {tag}")
        self._retrying(
            lambda: self.api.create_tag(self.repo_id, tag=tag, revision=revision, exist_ok=True),
            what=f"tagging {revision} as {tag}",
        )

    def delete_tag(self, tag: str) -> None:
        """Delete `tag` (no error if it is already gone)."""
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            self._retrying(lambda: self.api.delete_tag(self.repo_id, tag=tag), what=f"deleting tag {tag}")

    def delete_branch(self, name: str) -> None:
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            self._retrying(lambda: self.api.delete_branch(self.repo_id, branch=name), what=f"deleting branch {name}")


def _folder_step(folder: Path) -> int | None:
    try:
        return (read_manifest(folder) or {}).get("step")
    except (OSError, ValueError, AttributeError):
        return None
