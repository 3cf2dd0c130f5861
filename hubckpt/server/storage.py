"""Metadata of the local hub: users, tokens, repos, commits, file trees and refs, in SQLite.

The database is `hub.sqlite3` in the data folder, in WAL mode. Every operation that changes a
repo is one transaction, so a server killed at any point shows either the old state or the new
one, never half a commit. Branch updates are compare-and-swap: a commit whose `parent_commit` is
no longer the branch head is refused (HTTP 412) and nothing is written.

Each commit stores the full list of its files (path → object), which keeps reads trivial and is
cheap for checkpoint repos (a handful of files per revision). File contents live in the
content-addressed `BlobStore` (see `blobs.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import AuthError, HubHTTPError, StorageError
from .blobs import git_blob_sha1

SCHEMA_VERSION = 1

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
    private INTEGER NOT NULL, created_at TEXT NOT NULL, last_modified TEXT NOT NULL, UNIQUE (namespace, name));
CREATE TABLE IF NOT EXISTS commits (
    repo_id INTEGER NOT NULL, sha TEXT NOT NULL, parent TEXT, title TEXT NOT NULL, message TEXT NOT NULL,
    author TEXT NOT NULL, date TEXT NOT NULL, PRIMARY KEY (repo_id, sha));
CREATE TABLE IF NOT EXISTS commit_files (
    repo_id INTEGER NOT NULL, commit_sha TEXT NOT NULL, path TEXT NOT NULL, git_oid TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, lfs INTEGER NOT NULL, last_commit TEXT NOT NULL,
    PRIMARY KEY (repo_id, commit_sha, path));
CREATE TABLE IF NOT EXISTS refs (
    repo_id INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('branch', 'tag')), name TEXT NOT NULL,
    target TEXT NOT NULL, PRIMARY KEY (repo_id, kind, name));
CREATE TABLE IF NOT EXISTS repo_objects (repo_id INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (repo_id, sha256));
"""


