"""The one place that talks to a hub for publishing: repos, revision branches, the index on `main`, tags.

Every change is a single `create_commit` (all-or-nothing). Writes to `main` are compare-and-swap
(`parent_commit`), re-read and retried on conflict. Transient failures (429, 5xx, timeouts, dropped
connections) are retried with backoff; a commit whose outcome is ambiguous (the request may have
landed) is settled by re-reading the branch before trying again, so a revision is never committed twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, TypeVar

from .commits import folder_operations, quiet_xet_notice
from .errors import HubckptError, HubUnavailableError
from .hubs import Hub, hub_api
from .revisions import INDEX_FILE, RevisionIndex

logger = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAIN = "main"


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, refused or dropped connections."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        return _status(error) in TRANSIENT_STATUS
    if isinstance(error, HubckptError):  # our own errors (disk full, bad checkpoint...) never heal by retrying
        return False
    # httpx2's transport errors (timeouts, refused or dropped connections), matched by class name along
    # the MRO so we need not import the client's transport library; plus the builtin network errors.
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(names & {"TransportError", "TimeoutException"})


def with_retries(action: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Run `action`, retrying transient failures with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as e:  # noqa: BLE001 - filtered by is_transient
            if not is_transient(e) or attempt == attempts:
                if is_transient(e):
                    raise HubUnavailableError(f"{what} failed {attempts} times; last error: {e}") from e
                raise
            delay = base_delay * 2 ** (attempt - 1)
            logger.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class HubTarget:
    """One repo on one hub, as the publisher sees it."""

    def __init__(self, hub: Hub, repo_id: str, *, token: str | bool | None = None, private: bool = False) -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.private = private
        self.api = hub_api(hub, token=token)
        self.token = token

    @property
    def key(self) -> str:
        """Stable id of this target in the journal."""
        return f"{self.hub.endpoint}/{self.repo_id}"

    @property
    def repo_url(self) -> str:
        return f"{self.hub.endpoint}/{self.repo_id}"

    def describe(self) -> str:
        return f"{self.repo_id} on {self.hub.describe()}"

    # -- reads --------------------------------------------------------------------------------------

    def ensure_repo(self) -> None:
        with_retries(lambda: self.api.create_repo(self.repo_id, private=self.private, exist_ok=True),
                     what=f"creating {self.repo_id}")

    def _get(self, path: str, revision: str) -> tuple[bytes | None, str | None]:
        """(content or None if the file is absent, commit it was read at) with one request.

        A missing repo or revision is an error, not an absent file.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.hub.endpoint)
        headers = build_hf_headers(token=self.token, library_name="hubckpt")

        def fetch():
            response = get_session().get(url, headers=headers, follow_redirects=True)
            commit = response.headers.get("x-repo-commit")
            if response.status_code == 404 and response.headers.get("x-error-code") == "EntryNotFound":
                return None, commit
            hf_raise_for_status(response)
            return response.content, commit

        return with_retries(fetch, what=f"reading {path}@{revision} of {self.repo_id}")

    def read_index(self, revision: str = MAIN) -> tuple[RevisionIndex, str | None]:
        """(index, commit it was read at) with one request; an empty index if there is none yet."""
        content, commit = self._get(INDEX_FILE, revision)
        return (RevisionIndex.from_json(content) if content is not None else RevisionIndex()), commit

    def read_json(self, path: str, revision: str) -> dict | None:
        """A small JSON file at a revision (None if absent)."""
        content, _ = self._get(path, revision)
        return json.loads(content) if content is not None else None

    def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """(branches, tags) as name → commit, with one request."""
        refs = with_retries(lambda: self.api.list_repo_refs(self.repo_id), what=f"listing refs of {self.repo_id}")
        return {b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags}

    def branches(self) -> dict[str, str]:
        return self.refs()[0]

    def list_files(self, revision: str = MAIN) -> list[str]:
        """Paths of every file at `revision`."""
        return with_retries(lambda: self.api.list_repo_files(self.repo_id, revision=revision),
                            what=f"listing {self.repo_id}@{revision}")

    # -- writes -------------------------------------------------------------------------------------

    def commit_revision(self, name: str, folder: Path, *, start_from: str, message: str,
                        manifest_sha256: str) -> str:
        """Create branch `name` at `start_from` and commit `folder` onto it as one commit; return the commit.

        Files inherited from the starting revision that this one does not have are deleted in the
        same commit, so the branch holds exactly `folder`.
        """
        from huggingface_hub import CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        branches = self.branches()
        if name not in branches:
            start = branches.get(start_from) or branches[MAIN]
            try:
                with_retries(lambda: self.api.create_branch(self.repo_id, branch=name, revision=start),
                             what=f"creating branch {name}")
            except HfHubHTTPError as e:
                if _status(e) != 409:
                    raise
            head = self.branches()[name]
        else:
            head = branches[name]
        if self._holds(head, manifest_sha256):  # a previous attempt already landed
            return head
        existing = with_retries(lambda: self.api.list_repo_files(self.repo_id, revision=head),
                                what=f"listing {name}")
        ours = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        stale = [p for p in existing if p not in ours and p != ".gitattributes"]
        with contextlib.ExitStack() as stack, quiet_xet_notice():
            ops = folder_operations(folder, stack, use_xet=self.hub.is_huggingface_co)
            ops += [CommitOperationDelete(p) for p in stale]

            def send() -> str:
                for op in ops:  # a retry must upload from the start of each stream
                    if hasattr(op.path_or_fileobj, "seek"):
                        op.path_or_fileobj.seek(0)
                return self.api.create_commit(self.repo_id, ops, commit_message=message, revision=name,
                                              parent_commit=head).oid

            return self._commit_once(send, name, manifest_sha256)

    def _holds(self, commit: str, manifest_sha256: str) -> bool:
        manifest = self.read_json("checkpoint.json", commit)
        return manifest is not None and _manifest_digest(manifest) == manifest_sha256

    def landed_commit(self, branch: str, manifest_sha256: str) -> str | None:
        """The branch head if it already holds the revision with this manifest (a previous attempt landed)."""
        head = self.branches().get(branch)
        return head if head is not None and self._holds(head, manifest_sha256) else None

    def _commit_once(self, send: Callable[[], str], branch: str, manifest_sha256: str, attempts: int = 5) -> str:
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(1, attempts + 1):
            try:
                return send()
            except Exception as e:  # noqa: BLE001 - ambiguous failures are settled below
                if isinstance(e, HfHubHTTPError) and _status(e) == 412:
                    landed = self.landed_commit(branch, manifest_sha256)
                    if landed:
                        return landed
                    raise
                if not is_transient(e) or attempt == attempts:
                    raise
                # The request may have been applied: look before sending it again.
                landed = self.landed_commit(branch, manifest_sha256)
                if landed:
                    logger.info("commit to %s had landed despite %s", branch, e)
                    return landed
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def update_main(self, mutate: Callable[[RevisionIndex], tuple[dict[str, bytes], Path | None, list[str], str]],
                    attempts: int = 8) -> tuple[str, RevisionIndex]:
        """Read the index at main's head, let `mutate` change it, commit with `parent_commit`; retry on conflict.

        `mutate(index)` returns (files to write on main: path → bytes, a folder whose files also go to main
        or None, paths to delete from main, commit message).
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(1, attempts + 1):
            index, head = self.read_index()
            files, folder, deletes, message = mutate(index)
            with contextlib.ExitStack() as stack, quiet_xet_notice():
                ops = []
                if folder is not None:
                    ops += folder_operations(folder, stack, use_xet=self.hub.is_huggingface_co,
                                             skip=lambda p: p == "README.md" or p in files
                                             or p.startswith("training_state/"))
                ops += [CommitOperationAdd(path, data) for path, data in sorted(files.items())]
                existing = set(with_retries(lambda: self.api.list_repo_files(self.repo_id, revision=head or MAIN),
                                            what="listing main"))
                ops += [CommitOperationDelete(p) for p in deletes if p in existing]
                try:
                    commit = with_retries(lambda: self.api.create_commit(
                        self.repo_id, ops, commit_message=message, revision=MAIN, parent_commit=head).oid,
                        what=f"updating main of {self.repo_id}")
                    return commit, index
                except HfHubHTTPError as e:
                    if _status(e) != 412 or attempt == attempts:
                        raise
                    logger.info("main of %s moved meanwhile; re-reading the index (attempt %d)", self.repo_id, attempt)
        raise AssertionError("unreachable")

    def move_tag(self, tag: str, revision: str) -> None:
        """Point `tag` at the head of `revision` (delete + create; tags cannot be updated in place)."""
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            self.api.delete_tag(self.repo_id, tag=tag)
        with_retries(lambda: self.api.create_tag(self.repo_id, tag=tag, revision=revision, exist_ok=True),
                     what=f"tagging {revision} as {tag}")

    def delete_tag(self, tag: str) -> None:
        """Delete `tag` (no error if it is already gone)."""
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            with_retries(lambda: self.api.delete_tag(self.repo_id, tag=tag), what=f"deleting tag {tag}")

    def delete_branch(self, name: str) -> None:
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):
            with_retries(lambda: self.api.delete_branch(self.repo_id, branch=name), what=f"deleting branch {name}")


def _manifest_digest(manifest: dict) -> str:
    """Identity of a revision's content: sha256 of its canonical manifest."""
    import hashlib

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


manifest_digest = _manifest_digest
