"""Read-only access to one repo on one hub: the index, refs, manifests, small files, byte ranges, headers.

The one hub reader, shared by the publisher (`writer.HubTarget.reader`) and the consumer side
(`hubckpt.load`). Every read is one HTTP request through huggingface_hub's own session, with its auth
headers, so the errors users see are huggingface_hub's (`RepositoryNotFoundError`, `RevisionNotFoundError`,
...). Transient failures are retried by `retries.with_retries`, with timeouts.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import HubUnavailableError
from ..formats import manifest as manifest_format
from ..formats.index import INDEX_FILE, RevisionIndex
from ..formats.manifest import MANIFEST_FILE
from ..formats.safetensors_header import (
    header_length,
    invalid,
    parse_header,
)
from ..formats.untrusted import (
    MAX_JSON_BYTES,
    Source,
    check_commit,
    check_int,
    check_repo_path,
    check_str,
    check_type,
    load_json,
    printable,
)
from .local import ensure_local_hub, local_root, running_local_hub
from .origin import headers_for, same_origin
from .retries import check_reachable, install_timeouts, with_retries
from .select import Hub, ensure_running, hub_api, resolve_hub, resolve_token

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAIN = "main"
# First read of a safetensors file: enough for the header of a model with a few hundred tensors; a
# larger header costs a second request for exactly the missing bytes. huggingface_hub reads 100 kB.
HEADER_PROBE_BYTES = 16 * 1024
MAX_REDIRECTS = 5
# Pages of a file listing followed at most (the hub lists 1,000 files or more per page): a listing whose
# `Link` always names a next page ends here with an error instead of running forever.
MAX_LISTING_PAGES = 200
PROGRESS_BYTES = 64 * 1024  # what a read must receive per stall budget to count as making progress


class ByteCounter:
    """Counts requests and bytes received by a reader (response bodies), for the CLI and benchmarks."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += nbytes


