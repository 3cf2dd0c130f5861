"""What a hub holds: `GET /api/models` (`HfApi.list_models`) and the repo storage listings of
`hf repos ls` (`HfApi.list_user_repos`), with the visibility rules of every other route.

Pages are cut at `ctx.list_page_size` (the Hub's 1000) or the client's `limit`, whichever is
smaller, and chained with an absolute `Link: <...>; rel="next"` carrying an opaque `cursor`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import HubHTTPError
from .context import Caller, HubContext, json_response
from .routes_repos import card_data
from .routing import Router, next_link, query_bool
from .storage import Repo
from .trees import sibling_entries

router = Router()

# Sort keys the Hub accepts (the client maps last_modified → lastModified, etc.); always descending, as
# on the Hub. Counters the local hub does not keep (downloads, likes, trending) are all 0: those sorts
# keep the id order.
_SORT_KEYS = {
    "lastModified": lambda r: r.last_modified,
    "createdAt": lambda r: r.created_at,
    "id": None,
    "downloads": None,
    "likes": None,
    "trendingScore": None,
    "downloadsAllTime": None,
}


def _int_param(request: Request, key: str, default: int | None) -> int | None:
    value = request.query_params.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as e:
        raise HubHTTPError(400, f"Query parameter {key!r} must be an integer") from e
    if number < 0:
        raise HubHTTPError(400, f"Query parameter {key!r} must be >= 0")
    return number


def _page(request: Request, items: list, page_size: int) -> tuple[list, dict[str, str]]:
    """One page of `items` from the request's cursor, with the `Link` header to the next one."""
    cursor = _int_param(request, "cursor", 0) or 0
    limit = _int_param(request, "limit", None)
    size = min(page_size, limit) if limit else page_size
    size = max(1, size)
    page = items[cursor : cursor + size]
    headers: dict[str, str] = {}
    if cursor + size < len(items):
        headers["Link"] = next_link(request, "cursor", cursor + size)
    return page, headers


def _visible_repos(ctx: HubContext, caller: Caller) -> list[Repo]:
    return [r for r in ctx.store.list_repos() if ctx.can_read(r, caller)]


def _model_summary(ctx: HubContext, repo: Repo, *, full: bool, with_card: bool, card: dict | None) -> dict:
    sha = ctx.store.ref(repo, "branch", "main")
    item = {
        "_id": f"{repo.id:024x}",
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.namespace,
        "private": repo.private,
        "gated": repo.gated or False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "trendingScore": 0,
        "createdAt": repo.created_at,
        "lastModified": repo.last_modified,
        "sha": sha,
        "tags": list(card.get("tags") or []) if card else [],
        "library_name": card.get("library_name") if card else None,
        "pipeline_tag": card.get("pipeline_tag") if card else None,
    }
    if full and sha is not None:
        item["siblings"] = sibling_entries(ctx.store.files(repo, sha).values(), with_blobs=False)
    if with_card and card is not None:
        item["cardData"] = card
    return item


def _card_of(ctx: HubContext, repo: Repo) -> dict | None:
    sha = ctx.store.ref(repo, "branch", "main")
    return card_data(ctx, repo, ctx.store.files(repo, sha)) if sha else None


@router.route("GET", "/api/models")
def list_models(ctx: HubContext, request: Request) -> Response:
    caller = ctx.caller(request)
    repos = _visible_repos(ctx, caller)
    params = request.query_params
    author = params.get("author")
    if author:
        repos = [r for r in repos if r.namespace.lower() == author.lower()]
    search = params.get("search")
    if search:
        repos = [r for r in repos if search.lower() in r.repo_id.lower()]
    gated = params.get("gated")
    if gated is not None:
        want = gated.lower() in ("1", "true")
        repos = [r for r in repos if bool(r.gated) == want]
    sort = params.get("sort")
    if sort is not None and sort not in _SORT_KEYS:
        raise HubHTTPError(400, f"Unsupported sort {sort!r}: use one of {', '.join(sorted(_SORT_KEYS))}")
    repos.sort(key=lambda r: r.repo_id.lower())
    key = _SORT_KEYS.get(sort) if sort else None
    if key is not None:
        repos.sort(key=key, reverse=True)  # stable: ties keep the id order
    full = query_bool(request, "full")
    with_card = full or query_bool(request, "cardData")
    tag_filters = params.getlist("filter")
    # Tags and library come from the card on main, as on the Hub; read for the filtered or shown repos only.
    cards: dict[int, dict | None] = {}
    if tag_filters:
        kept = []
        for r in repos:
            card = cards[r.id] = _card_of(ctx, r)
            tags = set(card.get("tags") or []) if card else set()
            library = (card or {}).get("library_name")
            if all(t in tags or t == library for t in tag_filters):
                kept.append(r)
        repos = kept
    page, headers = _page(request, repos, ctx.list_page_size)
    body = []
    for r in page:
        card = cards[r.id] if r.id in cards else _card_of(ctx, r)
        body.append(_model_summary(ctx, r, full=full, with_card=with_card, card=card))
    expand = params.getlist("expand") or params.getlist("expand[]")
    if expand:
        body = [{k: v for k, v in item.items() if k in ("_id", "id") or k in expand} for item in body]
    return json_response(body, headers=headers)


def _storage_listing(ctx: HubContext, request: Request, namespaces: set[str]) -> Response:
    repos = [r for r in ctx.store.list_repos() if r.namespace.lower() in namespaces]
    sizes = {r.id: ctx.store.repo_storage(r) for r in repos}
    total = sum(sizes.values()) or 1
    items = [
        {
            "id": r.repo_id,
            "type": "model",
            "updatedAt": r.last_modified,
            "visibility": "private" if r.private else "public",
            "storage": sizes[r.id],
            "storagePercent": round(100.0 * sizes[r.id] / total, 2),
        }
        for r in repos
    ]
    page, headers = _page(request, items, ctx.list_page_size)
    return json_response(page, headers=headers)


@router.route("GET", "/api/settings/repositories")
def my_repositories(ctx: HubContext, request: Request) -> Response:
    """The caller's repos with their storage (`hf repos ls`); on this hub, those of their orgs too."""
    caller = ctx.caller(request)
    if caller.name is None:
        raise HubHTTPError(401, "You must be authenticated to list your repositories.")
    return _storage_listing(ctx, request, {caller.name.lower(), *(o.lower() for o in caller.orgs)})


@router.route("GET", "/api/organizations/{ns}/settings/repositories")
def org_repositories(ctx: HubContext, request: Request, ns: str) -> Response:
    caller = ctx.caller(request)
    if caller.name is None:
        raise HubHTTPError(401, "You must be authenticated to list an organization's repositories.")
    if not caller.owns(ns):
        raise HubHTTPError(403, f"You are not a member of {ns}.")
    return _storage_listing(ctx, request, {ns.lower()})
