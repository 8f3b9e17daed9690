"""The HTTP service as an app factory: `create_app(model, tokenizer, settings)` returns a FastAPI app.

Everything the app needs lives on `app.state.service`, never in module globals, so tests and
benchmarks build as many apps as they like. Model work runs in worker threads (at most
`workers` at once), off the event loop, so one slow request never stalls the others.
"""
from __future__ import annotations

import hmac
import time
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route

from .._util import first_line
from ..errors import LMError
from . import metrics, openai
from .openai import OpenAIError, error_body, is_openai_path
from .service import Service, log
from .routes import router
from .settings import ServeSettings

STATIC = files("lm.serve") / "static"
# No data, so no key needed: the page, its files (/static/), the health check, and the metrics,
# which count requests but show nothing of what they asked (docs/serve.md).
PUBLIC_PATHS = ("/", "/health", "/favicon.ico", "/metrics")
def create_app(model, tokenizer, settings: ServeSettings | None = None, lexicon=None, cache=None, ngram=None) -> FastAPI:
    """The FastAPI app serving a loaded model: suggestions, generation, the page.

    lexicon: the words char and subword models may suggest (lm.Lexicon.load(checkpoint)).
    cache: the continuous cache for suggestions (lm.cache_config(checkpoint)); each session has its own.
    ngram: a word model's n-gram mixed into suggestions (lm.checkpoint.store.load_ngram(checkpoint)).

    Raises:
        ConfigError: a setting is out of range.
    """
    settings = settings or ServeSettings()
    settings.validate()
    app = FastAPI(title="lm", version="0.1.0", debug=False, docs_url=None, redoc_url=None)
    app.state.service = Service(model, tokenizer, settings, lexicon, cache, ngram)
    app.state.created = int(time.time())  # the model's "created" in /v1/models
    routers = (router, openai.router, metrics.router)
    for included in routers:
        app.include_router(included)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    _add_error_handlers(app)
    # The last added runs first: metrics see every answer; CORS answers a browser's preflight
    # before the key is asked for (a preflight never carries it) and marks 401s and 413s too.
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body)
    if settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origin), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    # The routes as declared, the page and /static too: FastAPI keeps an included router's as one entry.
    routes = [route for included in routers for route in included.routes] + [
        route for route in app.router.routes if isinstance(route, (Route, Mount))]
    app.add_middleware(metrics.MetricsMiddleware, metrics=app.state.service.metrics, routes=routes)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Library errors are the client's: 400 with their one line; bad input 422 (400 on the
    OpenAI routes, as OpenAI answers); no traceback ever."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        return error_response(request.url.path, 422, validation_message(errors), param=_field(errors))

    @app.exception_handler(LMError)
    async def library_error(request: Request, error: LMError) -> JSONResponse:
        return error_response(request.url.path, 400, first_line(error))

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return error_response(request.url.path, error.status, error.message, param=error.param, code=error.code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if not is_openai_path(request.url.path):
            return await http_exception_handler(request, error)
        message = str(error.detail)
        if error.status_code in (404, 405):
            message = (f"{request.method} {request.url.path} is not served — the OpenAI routes here are "
                       "POST /v1/completions and GET /v1/models")
        return error_response(request.url.path, error.status_code, message, headers=error.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)  # the traceback stays in the log
        return error_response(request.url.path, 500, f"internal error ({type(error).__name__}); the server log has "
                              "the details")


def error_response(path: str, status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    """An error as the route's clients read it: OpenAI's shape under /v1/ (a 422 there is OpenAI's
    400), `{"detail": ...}` elsewhere."""
    if not is_openai_path(path):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(error_body(message, param, code, kind), status_code=400 if status == 422 else status,
                        headers=headers)


def _field(errors) -> str | None:
    """The field the first of pydantic's errors is about ("stop", "stream_options.include_usage")."""
    where = errors[0].get("loc", ())[1:] if errors else ()
    return ".".join(str(part) for part in where) or None


def validation_message(errors) -> str:
    """pydantic's errors as one line that names each field: 'k: Input should be less than or equal to 20'."""
    parts = []
    for error in errors[:3]:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"malformed JSON ({reason}) at character {error['loc'][-1]}")
            continue
        where = [str(part) for part in error.get("loc", ())[1:]] or [str(error.get("loc", ("body",))[0])]
        parts.append(f"{'.'.join(where)}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


class BodyLimitMiddleware:
    """413 for request bodies over `max_body` bytes, whether or not they declare their length."""

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await self._too_large(scope, receive, send)
        # Read the whole body (it is small) so a chunked one is counted too, then replay it.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)  # a disconnect
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)
        await self.app(scope, replayed, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(scope["path"], 413, f"request body over {self.max_body:,} bytes — send a shorter text",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


def _replay(messages: list[dict], then=None):
    """A receive() that gives these messages first, then defers to `then` (disconnects)."""
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class ApiKeyMiddleware:
    """With an API key set, every request but /health, /metrics and the page needs `Authorization: Bearer KEY`."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.expected = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if self.expected is None or scope["type"] != "http" or _public(scope["path"]):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):  # constant time: the key is not guessed by timing
            response = error_response(scope["path"], 401, "missing or wrong API key — send the header "
                                      "Authorization: Bearer KEY", code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")