def utc_now() -> str:
    """Current time as the Hub writes dates: ISO-8601 UTC with a trailing 'Z'."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    parent: str | None
    title: str
    message: str
    author: str
    date: str


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


def _tree_sha(files: Iterable[FileEntry]) -> str:
    h = hashlib.sha1()
    for entry in sorted(files, key=lambda e: e.path):
        h.update(f"{entry.path}\0{entry.git_oid}\n".encode())
    return h.hexdigest()


def _commit_sha(tree: str, parent: str | None, author: str, date: str, title: str, message: str) -> str:
    body = f"tree {tree}\nparent {parent or ''}\nauthor {author} {date}\n\n{title}\n\n{message}"
    return hashlib.sha1(f"commit {len(body.encode())}\0{body}".encode()).hexdigest()


class MetadataStore:
    """SQLite-backed metadata; thread-safe (one connection, one lock, one transaction per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"Cannot open the local hub database {path}: {e}. Is it a hubckpt data folder?") from e
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) > SCHEMA_VERSION:
            raise StorageError(f"{path} was written by a newer hubckpt (schema {row['value']}); upgrade hubckpt.")
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    if exc_type is None:
                        store._db.execute("COMMIT")
                    else:
                        store._db.execute("ROLLBACK")
                finally:
                    store._lock.release()
                return False

        return _Tx()

    def meta_get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None

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
        return [r["org"] for r in self._query(
            "SELECT a.name AS org FROM memberships m JOIN accounts a ON a.name = m.org WHERE m.user=? ORDER BY a.name",
            (user,))]

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
                (row["name"], role, display_name, hash_token(value), value[-4:], utc_now()))
            token_id = cur.lastrowid
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

    # -- repos -----------------------------------------------------------------------------------

    def get_repo(self, namespace: str, name: str) -> Repo | None:
        rows = self._query("SELECT * FROM repos WHERE namespace=? AND name=?", (namespace, name))
        return _repo(rows[0]) if rows else None

    def list_repos(self) -> list[Repo]:
        return [_repo(r) for r in self._query("SELECT * FROM repos ORDER BY namespace, name")]

    def create_repo(self, namespace: str, name: str, private: bool, author: str, gitattributes: str,
                    gitattributes_sha256: str) -> Repo | None:
        """Create a repo with its 'initial commit' on main; None if it already exists."""
        now = utc_now()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE namespace=? AND name=?", (namespace, name)).fetchone():
                return None
            cur = db.execute("INSERT INTO repos (namespace, name, private, created_at, last_modified) VALUES (?,?,?,?,?)",
                             (namespace, name, int(private), now, now))
            repo_id = cur.lastrowid
            data = gitattributes.encode()
            entry = FileEntry(".gitattributes", git_blob_sha1(data), gitattributes_sha256, len(data), False, "")
            sha = _commit_sha(_tree_sha([entry]), None, author, now, "initial commit", "")
            db.execute("INSERT INTO commits VALUES (?,?,?,?,?,?,?)", (repo_id, sha, None, "initial commit", "", author, now))
            db.execute("INSERT INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                       (repo_id, sha, entry.path, entry.git_oid, entry.sha256, entry.size, 0, sha))
            db.execute("INSERT INTO refs VALUES (?, 'branch', 'main', ?)", (repo_id, sha))
            db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo_id, gitattributes_sha256))
        return self.get_repo(namespace, name)

    def delete_repo(self, repo: Repo) -> None:
        with self._transaction() as db:
            for table in ("refs", "commit_files", "commits", "repo_objects"):
                db.execute(f"DELETE FROM {table} WHERE repo_id=?", (repo.id,))
            db.execute("DELETE FROM repos WHERE id=?", (repo.id,))

    def set_private(self, repo: Repo, private: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE repos SET private=? WHERE id=?", (int(private), repo.id))

    def move_repo(self, repo: Repo, namespace: str, name: str) -> None:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE namespace=? AND name=?", (namespace, name)).fetchone():
                raise HubHTTPError(409, f"A model repository called {namespace}/{name} already exists")
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
                   SELECT c.parent FROM commits c JOIN chain ON c.sha = chain.sha WHERE c.repo_id = ? AND c.parent IS NOT NULL)
               SELECT c.* FROM chain JOIN commits c ON c.sha = chain.sha AND c.repo_id = ?""",
            (head, repo.id, repo.id))
        return [_commit(r) for r in rows]

    def files(self, repo: Repo, sha: str) -> dict[str, FileEntry]:
        rows = self._query("SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=? ORDER BY path", (repo.id, sha))
        return {r["path"]: FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), r["last_commit"])
                for r in rows}

    def has_repo_object(self, repo: Repo, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM repo_objects WHERE repo_id=? AND sha256=?", (repo.id, sha256)))

    def object_repos(self, sha256: str) -> list[Repo]:
        return [_repo(r) for r in self._query(
            "SELECT r.* FROM repo_objects o JOIN repos r ON r.id = o.repo_id WHERE o.sha256=?", (sha256,))]

    def add_repo_object(self, repo: Repo, sha256: str) -> None:
        self.add_repo_object_by_id(repo.id, sha256)

    def add_repo_object_by_id(self, repo_db_id: int, sha256: str) -> None:
        """Record that a repo may reference an object (ignored if the repo was deleted meanwhile)."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE id=?", (repo_db_id,)).fetchone():
                db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo_db_id, sha256))

    def create_commit(self, repo: Repo, branch: str, operations: list[Operation], *, title: str, message: str,
                      author: str, parent_commit: str | None = None, fault_hook=None) -> str:
        """Apply `operations` on top of `branch` in one transaction; return the new commit sha.

        Raises HubHTTPError 404 (unknown branch / missing file), 412 (stale `parent_commit`).
        """
        with self._transaction() as db:
            row = db.execute("SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?",
                             (repo.id, branch)).fetchone()
            if row is None:
                raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = row["target"]
            if parent_commit is not None and not head.startswith(parent_commit.lower()):
                raise HubHTTPError(412, "The branch was updated since you opened this page. Please refresh and try again.")
            files = {r["path"]: FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), r["last_commit"])
                     for r in db.execute("SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=?", (repo.id, head))}
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
                    raise HubHTTPError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
            now = utc_now()
            sha = _commit_sha(_tree_sha(files.values()), head, author, now, title, message)
            db.execute("INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?)", (repo.id, sha, head, title, message, author, now))
            for entry in files.values():
                # A path keeps its last commit while its content is unchanged; any add with new content moves it.
                old = db.execute("SELECT git_oid, last_commit FROM commit_files WHERE repo_id=? AND commit_sha=? AND path=?",
                                 (repo.id, head, entry.path)).fetchone() if entry.path in changed else None
                if entry.path in changed:
                    last = old["last_commit"] if old is not None and old["git_oid"] == entry.git_oid else sha
                else:
                    last = entry.last_commit
                db.execute("INSERT OR REPLACE INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                           (repo.id, sha, entry.path, entry.git_oid, entry.sha256, entry.size, int(entry.lfs), last))
                db.execute("INSERT OR IGNORE INTO repo_objects VALUES (?, ?)", (repo.id, entry.sha256))
            if fault_hook is not None:
                fault_hook("commit.before_ref_update")
            db.execute("UPDATE refs SET target=? WHERE repo_id=? AND kind='branch' AND name=?", (sha, repo.id, branch))
            db.execute("UPDATE repos SET last_modified=? WHERE id=?", (now, repo.id))
        return sha

    def squash(self, repo: Repo, branch: str, message: str, author: str) -> str:
        """Replace the history of `branch` by one commit holding its current files."""
        with self._transaction() as db:
            row = db.execute("SELECT target FROM refs WHERE repo_id=? AND kind='branch' AND name=?",
                             (repo.id, branch)).fetchone()
            if row is None:
                raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            rows = db.execute("SELECT * FROM commit_files WHERE repo_id=? AND commit_sha=?", (repo.id, row["target"])).fetchall()
            entries = [FileEntry(r["path"], r["git_oid"], r["sha256"], r["size"], bool(r["lfs"]), "") for r in rows]
            now = utc_now()
            title = message.split("\n", 1)[0]
            sha = _commit_sha(_tree_sha(entries), None, author, now, title, message)
            db.execute("INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?)", (repo.id, sha, None, title, message, author, now))
            for e in entries:
                db.execute("INSERT OR REPLACE INTO commit_files VALUES (?,?,?,?,?,?,?,?)",
                           (repo.id, sha, e.path, e.git_oid, e.sha256, e.size, int(e.lfs), sha))
            db.execute("UPDATE refs SET target=? WHERE repo_id=? AND kind='branch' AND name=?", (sha, repo.id, branch))
        return sha


def _repo(row: sqlite3.Row) -> Repo:
    return Repo(row["id"], row["namespace"], row["name"], bool(row["private"]), row["created_at"], row["last_modified"])


def _commit(row: sqlite3.Row) -> Commit:
    return Commit(row["sha"], row["parent"], row["title"], row["message"], row["author"], row["date"])


def _token_info(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(row["id"], row["user"], row["role"], row["display_name"], row["hint"], row["created_at"])


def open_data_folder(root: Path) -> MetadataStore:
    """Open (creating if needed) the metadata database of a data folder."""
    root.mkdir(parents=True, exist_ok=True)
    return MetadataStore(root / "hub.sqlite3")


__all__ = ["MetadataStore", "Repo", "FileEntry", "Commit", "Operation", "TokenInfo", "open_data_folder", "utc_now",
           "hash_token"]
