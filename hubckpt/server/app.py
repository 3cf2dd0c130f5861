"""The local hub as an ASGI application: raw-path routing, Hub-shaped errors, request ids.

Routing: `system_router` (health), then `ROUTERS` in order, then `fallback_router` (answers for
`/api/models/...` paths that name nothing here); the first match wins. What none of them takes goes
to the web pages (`web.dispatch`, never under `/api/`), then is a JSON 404.

Plain handlers run in a worker thread (see `routing.py`), so a slow SQLite transaction never stalls
the event loop; errors of every kind are mapped to HTTP once, by `http_errors.to_http`.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import HubHTTPError
from . import routes_discussions, routes_files, routes_listing, routes_repos, routes_upload, web
from .context import HubContext, error_response, json_response, repo_not_found
from .http_errors import internal_error, to_http
from .routing import Router, read_body

logger = logging.getLogger(__name__)

system_router = Router()
fallback_router = Router()


@fallback_router.route("GET HEAD", "/api/models/{any}")
def _unknown_model_path(ctx: HubContext, request: Request, any: str) -> Response:
    # e.g. canonical single-segment ids (`/api/models/gpt2`): no such repo here.
    raise repo_not_found(ctx.caller(request))


def _from_this_machine(request: Request) -> bool:
    """True when the client connected over loopback or to this machine's own address from itself."""
    client, server = request.client, request.scope.get("server")
    if client is None:
        return True  # a Unix socket or an in-process transport
    try:
        if ipaddress.ip_address(client.host).is_loopback:
            return True
    except ValueError:
        return False
    if not server:
        return False
    return client.host == server[0]


@system_router.route("GET HEAD", "/api/hubckpt/health")
def _health(ctx: HubContext, request: Request) -> Response:
    body = {"status": "ok", "service": "hubckpt-local-hub"}
    if _from_this_machine(request):
        # `hubckpt` on this machine recognises its server by the data folder (hubckpt.hub.local.running_local_hub);
        # anyone else on the network has no use for the absolute path (it names the user, for a start).
        body["root"] = str(ctx.root)
    return json_response(body)


ROUTERS: list[Router] = [
    routes_repos.router,
    routes_upload.router,
    routes_discussions.router,
    routes_listing.router,
    routes_files.router,
]


class HubApp:
    """ASGI app serving the Hub HTTP API over one data folder (see `HubContext`)."""

    def __init__(self, ctx: HubContext, routers: list[Router] | None = None) -> None:
        self.ctx = ctx
        self.routers = [system_router, *(ROUTERS if routers is None else routers), fallback_router]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.ctx.stats["requests"] += 1
        request = Request(scope, receive)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        response = await self._dispatch(request, scope, request_id)
        response.headers["X-Request-Id"] = request_id
        await response(scope, receive, send)

    def _match(self, method: str, raw_path: str):
        for router in self.routers:
            found = router.match(method, raw_path)
            if isinstance(found, tuple):
                return found
        return None

    async def _dispatch(self, request: Request, scope: Scope, request_id: str) -> Response:
        method = scope["method"]
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        root_path = scope.get("root_path", "")
        if root_path and raw_path.startswith(root_path):
            raw_path = raw_path[len(root_path) :]
        try:
            found = self._match(method, raw_path)
            if found is None:
                page = await web.dispatch(self.ctx, request, method, raw_path)  # HTML pages: where no API path is
                if page is not None:
                    return page
                raise HubHTTPError(404, f"{method} {raw_path} is not an endpoint of the hubckpt local hub")
            route, params = found
            if route.is_async:
                return await route.handler(self.ctx, request, **params)
            request.state.body = await read_body(request, self.ctx.max_body_bytes)
            return await run_in_threadpool(route.handler, self.ctx, request, **params)
        except Exception as e:  # the server must answer JSON, whatever went wrong
            error = to_http(e)
            if error is None or (error.status == 500 and not isinstance(e, HubHTTPError)):
                # A bug or a storage failure: its text (OS errors, absolute paths of the data folder) goes
                # to the log, not to a caller who may be anyone on the network.
                logger.error("%s %s failed (request %s)", method, raw_path, request_id, exc_info=e)
                error = internal_error(request_id)
            elif error.status >= 500:
                logger.error("%s %s -> %s", method, raw_path, error)
            return error_response(error)


def create_app(ctx: HubContext) -> HubApp:
    """The ASGI application of a local hub over `ctx`'s data folder."""
    return HubApp(ctx)
