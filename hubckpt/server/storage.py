"""Metadata of the local hub: users, tokens, repos, commits, file trees and refs, in SQLite.

The database is `hub.sqlite3` in the data folder, in WAL mode. Every operation that changes a
repo is one transaction, so a server killed at any point shows either the old state or the new
one, never half a commit. Branch updates are compare-and-swap: a commit whose `parent_commit` is
no longer the branch head is refused (`StaleParentError`) and nothing is written.

This layer knows nothing of HTTP: it raises the domain errors of `hubckpt.errors` (`HubStateError`
and its subclasses, `StorageBusyError`), which `http_errors.py` maps to statuses in one place.

Concurrency: writes go through one connection, one lock and `BEGIN IMMEDIATE`; reads use one
connection per thread, so (in WAL mode) they never wait for a writer.

Each commit stores the full list of its files (path → object), which keeps reads trivial and is
cheap for checkpoint repos (a handful of files per revision). File contents live in the
content-addressed `BlobStore` (see `blobs.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import (
    AuthError,
    NoSuchEntryError,
    NoSuchRevisionError,
    RepoExistsError,
    StaleParentError,
    StorageBusyError,
    StorageError,
)
from .blobs import git_blob_sha1

# 2: repos.gated ('' | 'manual' | 'auto'); meta 'auth' ('on' once a token was ever created).
# 3: discussions and discussion_events (pull requests: their head is the branch ref 'refs/pr/<num>').
# 4: commit_window (the commit budget's recent commits per repo, so a restart keeps counting);
#    commits.merge_parent (a pull request's merge commit records the PR head as its second parent).
SCHEMA_VERSION = 4
DEFAULT_BUSY_TIMEOUT_S = 30.0
MAX_READERS = 8  # read connections (WAL: readers never wait for the writer)
GATED_VALUES = ("", "manual", "auto")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY COLLATE NOCASE, fullname TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('user', 'org')),
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memberships (
    org TEXT NOT NULL COLLATE NOCASE, user TEXT NOT NULL COLLATE NOCASE, PRIMARY KEY (org, user));
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY, user TEXT NOT NULL COLLATE NOCASE, role TEXT NOT NULL CHECK (role IN ('read', 'write')),
    display_name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, hint TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY, namespace TEXT NOT NULL COLLATE NOCASE, name TEXT NOT NULL COLLATE NOCASE,
    private INTEGER NOT NULL, created_at TEXT NOT NULL, last_modified TEXT NOT NULL, gated TEXT NOT NULL DEFAULT '',
    UNIQUE (namespace, name));
CREATE TABLE IF NOT EXISTS commits (
    repo_id INTEGER NOT NULL, sha TEXT NOT NULL, parent TEXT, title TEXT NOT NULL, message TEXT NOT NULL,
    author TEXT NOT NULL, date TEXT NOT NULL, merge_parent TEXT, PRIMARY KEY (repo_id, sha));
CREATE TABLE IF NOT EXISTS commit_files (
    repo_id INTEGER NOT NULL, commit_sha TEXT NOT NULL, path TEXT NOT NULL, git_oid TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, lfs INTEGER NOT NULL, last_commit TEXT NOT NULL,
    PRIMARY KEY (repo_id, commit_sha, path));
CREATE TABLE IF NOT EXISTS refs (
    repo_id INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('branch', 'tag')), name TEXT NOT NULL,
    target TEXT NOT NULL, PRIMARY KEY (repo_id, kind, name));
CREATE TABLE IF NOT EXISTS repo_objects (repo_id INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (repo_id, sha256));
CREATE TABLE IF NOT EXISTS discussions (
    repo_id INTEGER NOT NULL, num INTEGER NOT NULL, title TEXT NOT NULL, author TEXT NOT NULL,
    is_pr INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('draft', 'open', 'closed', 'merged')),
    created_at TEXT NOT NULL, target_branch TEXT, base_commit TEXT, merge_commit TEXT,
    PRIMARY KEY (repo_id, num));
CREATE TABLE IF NOT EXISTS discussion_events (
    id TEXT PRIMARY KEY, repo_id INTEGER NOT NULL, num INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    author TEXT NOT NULL, created_at TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS discussion_events_by_num ON discussion_events (repo_id, num, seq);
CREATE TABLE IF NOT EXISTS commit_window (repo_id INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS commit_window_by_repo ON commit_window (repo_id, at);
"""

# A pull request's head is a branch ref named `refs/pr/<num>`. `validate_ref_name` refuses names under
# `refs/`, so no user branch can take one; listings show these refs as pull requests, not branches.
PR_REF_PREFIX = "refs/pr/"


def utc_now() -> str:
    """Current time as the Hub writes dates: ISO-8601 UTC with a trailing 'Z'."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_token(value: str) -> str:
    """Tokens are stored as their sha256 only; the value is shown once, at creation."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Repo:
    id: int
    namespace: str
    name: str
    private: bool
    created_at: str
    last_modified: str
    gated: str = ""  # '' (not gated), 'manual' or 'auto', as `update_repo_settings(gated=...)` sets it

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class FileEntry:
    path: str
    git_oid: str  # git blob sha1 of the content (regular) or of the LFS pointer (LFS)
    sha256: str
    size: int
    lfs: bool
    last_commit: str


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None  # the first parent: the branch head the commit was made on (None: a root commit)
    title: str
    message: str
    author: str
    date: str
    merge_parent: str | None = None  # a pull request's merge commit: the PR head it merged

    @property
    def parents(self) -> tuple[str, ...]:
        """Every parent, first parent first (two for a merge commit, as git records them)."""
        return tuple(p for p in (self.parent, self.merge_parent) if p)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user: str
    role: str
    display_name: str
    hint: str
    created_at: str


