"""The local hub as an ASGI application: raw-path routing, Hub-shaped errors, request ids."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ..errors import HubHTTPError, StorageError
from . import routes_files, routes_repos, routes_upload, web
from .context import HubContext, error_response, json_response, repo_not_found

logger = logging.getLogger(__name__)

_ROUTERS = (routes_repos.router, routes_upload.router, routes_files.router)


class HubApp:
    """ASGI app serving the Hub HTTP API over one data folder (see `HubContext`)."""

    def __init__(self, ctx: HubContext) -> None:
        self.ctx = ctx

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
        response = await self._dispatch(request, scope)
        response.headers["X-Request-Id"] = request_id
        await response(scope, receive, send)

    async def _dispatch(self, request: Request, scope: Scope):
        method = scope["method"]
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        root_path = scope.get("root_path", "")
        if root_path and raw_path.startswith(root_path):
            raw_path = raw_path[len(root_path):]
        try:
            if raw_path == "/api/hubckpt/health":
                return json_response({"status": "ok", "root": str(self.ctx.root), "service": "hubckpt-local-hub"})
            for router in _ROUTERS:
                found = router.match(method, raw_path)
                if isinstance(found, tuple):
                    handler, params = found
                    return await handler(self.ctx, request, **params)
            if method in ("GET", "HEAD") and "/resolve/" in raw_path:
                return await routes_files.resolve(self.ctx, request, raw_path)
            if raw_path.startswith("/api/models/"):
                # e.g. canonical single-segment ids (`/api/models/gpt2`): no such repo here.
                raise repo_not_found(self.ctx.caller(request))
            page = await web.dispatch(self.ctx, request, method, raw_path)  # HTML pages: only where no API path is
            if page is not None:
                return page
            raise HubHTTPError(404, f"{method} {raw_path} is not an endpoint of the hubckpt local hub")
        except HubHTTPError as e:
            if e.status >= 500:
                logger.error("%s %s -> %s", method, raw_path, e)
            return error_response(e)
        except StorageError as e:
            logger.exception("storage failure on %s %s", method, raw_path)
            return error_response(HubHTTPError(500, str(e)))
        except Exception as e:  # the server must answer JSON, whatever went wrong
            logger.exception("unexpected error on %s %s", method, raw_path)
            return error_response(HubHTTPError(500, f"Internal error of the hubckpt local hub: {type(e).__name__}: {e}"))


def create_app(ctx: HubContext) -> HubApp:
    """The ASGI application of a local hub over `ctx`'s data folder."""
    return HubApp(ctx)