class HubReader:
    """Reads of one repo on one hub, bounded in bytes and time, with credentials only for the hub's origin.

    Everything read is a stranger's input: the index, manifests, refs, listings and safetensors headers
    are checked by the parsers in `hubckpt/formats/` before use (see the "Loading from strangers" guide).
    A local hub that is not running yet is started here (`select.ensure_running`): readers read.

    Args:
        hub: a `Hub`, a `hub=` value ("local", "hf", a URL), or None (the environment).
        repo_id: `namespace/name` of the repo.
        token: as `resolve_token`: None is the hub's own default, False sends none.

    Raises:
        InvalidNameError: `repo_id` is not a valid repo id.
        HubConfigError: the hub value is not valid, or the local hub cannot be started.
    """

    def __init__(self, hub: Hub | str | None, repo_id: str, *, token: str | bool | None = None) -> None:
        from ..names import split_repo_id

        split_repo_id(repo_id)
        self.hub = ensure_running(hub if isinstance(hub, Hub) else resolve_hub(hub))
        self.repo_id = repo_id
        # Per hub: None becomes this hub's own token, so the stored huggingface.co token never goes elsewhere.
        self.token = resolve_token(self.hub, token)
        self.counter = ByteCounter()
        self._api: HfApi | None = None
        self._redirects: dict[str, str] = {}  # /resolve/ URL → the data URL it redirected to (LFS files)
        # Here, once, before any request (every request to a hub goes through a reader: the writer's too);
        # installing it replaces huggingface_hub's shared client.
        install_timeouts()

    @property
    def api(self):
        if self._api is None:
            self._api = hub_api(self.hub, token=self.token)
        return self._api

    @property
    def endpoint(self) -> str:
        return self.hub.endpoint

    def describe(self) -> str:
        return f"{self.repo_id} on {self.hub.describe()}"

    def retrying(
        self,
        action: Callable[[], T],
        *,
        what: str,
        settle: Callable[[BaseException], T | None] | None = None,
        deadline: Callable[[], float] | None = None,
        give_up: Callable[[BaseException], bool] | None = None,
    ) -> T:
        """`retries.with_retries` for a request to this hub: names its URL if it refuses, revives a local hub.

        The endpoint is read at each use: after `revive` it may be another port. `settle`, `deadline`,
        `give_up`: see `with_retries`.
        """
        return with_retries(
            action,
            what=what,
            endpoint=lambda: self.hub.endpoint,
            revive=self.revive,
            settle=settle,
            deadline=deadline,
            give_up=give_up,
        )

    def check_reachable(self) -> None:
        """Fail now if nothing listens at the hub's address (`retries.check_reachable`; a local hub is revived).

        For commands that would otherwise work for seconds (reading, converting) before their first request.
        """
        try:
            check_reachable(self.hub.endpoint)
        except HubUnavailableError:
            if not self.revive():
                raise

    def revive(self) -> bool:
        """Start the local hub again after it refused a connection (it died); False for any other hub.

        It is asked for its old port; should that be taken meanwhile, it comes up on another one, and this
        reader (and the `HubTarget` around it) follows it there.
        """
        if self.hub.kind != "local":
            return False
        from urllib.parse import urlsplit

        old = self.hub.endpoint
        url = running_local_hub(local_root(self.hub.root))  # restarted meanwhile (by another process), or moved
        if url is None:
            url = ensure_local_hub(self.hub.root, port=urlsplit(old).port)
            logger.warning("the local hub at %s had stopped; started it again over %s at %s", old, self.hub.root, url)
        elif url != old:
            logger.info("the local hub over %s is now at %s (was %s)", self.hub.root, url, old)
        if url != old:
            self.hub = Hub(url, "local", local_root(self.hub.root))
            self._api = None
            self._redirects.clear()
        return True

    # -- URLs and headers ---------------------------------------------------------------------------

    def file_url(self, path: str, revision: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.hub.endpoint)

    def auth_headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        from ..version import __version__

        return build_hf_headers(token=self.token, library_name="hubckpt", library_version=__version__)

    # -- requests: bounded in bytes and time, credentials only to the hub's own origin --------------------

    def source(self, path: str | None = None, revision: str | None = None) -> Source:
        return Source(self.repo_id, revision, path)

    def _request(
        self,
        url: str,
        *,
        extra: dict[str, str] | None = None,
        max_bytes: int,
        budget: ReadBudget,
        source: Source,
        follow: bool = True,
        credentials: bool = True,
    ):
        """One GET of `url`, its body read while it stays under `max_bytes` (decompressed) and the budget.

        Redirects (when `follow`) are followed here, at most MAX_REDIRECTS, each with credentials only if
        it stays on the hub's origin (`origin.headers_for`). The response comes back with its body read
        (`response.content`); a body over `max_bytes` is refused before more than that is held.
        """
        from huggingface_hub.utils import get_session

        session = get_session()
        base = self.auth_headers() if credentials else {}
        for _ in range(MAX_REDIRECTS + 1):
            headers = {**headers_for(url, self.hub.endpoint, base), **(extra or {})}
            with session.stream(
                "GET", url, headers=headers, follow_redirects=False, timeout=budget.timeout()
            ) as response:
                if response.is_redirect or response.status_code >= 400:  # a short body, for the error message
                    response._content = _read_capped(  # noqa: SLF001 - the body, read within bounds
                        response, 64 * 1024, budget, self.counter, source, error=False
                    )
                    if follow and response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    return response
                response._content = _read_capped(response, max_bytes, budget, self.counter, source, error=True)  # noqa: SLF001
                return response
        raise source.error(f"the hub answered with more than {MAX_REDIRECTS} redirects")

    def _retrying(self, fetch: Callable[[], T], what: str, budget: ReadBudget) -> T:
        def attempt() -> T:
            budget.check(what)
            return fetch()

        return self.retrying(attempt, what=what, deadline=budget.remaining)  # back-offs count against the budget

    # -- small files ---------------------------------------------------------------------------------

    def get(
        self, path: str, revision: str = MAIN, *, max_bytes: int = MAX_JSON_BYTES
    ) -> tuple[bytes | None, str | None]:
        """(content or None if the file is absent, commit it was read at) with one request.

        A missing repo or revision raises huggingface_hub's error; only a missing file gives None. The
        body is capped at `max_bytes`; the commit (`X-Repo-Commit`) must be 40-hex.
        """
        from huggingface_hub.utils import hf_raise_for_status

        source = self.source(path, revision)
        budget = ReadBudget()

        def fetch():
            url = self.file_url(path, revision)  # here: a revived local hub may have moved (`revive`)
            response = self._request(url, max_bytes=max_bytes, budget=budget, source=source)
            commit = response.headers.get("x-repo-commit")
            if commit is not None:
                check_commit(commit, source, "X-Repo-Commit header")
            if response.status_code == 404 and response.headers.get("x-error-code") == "EntryNotFound":
                return None, commit
            hf_raise_for_status(response)
            return response.content, commit

        return self._retrying(fetch, f"reading {path}@{revision} of {self.repo_id}", budget)

    def read_json(self, path: str, revision: str = MAIN) -> dict | None:
        """A small JSON object file at a revision (None if absent), size- and depth-capped."""
        content, _ = self.get(path, revision)
        if content is None:
            return None
        source = self.source(path, revision)
        return check_type(load_json(content, source), dict, source, "content")

    def index(self, revision: str = MAIN) -> tuple[RevisionIndex | None, str | None]:
        """(the index or None if the repo has none, commit of `revision` it was read at), one request."""
        content, commit = self.get(INDEX_FILE, revision)
        index = RevisionIndex.from_json(content, self.source(INDEX_FILE, revision)) if content is not None else None
        return index, commit

    def read_index(self, revision: str = MAIN) -> tuple[RevisionIndex, str | None]:
        """As `index`, with an empty index when there is none (what the publisher builds on)."""
        index, commit = self.index(revision)
        return index if index is not None else RevisionIndex(), commit

    def manifest(self, revision: str) -> dict | None:
        """A revision's `checkpoint.json` (None if it has none: not published by hubckpt), schema-checked."""
        content, _ = self.get(MANIFEST_FILE, revision)
        return manifest_format.loads(content, self.source(MANIFEST_FILE, revision)) if content is not None else None

    def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """(branches, tags) as name → commit, with one request; every commit checked to be 40-hex."""
        from urllib.parse import quote

        from huggingface_hub.utils import hf_raise_for_status

        source = self.source("(refs)")
        budget = ReadBudget()

        def fetch():
            url = f"{self.hub.endpoint}/api/models/{quote(self.repo_id, safe='/')}/refs"
            response = self._request(url, max_bytes=MAX_JSON_BYTES, budget=budget, source=source)
            hf_raise_for_status(response)
            return load_json(response.content, source)

        doc = check_type(self._retrying(fetch, f"listing refs of {self.repo_id}", budget), dict, source, "content")
        out: list[dict[str, str]] = []
        for kind in ("branches", "tags"):
            refs = {}
            for ref in check_type(doc.get(kind) or [], list, source, kind):
                check_type(ref, dict, source, f"entry of {kind}")
                name = check_str(ref.get("name"), source, "ref name", optional=False, limit=255) or ""
                if not name or not name.isprintable():
                    raise source.error(f"a ref name {printable(name)!r} is empty or has control characters")
                refs[name] = check_commit(ref.get("targetCommit"), source, f"targetCommit of {printable(name, 80)}")
            out.append(refs)
        return out[0], out[1]

    def branches(self) -> dict[str, str]:
        return self.refs()[0]

    def list_files(self, revision: str) -> dict[str, int]:
        """path → size of every file at `revision` (one listing, paginated by the hub).

        Pagination `Link`s are followed at most MAX_LISTING_PAGES pages (credentials only on the hub's
        origin); every path is checked to be a valid repo path and every size a non-negative integer.
        """
        from urllib.parse import quote

        from huggingface_hub.utils import hf_raise_for_status

        source = self.source("(file listing)", revision)
        # The next page, as a path on the hub (so that it follows a local hub revived on another port,
        # `revive`), or as an absolute URL when a `Link` names another origin.
        where: str | None = (
            f"/api/models/{quote(self.repo_id, safe='/')}/tree/{quote(revision, safe='')}?recursive=true&expand=false"
        )
        files: dict[str, int] = {}
        for page in range(MAX_LISTING_PAGES + 1):
            if where is None:
                return files
            if page == MAX_LISTING_PAGES:
                raise source.error(f"the listing goes on past {MAX_LISTING_PAGES} pages")
            budget = ReadBudget()

            def fetch(where: str = where, budget: ReadBudget = budget):
                endpoint = self.hub.endpoint  # here, at each try: `revive` may have moved it
                url = endpoint + where if where.startswith("/") else where
                response = self._request(url, max_bytes=MAX_JSON_BYTES, budget=budget, source=source)
                hf_raise_for_status(response)
                link = response.links.get("next", {}).get("url")
                following = _on_hub(str(response.url.join(link)), endpoint) if link else None
                return load_json(response.content, source), following

            entries, where = self._retrying(fetch, f"listing files of {self.repo_id}@{revision}", budget)
            for entry in check_type(entries, list, source, "page"):
                check_type(entry, dict, source, "entry")
                if entry.get("type") != "file":
                    continue
                path = check_repo_path(entry.get("path"), source)
                files[path] = (
                    check_int(entry.get("size"), source, f"size of {printable(path, 80)}", optional=False) or 0
                )
        raise AssertionError("unreachable")

    # -- byte ranges ----------------------------------------------------------------------------------

    def read_range(self, path: str, revision: str, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes [start, end) of a file and the file's total size (from Content-Range), Range requests only.

        The answer must be a 206 of exactly the asked range (Content-Range `bytes start-last/total`,
        cut only at the end of the file), or a 200 of a whole file no longer than asked when
        `start == 0`; anything else fails, and no more than the asked bytes (+1) is ever held.
        LFS files on huggingface.co and on the local hub redirect to a data URL; it is remembered, so
        later reads of the same file go there directly (with credentials only on the hub's own origin).
        """
        from huggingface_hub.utils import hf_raise_for_status

        if end <= start:
            return b"", None
        rng = {"Range": f"bytes={start}-{end - 1}"}
        where = f"{self.repo_id}@{revision}/{path}"
        source = self.source(path, revision)
        budget = ReadBudget()
        want = end - start

        def fetch():
            url = self.file_url(path, revision)  # here: a revived local hub may have moved (`revive`)
            response = None
            target = self._redirects.get(url)
            if target is not None:
                response = self._request(target, extra=rng, max_bytes=want, budget=budget, source=source, follow=False)
                if response.status_code in (401, 403, 410):  # the pre-signed URL expired: ask again
                    self._redirects.pop(url, None)
                    response = None
            if response is None:
                response = self._request(url, extra=rng, max_bytes=want, budget=budget, source=source, follow=False)
                hops = 0
                while response.is_redirect and "location" in response.headers:
                    hops += 1
                    if hops > MAX_REDIRECTS:
                        raise source.error(f"the hub answered with more than {MAX_REDIRECTS} redirects")
                    target = str(response.url.join(response.headers["location"]))
                    response = self._request(
                        target, extra=rng, max_bytes=want, budget=budget, source=source, follow=False
                    )
                if hops:
                    self._redirects[url] = str(response.url)
            hf_raise_for_status(response)
            return _ranged_body(response, start, end, where)

        return self._retrying(fetch, f"reading bytes {start}-{end - 1} of {path}@{revision}", budget)

    def safetensors_header(self, path: str, revision: str) -> tuple[dict, int, int | None]:
        """(parsed header, data start offset, file size) of a remote safetensors file, by Range reads.

        One request when the header fits in the first HEADER_PROBE_BYTES, two otherwise.
        """
        where = f"{self.repo_id}@{revision}/{path}"
        probe, total = self.read_range(path, revision, 0, HEADER_PROBE_BYTES)
        length = header_length(probe, where)
        if 8 + length > len(probe):
            if total is not None and 8 + length > total:
                raise invalid(where, f"its header says {length} bytes but the file has {total}")
            rest, _ = self.read_range(path, revision, len(probe), 8 + length)
            probe += rest
        data_size = None if total is None else total - 8 - length
        return parse_header(probe[8 : 8 + length], where, data_size=data_size), 8 + length, total


# -- bounds on what a hub can make a reader hold or wait for ------------------------------------------------


class ReadBudget:
    """How long one read (all its tries together) may go on without progress.

    A read fails with `HubUnavailableError` once `stall_budget()` seconds (2 × `HUBCKPT_HTTP_TIMEOUT`,
    4 minutes by default) pass in which less than PROGRESS_BYTES arrived, however they are spent:
    stalled bodies, a slow drip, retries and their back-off. Each request's timeouts are cut to what is left.
    """

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self.limit = stall_budget()
        self._since = self._clock()
        self._bytes = 0

    def remaining(self) -> float:
        return self.limit - (self._clock() - self._since)

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            from ..errors import HubUnavailableError

            raise HubUnavailableError(
                f"{what}: the hub sent less than {PROGRESS_BYTES // 1024} KiB in {self.limit:.0f} s (the bound on "
                "a stalled read, 2 x HUBCKPT_HTTP_TIMEOUT); check the hub, or raise HUBCKPT_HTTP_TIMEOUT"
            )

    def progress(self, nbytes: int, what: str) -> None:
        self._bytes += nbytes
        if self._bytes >= PROGRESS_BYTES:
            self._since, self._bytes = self._clock(), 0
        self.check(what)

    def timeout(self):
        """Each request's timeouts, none longer than what is left of the budget."""
        import httpx2

        from .retries import hub_timeouts

        left = max(self.remaining(), 0.001)
        return httpx2.Timeout(**{k: min(v, left) for k, v in hub_timeouts().items()})


def stall_budget() -> float:
    """Seconds a read may make no progress, all tries together: 2 × `HUBCKPT_HTTP_TIMEOUT` (240 s by default)."""
    from .. import environment

    return 2 * environment.http_timeout()


def _read_capped(
    response, limit: int, budget: ReadBudget, counter: ByteCounter, source: Source, *, error: bool
) -> bytes:
    """The response's (decompressed) body, at most `limit` bytes: over it, an error (or, with
    `error=False`, the first `limit` bytes); the budget checked on every chunk."""
    chunks, size = [], 0
    what = f"reading {source}"
    try:
        for chunk in response.iter_bytes(64 * 1024):
            size += len(chunk)
            budget.progress(len(chunk), what)
            if size > limit:
                if error:
                    counter.add(size)
                    raise source.error(f"the hub sent more than the {limit} bytes expected")
                chunks.append(chunk[: len(chunk) - (size - limit)])
                size = limit
                break
            chunks.append(chunk)
    except Exception as e:  # a decompression error is the hub's doing, as is a body cut short
        if type(e).__name__ == "DecodingError":
            raise source.error(f"its body does not decode ({printable(str(e), 100)})") from None
        raise
    counter.add(size)
    return b"".join(chunks)


def _ranged_body(response, start: int, end: int, where: str) -> tuple[bytes, int | None]:
    """(bytes, file size) of a Range answer that is exactly [start, end) (cut at the file's end), or fail."""
    from ..errors import IntegrityError

    data = response.content
    status = response.status_code
    if status == 200 and start == 0 and len(data) <= end:  # the whole file, no longer than asked for
        return data, len(data)
    match = _CONTENT_RANGE.match(response.headers.get("content-range", "").strip())
    if status == 206 and match:
        first, last, total_text = int(match[1]), int(match[2]), match[3]
        total = int(total_text) if total_text != "*" else None
        expected_last = end - 1 if total is None else min(end, total) - 1
        if first == start and last == expected_last and len(data) == last - first + 1:
            return data, total
    raise IntegrityError(
        f"{where}: asked for bytes {start}-{end - 1}, the hub answered {status} "
        f"{printable(response.headers.get('content-range', 'without Content-Range'), 80)} with {len(data)} bytes; "
        "nothing was used (a hub must answer a Range request with exactly that range)",
        path=where,
    )


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _on_hub(url: str, endpoint: str) -> str:
    """`url` as a path on the hub at `endpoint` when it is on that hub (same origin, under its base path), else
    as it is."""
    base = endpoint.rstrip("/")
    if same_origin(url, endpoint) and url.startswith(base + "/"):
        return url[len(base) :]
    return url