@dataclass(frozen=True)
class Operation:
    """One change of a commit. kind: 'add' (path, sha256, size, lfs, git_oid), 'delete_file', 'delete_folder'."""

    kind: str
    path: str
    sha256: str = ""
    size: int = 0
    lfs: bool = False
    git_oid: str = ""


@dataclass(frozen=True)
class Discussion:
    """A discussion or pull request of a repo; a pull request's head is the branch `refs/pr/<num>`."""

    repo_id: int
    num: int
    title: str
    author: str
    is_pr: bool
    status: str  # 'draft' | 'open' | 'closed' | 'merged'
    created_at: str
    target_branch: str | None  # pull requests: the branch it merges into
    base_commit: str | None  # pull requests: the commit the PR branched from
    merge_commit: str | None  # merged pull requests: the merge commit on the target branch

    @property
    def ref(self) -> str:
        return f"{PR_REF_PREFIX}{self.num}"


@dataclass(frozen=True)
class DiscussionEvent:
    """One event of a discussion. data: comment {history: [{raw, updatedAt, author}] newest first,
    hidden}; status-change {status}; commit {subject, oid}; title-change {from, to}."""

    id: str
    num: int
    type: str
    author: str
    created_at: str
    data: dict


@dataclass(frozen=True)
class MergeOutcome:
    """Result of `merge_pull_request`: the merge commit, or the paths changed on both sides (nothing written)."""

    commit: str | None
    conflicts: list[str]


def _tree_sha(files: Iterable[FileEntry]) -> str:
    h = hashlib.sha1()
    for entry in sorted(files, key=lambda e: e.path):
        h.update(f"{entry.path}\0{entry.git_oid}\n".encode())
    return h.hexdigest()


def _commit_sha(
    tree: str, parent: str | None, author: str, date: str, title: str, message: str, merge_parent: str | None = None
) -> str:
    merged = f"parent {merge_parent}\n" if merge_parent else ""  # as git: one line per parent
    body = f"tree {tree}\nparent {parent or ''}\n{merged}author {author} {date}\n\n{title}\n\n{message}"
    return hashlib.sha1(f"commit {len(body.encode())}\0{body}".encode()).hexdigest()


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _busy(error: sqlite3.OperationalError) -> StorageBusyError:
    return StorageBusyError(
        f"The local hub database is busy ({error}); another process may be writing to it. Retry in a moment."
    )


