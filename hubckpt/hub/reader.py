"""Read-only access to one repo on one hub: the index, refs, manifests, small files, byte ranges, headers.

The one hub reader, shared by the publisher (`writer.HubTarget.reader`) and the consumer side
(`hubckpt.load`). Every read is one HTTP request through huggingface_hub's own session, with its auth
headers, so the errors users see are huggingface_hub's (`RepositoryNotFoundError`, `RevisionNotFoundError`,
...). Transient failures are retried by `retries.with_retries`, with timeouts; a refused connection is
`HubUnavailableError` at once, except that a local hub (`hub="local"`) that died is started again
(`HubReader.revive`) and the request repeated, so a long-running publisher outlives its hub.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import HubckptError, HubUnavailableError
from ..formats.index import INDEX_FILE, RevisionIndex
from ..formats.manifest import MANIFEST_FILE
from .local import ensure_local_hub, local_root
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
MAX_HEADER_BYTES = 100 * 1024 * 1024


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
    """Reads of one repo on one hub. `hub` is a `Hub`, a `hub=` string, or None (the environment).

    A local hub that is not running yet is started here (`select.ensure_running`): readers read.

    `token`: as `select.resolve_token` (None: the hub's own default).
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
        install_timeouts()  # here, before any request: installing it replaces huggingface_hub's shared client

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

    def retrying(self, action: Callable[[], T], *, what: str) -> T:
        """`retries.with_retries` for a request to this hub: names its URL if it refuses, revives a local hub."""
        return with_retries(action, what=what, endpoint=self.hub.endpoint, revive=self.revive)

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
        url = ensure_local_hub(self.hub.root, port=urlsplit(old).port)
        logger.warning("the local hub at %s had stopped; it serves %s again at %s", old, self.hub.root, url)
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

    # -- small files ---------------------------------------------------------------------------------

    def get(self, path: str, revision: str = MAIN) -> tuple[bytes | None, str | None]:
        """(content or None if the file is absent, commit it was read at) with one request.

        A missing repo or revision raises huggingface_hub's error; only a missing file gives None.
        """
        from huggingface_hub.utils import get_session, hf_raise_for_status

        headers = self.auth_headers()

        def fetch():
            url = self.file_url(path, revision)  # here: a revived local hub may have moved (`revive`)
            response = get_session().get(url, headers=headers, follow_redirects=True)
            self.counter.add(len(response.content))
            commit = response.headers.get("x-repo-commit")
            if response.status_code == 404 and response.headers.get("x-error-code") == "EntryNotFound":
                return None, commit
            hf_raise_for_status(response)
            return response.content, commit

        return self.retrying(fetch, what=f"reading {path}@{revision} of {self.repo_id}")

    def read_json(self, path: str, revision: str = MAIN) -> dict | None:
        """A small JSON file at a revision (None if absent)."""
        content, _ = self.get(path, revision)
        return json.loads(content) if content is not None else None

    def index(self, revision: str = MAIN) -> tuple[RevisionIndex | None, str | None]:
        """(the index or None if the repo has none, commit of `revision` it was read at), one request."""
        content, commit = self.get(INDEX_FILE, revision)
        return (RevisionIndex.from_json(content) if content is not None else None), commit

    def read_index(self, revision: str = MAIN) -> tuple[RevisionIndex, str | None]:
        """As `index`, with an empty index when there is none (what the publisher builds on)."""
        index, commit = self.index(revision)
        return index if index is not None else RevisionIndex(), commit

    def manifest(self, revision: str) -> dict | None:
        """A revision's `checkpoint.json` (None if it has none: not published by hubckpt)."""
        return self.read_json(MANIFEST_FILE, revision)

    def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """(branches, tags) as name → commit, with one request."""
        from urllib.parse import quote

        from huggingface_hub.utils import get_session, hf_raise_for_status

        def fetch():
            url = f"{self.hub.endpoint}/api/models/{quote(self.repo_id, safe='/')}/refs"
            response = get_session().get(url, headers=self.auth_headers())
            self.counter.add(len(response.content))
            hf_raise_for_status(response)
            return response.json()

        doc = self.retrying(fetch, what=f"listing refs of {self.repo_id}")
        return (
            {b["name"]: b["targetCommit"] for b in doc.get("branches", [])},
            {t["name"]: t["targetCommit"] for t in doc.get("tags", [])},
        )

    def branches(self) -> dict[str, str]:
        return self.refs()[0]

    def list_files(self, revision: str) -> dict[str, int]:
        """path → size of every file at `revision` (one listing, paginated by the hub)."""
        from huggingface_hub.hf_api import RepoFile

        entries = self.retrying(
            lambda: list(self.api.list_repo_tree(self.repo_id, revision=revision, recursive=True)),
            what=f"listing files of {self.repo_id}@{revision}",
        )
        self.counter.add(0)
        return {e.path: e.size for e in entries if isinstance(e, RepoFile)}

    # -- byte ranges ----------------------------------------------------------------------------------

    def read_range(self, path: str, revision: str, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes [start, end) of a file and the file's total size (from Content-Range), Range requests only.

        LFS files on huggingface.co and on the local hub redirect to a data URL; it is remembered, so
        later reads of the same file go there directly (without auth headers: it is pre-signed).
        """
        from huggingface_hub.utils import get_session, hf_raise_for_status

        if end <= start:
            return b"", None
        rng = {"Range": f"bytes={start}-{end - 1}"}

        def fetch():
            url = self.file_url(path, revision)
            session = get_session()
            target = self._redirects.get(url)
            response = None
            if target is not None:
                response = session.get(target, headers=rng)
                if response.status_code in (401, 403, 410):  # the pre-signed URL expired: ask again
                    self._redirects.pop(url, None)
                    response = None
            if response is None:
                response = session.get(url, headers={**self.auth_headers(), **rng}, follow_redirects=False)
                if response.is_redirect:
                    location = str(response.url.join(response.headers["location"]))
                    self.counter.add(len(response.content))
                    if "/resolve/" in location and location.startswith(self.hub.endpoint):
                        # a same-hub redirect (renamed repo): keep the auth headers
                        response = session.get(location, headers={**self.auth_headers(), **rng}, follow_redirects=True)
                    else:
                        self._redirects[url] = location
                        response = session.get(location, headers=rng)
            self.counter.add(len(response.content))
            hf_raise_for_status(response)
            data = response.content
            total = None
            content_range = response.headers.get("content-range", "")
            if response.status_code == 206 and "/" in content_range:
                tail = content_range.rsplit("/", 1)[1]
                total = int(tail) if tail.isdigit() else None
            elif response.status_code == 200:  # the server ignored Range: keep what was asked for
                total = len(data)
                data = data[start:end]
            if len(data) != min(end, total if total is not None else end) - start:
                raise HubckptError(
                    f"{path}@{revision} of {self.repo_id}: asked for bytes {start}-{end - 1}, got {len(data)} bytes"
                )
            return data, total

        return self.retrying(fetch, what=f"reading bytes {start}-{end - 1} of {path}@{revision}")

    def safetensors_header(self, path: str, revision: str) -> tuple[dict, int, int | None]:
        """(parsed header, data start offset, file size) of a remote safetensors file, by Range reads.

        One request when the header fits in the first HEADER_PROBE_BYTES, two otherwise.
        """
        where = f"{self.repo_id}@{revision}/{path}"
        probe, total = self.read_range(path, revision, 0, HEADER_PROBE_BYTES)
        length = header_length(probe, where)
        if 8 + length > len(probe):
            if total is not None and 8 + length > total:
                raise _bad(where, f"its header says {length} bytes but the file has {total}")
            rest, _ = self.read_range(path, revision, len(probe), 8 + length)
            probe += rest
        data_size = None if total is None else total - 8 - length
        return parse_header(probe[8 : 8 + length], where, data_size=data_size), 8 + length, total


# -- the safetensors header format ------------------------------------------------------------------------


def _bad(where: str, why: str) -> HubckptError:
    from ..errors import IntegrityError

    return IntegrityError(f"{where} is not a valid safetensors file: {why}", path=where)


def header_length(prefix: bytes, where: str) -> int:
    """The 8-byte little-endian header length at the start of a safetensors file."""
    if len(prefix) < 8:
        raise _bad(where, f"only {len(prefix)} bytes")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length < 2 or length > MAX_HEADER_BYTES:
        raise _bad(where, f"header length {length}")
    return length


def parse_header(raw: bytes, where: str, *, data_size: int | None = None) -> dict:
    """Tensor name → {"dtype", "shape", "data_offsets"} (plus "__metadata__"), validated against the file.

    Offsets must lie inside the data section; a header that does not parse or describes bytes the file
    does not have is an error rather than a silently wrong tensor.
    """
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise _bad(where, f"header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise _bad(where, "header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            shape = entry["shape"]
            dtype = entry["dtype"]
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(where, f"entry {name!r} is malformed") from e
        count = 1
        for dim in shape:
            count *= int(dim)
        itemsize = DTYPE_BITS.get(dtype)
        if itemsize is None:
            raise _bad(where, f"tensor {name!r} has unknown dtype {dtype!r}")
        if not 0 <= start <= end or (end - start) * 8 != count * itemsize:
            raise _bad(where, f"tensor {name!r} has offsets {start}-{end} for shape {shape} {dtype}")
        if data_size is not None and end > data_size:
            raise _bad(where, f"tensor {name!r} ends at {end}, past the file's {data_size} data bytes")
    return header


# bits per element of each safetensors dtype
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
