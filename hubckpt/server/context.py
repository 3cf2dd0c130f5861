"""Shared state of a running local hub and the helpers every route uses: who is calling, what they
may see or change, how to answer with a Hub-shaped error, and how to build absolute URLs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import HubHTTPError, InvalidNameError, NoSuchRevisionError
from ..names import validate_repo_part
from .blobs import BlobStore
from .rate import CommitBudget, commit_budget
from .storage import MetadataStore, Repo, TokenInfo, open_data_folder

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_USER = "local"


@dataclass(frozen=True)
class Caller:
    """Who sent a request. `name` is None for anonymous callers."""

    name: str | None
    role: str  # 'read' | 'write' | 'none'
    token: TokenInfo | None = None
    orgs: tuple[str, ...] = ()

    def owns(self, namespace: str) -> bool:
        if self.name is None:
            return False
        ns = namespace.lower()
        return ns == self.name.lower() or ns in (o.lower() for o in self.orgs)


@dataclass
class HubContext:
    """Everything a request handler needs: storage, settings, and the caller-independent secrets."""

    root: Path
    store: MetadataStore
    blobs: BlobStore
    local_user: str = DEFAULT_LOCAL_USER
    tree_page_size: int = 1000
    commits_page_size: int = 50
    discussions_page_size: int = 50  # discussions listing, as on the Hub
    list_page_size: int = 1000  # repo listings (`list_models`, `hf repos ls`), as on the Hub
    # Largest request body the API reads into memory (commits carry regular files inline; LFS bytes
    # stream to the data plane instead). Checked before anyone is authenticated, so it bounds what an
    # anonymous caller can make the hub buffer.
    max_body_bytes: int = 1024**3
    lfs_secret: bytes = field(default=b"", repr=False)
    data_plane_port: int | None = None  # set while a DataPlane serves object bytes on its own port
    # Set by whoever binds a non-loopback address: single-user mode is then refused per request too.
    exposed: bool = False
    # Commits per repo per window (`rate.py`); None: no budget (the default).
    commit_budget: CommitBudget | None = None
    # Counters for tests and benchmarks: API requests served, LFS bytes received.
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "lfs_bytes_received": 0})

    @classmethod
    def open(cls, root: Path, local_user: str = DEFAULT_LOCAL_USER, **settings: Any) -> HubContext:
        root = Path(root).expanduser().resolve()
        store = open_data_folder(
            root, **({"busy_timeout_s": settings.pop("busy_timeout_s")} if "busy_timeout_s" in settings else {})
        )
        blobs = BlobStore(root)
        store.add_account(local_user, "user")
        secret = store.meta_setdefault("lfs_secret", secrets.token_hex(32))
        settings["commit_budget"] = commit_budget(settings.pop("commit_rate", None), store)
        return cls(root=root, store=store, blobs=blobs, local_user=local_user, lfs_secret=secret.encode(), **settings)

    # -- who is calling -----------------------------------------------------------------------------

    @property
    def single_user(self) -> bool:
        """Until a token is first created, the hub serves its local user only (and only on loopback).

        Once on, authentication stays on even when every token is revoked (`hubckpt token auth-off`
        turns it off explicitly), so revoking the last token never opens an exposed hub to everyone.
        """
        return not self.store.auth_required()

    def caller(self, request: Request) -> Caller:
        auth = request.headers.get("authorization", "")
        token_value = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if self.single_user:
            if self.exposed:
                # Authentication was turned off behind the back of a server listening beyond loopback.
                raise HubHTTPError(
                    401,
                    "This hub listens beyond loopback and has no authentication; it serves "
                    "nobody until tokens exist (hubckpt token create).",
                )
            return Caller(self.local_user, "write", None, tuple(self.store.orgs_of(self.local_user)))
        if not token_value:
            return Caller(None, "none")
        info = self.store.authenticate(token_value)
        if info is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return Caller(info.user, info.role, info, tuple(self.store.orgs_of(info.user)))

    # -- access checks ------------------------------------------------------------------------------

    def can_read(self, repo: Repo, caller: Caller) -> bool:
        return not repo.private or self.single_user or caller.owns(repo.namespace)

    def can_write_namespace(self, namespace: str, caller: Caller) -> bool:
        if self.single_user:
            return True
        return caller.role == "write" and caller.owns(namespace)

    def can_write(self, repo: Repo, caller: Caller) -> bool:
        return self.can_write_namespace(repo.namespace, caller)

    def repo_to_propose(self, namespace: str, name: str, caller: Caller) -> Repo:
        """The repo, for opening a discussion or pull request, commenting, or pushing to one's own PR.

        As on huggingface.co, this needs a write token but not write access to the repo: anyone who
        can see a repo may propose changes to it. Read tokens and anonymous callers may not.
        """
        repo = self.repo_for(namespace, name, caller)
        if self.single_user or caller.role == "write":
            return repo
        if caller.name is None:
            raise HubHTTPError(401, "You must be authenticated to take part in discussions. Pass a write token.")
        raise HubHTTPError(
            403,
            f"Your token is {caller.role}-only: opening or commenting on discussions of {repo.repo_id} "
            "needs a write token.",
        )

    def repo_for(self, namespace: str, name: str, caller: Caller, *, write: bool = False) -> Repo:
        """The repo, or the Hub's RepoNotFound (also for private repos the caller may not see)."""
        repo = self.store.get_repo(namespace, name)
        if repo is None or not self.can_read(repo, caller):
            raise repo_not_found(caller)
        if write and not self.can_write_namespace(repo.namespace, caller):
            if caller.name is None:
                raise HubHTTPError(401, "You must be authenticated to write to this repository. Pass a write token.")
            raise HubHTTPError(
                403,
                f"You don't have the rights to write to {repo.repo_id}: "
                f"your token is {caller.role}-only or you are not a member of {repo.namespace}.",
            )
        return repo

    def resolve(self, repo: Repo, revision: str) -> str:
        sha = self.store.resolve(repo, revision)
        if sha is None:
            raise NoSuchRevisionError(revision)
        return sha

    # -- signed LFS upload URLs (the client PUTs without credentials) ------------------------------

    def sign(self, *parts: object) -> str:
        message = ":".join(str(p) for p in parts).encode()
        return hmac.new(self.lfs_secret, message, hashlib.sha256).hexdigest()

    def check_signature(self, signature: str, expires: int, *parts: object) -> None:
        # Bytes: compare_digest raises TypeError (a 500) on a non-ASCII str, and the signature is the caller's.
        given = signature.encode("utf-8", "surrogateescape")
        if expires < time.time() or not hmac.compare_digest(given, self.sign(*parts, expires).encode()):
            raise HubHTTPError(
                403, "This upload URL is invalid or has expired; request a new one from the LFS batch API."
            )

    # -- fault injection (tests only) ---------------------------------------------------------------

    @staticmethod
    def fault(point: str) -> None:
        """Kill the process at a named point when HUBCKPT_FAULT=server.<point>:kill (crash-safety tests)."""
        from ..faults import fault

        fault(f"server.{point}")


def repo_not_found(caller: Caller) -> HubHTTPError:
    # The Hub answers 401 to anonymous callers and 404 otherwise; X-Error-Code makes both a RepositoryNotFoundError.
    status = 401 if caller.name is None else 404
    return HubHTTPError(status, "Repository not found", "RepoNotFound")


def split_namespace_name(namespace: str, name: str) -> tuple[str, str]:
    try:
        validate_repo_part(namespace, "namespace")
        validate_repo_part(name, "repo name")
    except InvalidNameError as e:
        raise HubHTTPError(400, str(e)) from e
    return namespace, name


def base_url(request: Request) -> str:
    """scheme://host[:port][/prefix] exactly as the client addressed us (URLs in bodies must match)."""
    return str(request.base_url).rstrip("/")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: HubHTTPError) -> Response:
    headers = dict(error.headers)
    if error.code:
        headers["X-Error-Code"] = error.code
    # Header values must be latin-1; the JSON body carries the full message.
    headers["X-Error-Message"] = error.message.encode("ascii", "replace").decode()[:1000]
    body = {"error": error.message, **error.extra}
    return json_response(body, error.status, headers)