class MetadataStore:
    """SQLite-backed metadata; thread-safe (one write connection and lock, one read connection per thread)."""

    def __init__(self, path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        # A bounded pool of read connections, lent to one thread at a time. (Per-thread connections
        # would pile up: worker threads come and go, and SQLite keeps the descriptors of closed
        # connections open while another connection of the process holds a lock on the file.)
        self._readers: queue.LifoQueue = queue.LifoQueue()
        self._reader_list: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self._db = self._connect()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise _busy(e) from e
            raise StorageError(f"Cannot open the local hub database {path}: {e}. Is it a hubckpt data folder?") from e
        except sqlite3.DatabaseError as e:
            raise StorageError(f"Cannot open the local hub database {path}: {e}. Is it a hubckpt data folder?") from e
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) > SCHEMA_VERSION:
            raise StorageError(f"{path} was written by a newer hubckpt (schema {row['value']}); upgrade hubckpt.")
        elif int(row["value"]) < SCHEMA_VERSION:
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        self._lock = threading.RLock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout_s)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _migrate(self) -> None:
        """Bring a data folder written by an older hubckpt up to this schema (idempotent)."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(repos)")}
        if "gated" not in columns:
            self._db.execute("ALTER TABLE repos ADD COLUMN gated TEXT NOT NULL DEFAULT ''")
        # Schema 4: a commit's second parent (merge commits of pull requests; NULL for every older commit).
        if "merge_parent" not in {r["name"] for r in self._db.execute("PRAGMA table_info(commits)")}:
            self._db.execute("ALTER TABLE commits ADD COLUMN merge_parent TEXT")
        # Folders from before the 'auth' flag: a folder that has tokens requires them.
        if self._db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('auth', 'on')")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()
        with self._readers_lock:
            for db in self._reader_list:
                db.close()
            self._reader_list.clear()

    # -- helpers ---------------------------------------------------------------------------------

    def _borrow_reader(self) -> sqlite3.Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._readers_lock:
            if self._closed:
                raise StorageError("The local hub database is closed.")
            if len(self._reader_list) < MAX_READERS:
                db = self._connect()
                self._reader_list.append(db)
                return db
        return self._readers.get()

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            if self._lock._is_owned():  # type: ignore[attr-defined]  # inside a write: see its own changes
                return self._db.execute(sql, args).fetchall()
            db = self._borrow_reader()
            try:
                return db.execute(sql, args).fetchall()
            finally:
                self._readers.put(db)
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise _busy(e) from e
            raise

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                # One busy timeout for the whole wait (this lock, then SQLite's): writers queued behind a
                # locked database all give up after it, instead of taking turns at waiting it out.
                deadline = time.monotonic() + store.busy_timeout_s
                if not store._lock.acquire(timeout=store.busy_timeout_s):
                    raise StorageBusyError(
                        f"The local hub is busy: another write has held the database for over "
                        f"{store.busy_timeout_s:g} s. Retry in a moment."
                    )
                try:
                    remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                    store._db.execute(f"PRAGMA busy_timeout={remaining_ms}")
                    store._db.execute("BEGIN IMMEDIATE")
                except BaseException as e:
                    # Without this, a failed BEGIN (database locked by another process past the busy
                    # timeout) kept the lock forever and every later write blocked.
                    store._lock.release()
                    if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
                        raise _busy(e) from e
                    raise
                return store._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    if exc_type is None:
                        try:
                            store._db.execute("COMMIT")
                        except sqlite3.OperationalError as e:
                            store._db.execute("ROLLBACK")
                            if _is_busy(e):
                                raise _busy(e) from e
                            raise
                    else:
                        store._db.execute("ROLLBACK")
                finally:
                    store._lock.release()
                return False

        return _Tx()

    def meta_get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None

    def meta_set(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_setdefault(self, key: str, value: str) -> str:
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            return db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()["value"]

    # -- accounts and tokens ---------------------------------------------------------------------

    def add_account(self, name: str, kind: str, fullname: str | None = None, exist_ok: bool = True) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT kind FROM accounts WHERE name=?", (name,)).fetchone()
            if row is not None:
                if row["kind"] != kind:
                    raise AuthError(f"{name!r} already exists as an {row['kind']}, not a {kind}.")
                if not exist_ok:
                    raise AuthError(f"The {kind} {name!r} already exists.")
                if fullname:
                    db.execute("UPDATE accounts SET fullname=? WHERE name=?", (fullname, name))
                return
            db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (name, fullname or name, kind, utc_now()))

    def account(self, name: str) -> sqlite3.Row | None:
        rows = self._query("SELECT * FROM accounts WHERE name=?", (name,))
        return rows[0] if rows else None

    def list_accounts(self) -> list[sqlite3.Row]:
        return self._query("SELECT * FROM accounts ORDER BY kind DESC, name")

    def add_member(self, org: str, user: str) -> None:
        self.add_account(org, "org")
        if self.account(user) is None:
            raise AuthError(f"Unknown user {user!r}. Create it first: hubckpt user add {user}")
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO memberships VALUES (?, ?)", (org, user))

    def orgs_of(self, user: str) -> list[str]:
        return [
            r["org"]
            for r in self._query(
                "SELECT a.name AS org FROM memberships m JOIN accounts a ON a.name = m.org "
                "WHERE m.user=? ORDER BY a.name",
                (user,),
            )
        ]

    def create_token(self, user: str, role: str, display_name: str, value: str | None = None) -> tuple[TokenInfo, str]:
        """Create (or register a given) token for `user`; returns its info and the value."""
        if role not in ("read", "write"):
            raise AuthError(f"Unknown role {role!r}: use 'read' or 'write'.")
        row = self.account(user)
        if row is None or row["kind"] != "user":
            raise AuthError(f"Unknown user {user!r}. Create it first: hubckpt user add {user}")
        if value is None:
            value = "hf_" + secrets.token_urlsafe(30)
        elif len(value) < 8 or any(c.isspace() for c in value):
            raise AuthError("A token value must be at least 8 characters, without whitespace.")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM tokens WHERE token_hash=?", (hash_token(value),)).fetchone():
                raise AuthError("This token value is already registered.")
            if db.execute("SELECT 1 FROM tokens WHERE user=? AND display_name=?", (user, display_name)).fetchone():
                raise AuthError(f"User {user!r} already has a token named {display_name!r}.")
            cur = db.execute(
                "INSERT INTO tokens (user, role, display_name, token_hash, hint, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (row["name"], role, display_name, hash_token(value), value[-4:], utc_now()),
            )
            token_id = cur.lastrowid
            # Authentication, once on, stays on: revoking every token must not open the hub to everyone.
            db.execute("INSERT OR REPLACE INTO meta VALUES ('auth', 'on')")
        return self.token(token_id), value

    def token(self, token_id: int) -> TokenInfo:
        rows = self._query("SELECT * FROM tokens WHERE id=?", (token_id,))
        if not rows:
            raise AuthError(f"No token with id {token_id}.")
        return _token_info(rows[0])

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        if user is None:
            rows = self._query("SELECT * FROM tokens ORDER BY id")
        else:
            rows = self._query("SELECT * FROM tokens WHERE user=? ORDER BY id", (user,))
        return [_token_info(r) for r in rows]

    def revoke_token(self, token_id: int) -> TokenInfo:
        info = self.token(token_id)
        with self._transaction() as db:
            db.execute("DELETE FROM tokens WHERE id=?", (token_id,))
        return info

    def authenticate(self, value: str) -> TokenInfo | None:
        rows = self._query("SELECT * FROM tokens WHERE token_hash=?", (hash_token(value),))
        return _token_info(rows[0]) if rows else None

    def has_tokens(self) -> bool:
        return bool(self._query("SELECT 1 FROM tokens LIMIT 1"))

    def auth_required(self) -> bool:
        """True once a token was ever created, until `disable_auth()`: then every caller needs a token."""
        return self.meta_get("auth") == "on"

    def disable_auth(self) -> None:
        """Back to single-user mode (the caller checks that no server listens beyond loopback)."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone():
                raise AuthError("Tokens still exist; revoke them first (hubckpt token list / token revoke).")
            db.execute("DELETE FROM meta WHERE key='auth'")

    # -- repos -----------------------------------------------------------------------------------

    def get_repo(self, namespace: str, name: str) -> Repo | None:
        rows = self._query("SELECT * FROM repos WHERE namespace=? AND name=?", (namespace, name))
        return _repo(rows[0]) if rows else None

    def list_repos(self) -> list[Repo]:
        return [_repo(r) for r in self._query("SELECT * FROM repos ORDER BY namespace, name")]

    def repo_by_id(self, repo_db_id: int) -> Repo | None:
        rows = self._query("SELECT * FROM repos WHERE id=?", (repo_db_id,))
        return _repo(rows[0]) if rows else None

    def repo_storage(self, repo: Repo) -> int:
        """Bytes of the distinct objects the repo's commits reference (each object counted once)."""
        rows = self._query(
            "SELECT COALESCE(SUM(size), 0) AS total FROM (SELECT DISTINCT sha256, size FROM commit_files "
            "WHERE repo_id=?)",
            (repo.id,),
        )
        return int(rows[0]["total"])

    def create_repo(
        self, namespace: str, name: str, private: bool, author: str, gitattributes: str, gitattributes_sha256: str
    ) -> Repo | None:
        """Create a repo with its 'initial commit' on main; None if it already exists."""
        now = utc_now()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE namespace=? AND name=?", (namespace, name)).fetchone():
                return None
            cur = db.execute(
                "INSERT INTO repos (namespace, name, private, created_at, last_modified) VALUES (?,?,?,?,?)",
                (namespace, name, int(private), now, now),
            )
            repo_id = cur.lastrowid
            data = gitattributes.encode()
            entry = FileEntry(".gitattributes", git_blob_sha1(data), gitattributes_sha256, len(data), False, "")
            sha = _commit_sha(_tree_sha([entry]), None, author, now, "initial commit", "")
            db.execute(
                "INSERT INTO commits (repo_id, sha, parent, title, message, author, date) VALUES (?,?,?,?,?,?,?)",
                (repo_id, sha, None, "initial commit", "", author, now),
            )
            db.execute(
                "INSERT INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                (repo_id, sha, entry.path, entry.git_oid, entry.sha256, entry.size, 0, sha),
            )
            db.execute("INSERT INTO refs VALUES (?, 'branch', 'main', ?)", (repo_id, sha))
            db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo_id, gitattributes_sha256))
        return self.get_repo(namespace, name)

    def delete_repo(self, repo: Repo) -> None:
        with self._transaction() as db:
            for table in (
                "refs",
                "commit_files",
                "commits",
                "repo_objects",
                "discussions",
                "discussion_events",
                "commit_window",
            ):
                db.execute(f"DELETE FROM {table} WHERE repo_id=?", (repo.id,))
            db.execute("DELETE FROM repos WHERE id=?", (repo.id,))

    def set_private(self, repo: Repo, private: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE repos SET private=? WHERE id=?", (int(private), repo.id))

    def set_gated(self, repo: Repo, gated: str) -> None:
        """'' (not gated), 'manual' or 'auto'."""
        if gated not in GATED_VALUES:
            raise ValueError(f"gated must be one of {GATED_VALUES}, not {gated!r}")
        with self._transaction() as db:
            db.execute("UPDATE repos SET gated=? WHERE id=?", (gated, repo.id))

    def move_repo(self, repo: Repo, namespace: str, name: str) -> None:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE namespace=? AND name=?", (namespace, name)).fetchone():
                raise RepoExistsError(f"{namespace}/{name}")
            db.execute("UPDATE repos SET namespace=?, name=? WHERE id=?", (namespace, name, repo.id))

    # -- refs and revisions ----------------------------------------------------------------------

    def refs(self, repo: Repo) -> list[sqlite3.Row]:
        return self._query("SELECT kind, name, target FROM refs WHERE repo_id=? ORDER BY kind, name", (repo.id,))

    def ref(self, repo: Repo, kind: str, name: str) -> str | None:
        rows = self._query("SELECT target FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name))
        return rows[0]["target"] if rows else None

    def resolve(self, repo: Repo, revision: str) -> str | None:
        """Commit sha of a branch, tag, full or short (≥5 hex) sha; None if unknown or ambiguous."""
        target = self.ref(repo, "branch", revision) or self.ref(repo, "tag", revision)
        if target:
            return target
        rev = revision.lower()
        if 5 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev):
            rows = self._query("SELECT sha FROM commits WHERE repo_id=? AND sha LIKE ? LIMIT 2", (repo.id, rev + "%"))
            if len(rows) == 1:
                return rows[0]["sha"]
        return None

    def create_ref(self, repo: Repo, kind: str, name: str, target: str) -> bool:
        """Create a branch or tag; False if it already exists."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name)).fetchone():
                return False
            db.execute("INSERT INTO refs VALUES (?,?,?,?)", (repo.id, kind, name, target))
            db.execute("UPDATE repos SET last_modified=? WHERE id=?", (utc_now(), repo.id))
        return True

    def delete_ref(self, repo: Repo, kind: str, name: str) -> bool:
        with self._transaction() as db:
            cur = db.execute("DELETE FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name))
            db.execute("UPDATE repos SET last_modified=? WHERE id=?", (utc_now(), repo.id))
        return cur.rowcount > 0

    # -- commits and trees -----------------------------------------------------------------------

    def commit(self, repo: Repo, sha: str) -> Commit | None:
        rows = self._query("SELECT * FROM commits WHERE repo_id=? AND sha=?", (repo.id, sha))
        return _commit(rows[0]) if rows else None

    def history(self, repo: Repo, head: str) -> list[Commit]:
        """Commits reachable from `head`, newest first."""
        rows = self._query(
            """WITH RECURSIVE chain(sha) AS (SELECT ? UNION ALL
                   SELECT c.parent FROM commits c JOIN chain ON c.sha = chain.sha
                   WHERE c.repo_id = ? AND c.parent IS NOT NULL)
               SELECT c.* FROM chain JOIN commits c ON c.sha = chain.sha AND c.repo_id = ?""",
            (head, repo.id, repo.id),
        )
        return [_commit(r) for r in rows]

    def files(self, repo: Repo, sha: str) -> dict[str, FileEntry]:
        rows = self._query("SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=? ORDER BY path", (repo.id, sha))
        return {
            r["path"]: FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), r["last_commit"])
            for r in rows
        }

    def has_repo_object(self, repo: Repo, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM repo_objects WHERE repo_id=? AND sha256=?", (repo.id, sha256)))

    def object_repos(self, sha256: str) -> list[Repo]:
        return [
            _repo(r)
            for r in self._query(
                "SELECT r.* FROM repo_objects o JOIN repos r ON r.id = o.repo_id WHERE o.sha256=?", (sha256,)
            )
        ]

    def add_repo_object(self, repo: Repo, sha256: str) -> None:
        self.add_repo_object_by_id(repo.id, sha256)

    def add_repo_object_by_id(self, repo_db_id: int, sha256: str) -> None:
        """Record that a repo may reference an object (ignored if the repo was deleted meanwhile)."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE id=?", (repo_db_id,)).fetchone():
                db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo_db_id, sha256))

    def create_commit(
        self,
        repo: Repo,
        branch: str,
        operations: list[Operation],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        fault_hook=None,
    ) -> str:
        """Apply `operations` on top of `branch` in one transaction; return the new commit sha.

        Raises NoSuchRevisionError (unknown branch), NoSuchEntryError (deleting a missing file),
        StaleParentError (`parent_commit` is not the head of `branch`).
        """
        with self._transaction() as db:
            return self._apply_commit(
                db,
                repo,
                branch,
                operations,
                title=title,
                message=message,
                author=author,
                parent_commit=parent_commit,
                fault_hook=fault_hook,
            )

    def _apply_commit(
        self,
        db: sqlite3.Connection,
        repo: Repo,
        branch: str,
        operations: list[Operation],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        fault_hook=None,
        merge_parent: str | None = None,
    ) -> str:
        """`create_commit` inside an open transaction (also used to open a pull request with its commit,
        and to merge one: `merge_parent` is then the PR head, recorded as the commit's second parent)."""
        row = db.execute(
            "SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?", (repo.id, branch)
        ).fetchone()
        if row is None:
            raise NoSuchRevisionError(branch)
        head = row["target"]
        if parent_commit is not None and not head.startswith(parent_commit.lower()):
            raise StaleParentError("The branch was updated since you opened this page. Please refresh and try again.")
        files = {
            r["path"]: FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), r["last_commit"])
            for r in db.execute("SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=?", (repo.id, head))
        }
        changed: dict[str, FileEntry] = {}
        for op in operations:
            if op.kind == "add":
                changed[op.path] = files[op.path] = FileEntry(op.path, op.git_oid, op.sha256, op.size, op.lfs, "")
                continue
            prefix = op.path.rstrip("/") + "/"
            in_folder = [p for p in files if p.startswith(prefix)]
            if op.kind == "delete_file" and op.path in files:
                del files[op.path]
            elif in_folder:  # deletedFolder, or deletedFile on a folder path (the Hub accepts both)
                for p in in_folder:
                    del files[p]
            else:
                raise NoSuchEntryError(op.path)
        now = utc_now()
        sha = _commit_sha(_tree_sha(files.values()), head, author, now, title, message, merge_parent)
        db.execute(
            "INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?,?)",
            (repo.id, sha, head, title, message, author, now, merge_parent),
        )
        for entry in files.values():
            # A path keeps its last commit while its content is unchanged; any add with new content moves it.
            old = (
                db.execute(
                    "SELECT git_oid, last_commit FROM commit_files WHERE repo_id=? AND commit_sha=? AND path=?",
                    (repo.id, head, entry.path),
                ).fetchone()
                if entry.path in changed
                else None
            )
            if entry.path in changed:
                last = old["last_commit"] if old is not None and old["git_oid"] == entry.git_oid else sha
            else:
                last = entry.last_commit
            db.execute(
                "INSERT OR REPLACE INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                (repo.id, sha, entry.path, entry.git_oid, entry.sha256, entry.size, int(entry.lfs), last),
            )
            db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo.id, entry.sha256))
        if fault_hook is not None:
            fault_hook("commit.before_ref_update")
        db.execute("UPDATE refs SET target=? WHERE repo_id=? AND kind='branch' AND name=?", (sha, repo.id, branch))
        db.execute("UPDATE repos SET last_modified=? WHERE id=?", (now, repo.id))
        if branch.startswith(PR_REF_PREFIX):
            self._pr_commit_event(db, repo, int(branch[len(PR_REF_PREFIX) :]), author, now, title, sha)
        return sha

    def squash(self, repo: Repo, branch: str, message: str, author: str) -> str:
        """Replace the history of `branch` by one commit holding its current files."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?", (repo.id, branch)
            ).fetchone()
            if row is None:
                raise NoSuchRevisionError(branch)
            rows = db.execute(
                "SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=?", (repo.id, row["target"])
            ).fetchall()
            entries = [FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), "") for r in rows]
            now = utc_now()
            title = message.split("\n", 1)[0]
            sha = _commit_sha(_tree_sha(entries), None, author, now, title, message)
            db.execute(
                "INSERT OR IGNORE INTO commits (repo_id, sha, parent, title, message, author, date) "
                "VALUES (?,?,?,?,?,?,?)",
                (repo.id, sha, None, title, message, author, now),
            )
            for e in entries:
                db.execute(
                    "INSERT OR REPLACE INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                    (repo.id, sha, e.path, e.git_oid, e.sha256, e.size, int(e.lfs), sha),
                )
            db.execute("UPDATE refs SET target=? WHERE repo_id=? AND kind='branch' AND name=?", (sha, repo.id, branch))
        return sha

    # -- the commit budget --------------------------------------------------------------------------

    def take_commit_slot(self, repo: Repo, now: float, limit: int, period_s: float) -> tuple[bool, list[float]]:
        """Count one commit to `repo` at `now` if fewer than `limit` were counted in the `period_s` before.

        Returns (counted, the window's commit times, oldest first, the new one included when counted).
        One transaction, so concurrent commits cannot both take the last slot; the window lives in
        the database, so a restarted hub keeps counting. Times are wall-clock seconds: one recorded
        "in the future" (the clock was set back) counts as made now.
        """
        with self._transaction() as db:
            db.execute("DELETE FROM commit_window WHERE repo_id=? AND at<=?", (repo.id, now - period_s))
            db.execute("UPDATE commit_window SET at=? WHERE repo_id=? AND at>?", (now, repo.id, now))
            times = [
                r["at"] for r in db.execute("SELECT at FROM commit_window WHERE repo_id=? ORDER BY at", (repo.id,))
            ]
            if len(times) >= limit:
                return False, times
            db.execute("INSERT INTO commit_window VALUES (?, ?)", (repo.id, now))
        return True, [*times, now]

    # -- discussions and pull requests -------------------------------------------------------------

    def discussions(self, repo: Repo) -> list[Discussion]:
        """All discussions of a repo, newest first."""
        rows = self._query("SELECT * FROM discussions WHERE repo_id=? ORDER BY num DESC", (repo.id,))
        return [_discussion(r) for r in rows]

    def discussion(self, repo: Repo, num: int) -> Discussion | None:
        rows = self._query("SELECT * FROM discussions WHERE repo_id=? AND num=?", (repo.id, num))
        return _discussion(rows[0]) if rows else None

    def discussion_events(self, repo: Repo, num: int) -> list[DiscussionEvent]:
        rows = self._query("SELECT * FROM discussion_events WHERE repo_id=? AND num=? ORDER BY seq", (repo.id, num))
        return [_event(r) for r in rows]

    def _add_event(
        self, db: sqlite3.Connection, repo: Repo, num: int, kind: str, author: str, data: dict, now: str | None = None
    ) -> DiscussionEvent:
        seq = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS s FROM discussion_events WHERE repo_id=? AND num=?", (repo.id, num)
        ).fetchone()["s"]
        event = DiscussionEvent(secrets.token_hex(12), num, kind, author, now or utc_now(), data)
        db.execute(
            "INSERT INTO discussion_events VALUES (?,?,?,?,?,?,?,?)",
            (event.id, repo.id, num, seq, kind, author, event.created_at, json.dumps(data)),
        )
        return event

    def _pr_commit_event(
        self, db: sqlite3.Connection, repo: Repo, num: int, author: str, now: str, title: str, sha: str
    ) -> None:
        row = db.execute("SELECT status FROM discussions WHERE repo_id=? AND num=?", (repo.id, num)).fetchone()
        if row is None:
            return
        self._add_event(db, repo, num, "commit", author, {"subject": title, "oid": sha}, now)
        if row["status"] == "draft":  # as on the Hub, a draft with a commit is ready for review
            db.execute("UPDATE discussions SET status='open' WHERE repo_id=? AND num=?", (repo.id, num))

    def _new_discussion(
        self,
        db: sqlite3.Connection,
        repo: Repo,
        *,
        title: str,
        author: str,
        description: str,
        is_pr: bool,
        status: str,
        target_branch: str | None = None,
        base_commit: str | None = None,
    ) -> int:
        num = db.execute(
            "SELECT COALESCE(MAX(num), 0) + 1 AS n FROM discussions WHERE repo_id=?", (repo.id,)
        ).fetchone()["n"]
        now = utc_now()
        db.execute(
            "INSERT INTO discussions VALUES (?,?,?,?,?,?,?,?,?,?)",
            (repo.id, num, title, author, int(is_pr), status, now, target_branch, base_commit, None),
        )
        if is_pr:
            db.execute(
                "INSERT OR REPLACE INTO refs VALUES (?, 'branch', ?, ?)",
                (repo.id, f"{PR_REF_PREFIX}{num}", base_commit),
            )
        self._add_event(db, repo, num, "comment", author, _comment_data(description, author), now)
        return num

    def create_discussion(
        self, repo: Repo, *, title: str, author: str, description: str, pull_request: bool, target_branch: str = "main"
    ) -> int:
        """Open a discussion, or a draft pull request (its ref starts at the head of `target_branch`)."""
        with self._transaction() as db:
            base = None
            if pull_request:
                row = db.execute(
                    "SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?", (repo.id, target_branch)
                ).fetchone()
                if row is None:
                    raise NoSuchRevisionError(target_branch)
                base = row["target"]
            return self._new_discussion(
                db,
                repo,
                title=title,
                author=author,
                description=description,
                is_pr=pull_request,
                status="draft" if pull_request else "open",
                target_branch=target_branch if pull_request else None,
                base_commit=base,
            )

    def open_pull_request_with_commit(
        self,
        repo: Repo,
        target_branch: str,
        operations: list[Operation],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        fault_hook=None,
    ) -> tuple[int, str]:
        """`create_commit(create_pr=True)`: one transaction opens the PR and commits onto `refs/pr/<num>`.

        The PR starts at `parent_commit` when given (any commit of the repo), else at the head of
        `target_branch`. Returns (PR number, commit sha).
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?", (repo.id, target_branch)
            ).fetchone()
            if row is None or target_branch.startswith(PR_REF_PREFIX):
                raise NoSuchRevisionError(target_branch)
            base = row["target"]
            if parent_commit is not None:
                found = db.execute(
                    "SELECT sha FROM commits WHERE repo_id=? AND sha LIKE ? LIMIT 2",
                    (repo.id, parent_commit.lower() + "%"),
                ).fetchall()
                if len(found) != 1:
                    raise NoSuchRevisionError(parent_commit)
                base = found[0]["sha"]
            num = self._new_discussion(
                db,
                repo,
                title=title,
                author=author,
                description=message,
                is_pr=True,
                status="open",
                target_branch=target_branch,
                base_commit=base,
            )
            sha = self._apply_commit(
                db,
                repo,
                f"{PR_REF_PREFIX}{num}",
                operations,
                title=title,
                message=message,
                author=author,
                fault_hook=fault_hook,
            )
        return num, sha

    def comment_discussion(self, repo: Repo, num: int, author: str, comment: str) -> DiscussionEvent:
        with self._transaction() as db:
            data = _comment_data(comment, author)
            return self._add_event(db, repo, num, "comment", author, data)

    def edit_comment(self, repo: Repo, num: int, event_id: str, editor: str, content: str) -> DiscussionEvent | None:
        """The edited comment; None if `event_id` is not a comment of this discussion."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM discussion_events WHERE id=? AND repo_id=? AND num=? AND type='comment'",
                (event_id, repo.id, num),
            ).fetchone()
            if row is None:
                return None
            data = json.loads(row["data"])
            data["history"].insert(0, {"raw": content, "updatedAt": utc_now(), "author": editor})
            db.execute("UPDATE discussion_events SET data=? WHERE id=?", (json.dumps(data), event_id))
            row = db.execute("SELECT * FROM discussion_events WHERE id=?", (event_id,)).fetchone()
            return _event(row)

    def hide_comment(self, repo: Repo, num: int, event_id: str) -> DiscussionEvent | None:
        """Hide a comment (its text is dropped, as on the Hub); None if it is not a comment of this discussion."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM discussion_events WHERE id=? AND repo_id=? AND num=? AND type='comment'",
                (event_id, repo.id, num),
            ).fetchone()
            if row is None:
                return None
            data = json.loads(row["data"])
            data["hidden"] = True
            data["history"] = [{**data["history"][0], "raw": ""}]
            db.execute("UPDATE discussion_events SET data=? WHERE id=?", (json.dumps(data), event_id))
            return _event(db.execute("SELECT * FROM discussion_events WHERE id=?", (event_id,)).fetchone())

    def rename_discussion(self, repo: Repo, num: int, author: str, title: str) -> DiscussionEvent:
        with self._transaction() as db:
            old = db.execute("SELECT title FROM discussions WHERE repo_id=? AND num=?", (repo.id, num)).fetchone()
            db.execute("UPDATE discussions SET title=? WHERE repo_id=? AND num=?", (title, repo.id, num))
            return self._add_event(db, repo, num, "title-change", author, {"from": old["title"], "to": title})

    def set_discussion_status(
        self, repo: Repo, num: int, author: str, status: str, comment: str | None = None
    ) -> DiscussionEvent:
        """Close or reopen (status 'open' | 'closed'); an optional comment is posted first."""
        with self._transaction() as db:
            if comment:
                self._add_event(db, repo, num, "comment", author, _comment_data(comment, author))
            db.execute("UPDATE discussions SET status=? WHERE repo_id=? AND num=?", (status, repo.id, num))
            return self._add_event(db, repo, num, "status-change", author, {"status": status})

    def pr_changes(self, repo: Repo, pr: Discussion) -> tuple[dict[str, FileEntry | None], list[str]]:
        """What the PR changes since its base (path → new entry, None when deleted), and the paths that
        conflict with what its target branch changed since that base (changed on both sides, differently)."""
        head = self.ref(repo, "branch", pr.ref)
        target = self.ref(repo, "branch", pr.target_branch or "main")
        if head is None or pr.base_commit is None:
            return {}, []
        base_files = self.files(repo, pr.base_commit)
        head_files = self.files(repo, head)
        changes: dict[str, FileEntry | None] = {}
        for path in sorted(set(base_files) | set(head_files)):
            old, new = base_files.get(path), head_files.get(path)
            if (old.git_oid if old else None) != (new.git_oid if new else None):
                changes[path] = new
        conflicts: list[str] = []
        if target is not None and target != pr.base_commit:
            target_files = self.files(repo, target)
            for path, new in changes.items():
                old, theirs = base_files.get(path), target_files.get(path)
                old_oid, their_oid = (old.git_oid if old else None), (theirs.git_oid if theirs else None)
                if their_oid != old_oid and their_oid != (new.git_oid if new else None):
                    conflicts.append(path)
        return changes, conflicts

    def merge_pull_request(self, repo: Repo, num: int, author: str, comment: str | None = None) -> MergeOutcome:
        """Apply the PR's changes onto its target branch as one merge commit, unless they conflict.

        Conflicting paths: nothing is written and they are returned. Raises StaleParentError if the
        target branch moved while merging (retry).
        """
        with self._transaction() as db:  # reads inside the write transaction see one consistent state
            pr = self.discussion(repo, num)
            if pr is None or not pr.is_pr:
                raise NoSuchRevisionError(f"{PR_REF_PREFIX}{num}")
            target = self.ref(repo, "branch", pr.target_branch or "main")
            if target is None:
                raise NoSuchRevisionError(pr.target_branch or "main")
            changes, conflicts = self.pr_changes(repo, pr)
            if conflicts:
                return MergeOutcome(None, conflicts)
            target_files = self.files(repo, target)
            operations = [
                Operation("add", p, e.sha256, e.size, e.lfs, e.git_oid)
                if e is not None
                else Operation("delete_file", p)
                for p, e in changes.items()
                if e is not None or p in target_files  # a path both sides deleted is already gone
            ]
            if comment:
                self._add_event(db, repo, num, "comment", author, _comment_data(comment, author))
            sha = self._apply_commit(
                db,
                repo,
                pr.target_branch or "main",
                operations,
                title=f"Merge pull request #{num}: {pr.title}",
                message="",
                author=author,
                parent_commit=target,
                merge_parent=self.ref(repo, "branch", pr.ref),  # parents: the target's head, then the PR's
            )
            db.execute(
                "UPDATE discussions SET status='merged', merge_commit=? WHERE repo_id=? AND num=?", (sha, repo.id, num)
            )
            self._add_event(db, repo, num, "status-change", author, {"status": "merged"})
        return MergeOutcome(sha, [])


def _repo(row: sqlite3.Row) -> Repo:
    return Repo(
        row["id"],
        row["namespace"],
        row["name"],
        bool(row["private"]),
        row["created_at"],
        row["last_modified"],
        row["gated"] or "",
    )


def _commit(row: sqlite3.Row) -> Commit:
    return Commit(
        row["sha"], row["parent"], row["title"], row["message"], row["author"], row["date"], row["merge_parent"]
    )


def _comment_data(raw: str, author: str) -> dict:
    """A comment's stored data: its versions, newest first, and whether a maintainer hid it."""
    return {"history": [{"raw": raw, "updatedAt": utc_now(), "author": author}], "hidden": False}


def _discussion(row: sqlite3.Row) -> Discussion:
    return Discussion(
        row["repo_id"],
        row["num"],
        row["title"],
        row["author"],
        bool(row["is_pr"]),
        row["status"],
        row["created_at"],
        row["target_branch"],
        row["base_commit"],
        row["merge_commit"],
    )


def _event(row: sqlite3.Row) -> DiscussionEvent:
    return DiscussionEvent(
        row["id"], row["num"], row["type"], row["author"], row["created_at"], json.loads(row["data"])
    )


def _token_info(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(row["id"], row["user"], row["role"], row["display_name"], row["hint"], row["created_at"])


def open_data_folder(root: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> MetadataStore:
    """Open (creating if needed) the metadata database of a data folder."""
    root.mkdir(parents=True, exist_ok=True)
    return MetadataStore(root / "hub.sqlite3", busy_timeout_s=busy_timeout_s)


__all__ = [
    "MetadataStore",
    "Repo",
    "FileEntry",
    "Commit",
    "Operation",
    "Discussion",
    "DiscussionEvent",
    "MergeOutcome",
    "PR_REF_PREFIX",
    "TokenInfo",
    "open_data_folder",
    "utc_now",
    "hash_token",
]
