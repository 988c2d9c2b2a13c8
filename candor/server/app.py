"""create_app(): the ASGI app behind `candor serve`, with no module-level state."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from candor import __version__
from candor.errors import CandorError
from candor.scheduler import Scheduler, SchedulerConfig
from candor.server.anthropic.routes import router as anthropic_router
from candor.server.errors import (
    body_too_large_handler,
    candor_error_handler,
    client_gone_handler,
    http_error_handler,
    validation_error_handler,
)
from candor.server.json_body import JsonBodies
from candor.server.llamacpp.routes import router as llamacpp_router
from candor.server.ollama.routes import router as ollama_router
from candor.server.ollama.store_routes import router as ollama_store_router
from candor.server.openai.response_store import ResponseStore
from candor.server.openai.routes import router as openai_router
from candor.server.openapi import candor_openapi
from candor.server.ops import router as ops_router
from candor.server.security import BodyTooLarge, Guard, machine_names
from candor.server.streaming import ClientGone
from candor.server.web import BrowserRedirect
from candor.server.web import router as web_router
from candor.store.library import Library


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = 11434
    api_key: str | None = None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 32 << 20  # a request body larger than this is a 413

    @property
    def loopback_only(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return self.host in ("127.0.0.1", "localhost", "::1")


def create_app(
    settings: ServerSettings | None = None, scheduler: Scheduler | None = None, library: Library | None = None
) -> FastAPI:
    """Build the app; the scheduler and the library live on app.state (created when not given; the
    library opens the scheduler's CANDOR_HOME, so names the routes add are the names it loads)."""
    server = settings or ServerSettings()
    app = FastAPI(title="candor", version=__version__, description="Ollama- and OpenAI-compatible API")
    sched = scheduler or Scheduler(config=SchedulerConfig(allow_paths=False))
    app.state.scheduler = sched
    app.state.library = library or Library(sched.settings)
    app.state.settings = server
    app.state.responses = ResponseStore()
    app.add_exception_handler(CandorError, candor_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(BodyTooLarge, body_too_large_handler)
    app.add_exception_handler(ClientGone, client_gone_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.include_router(ollama_router)
    app.include_router(ollama_store_router)
    app.include_router(openai_router)
    app.include_router(anthropic_router)
    app.include_router(llamacpp_router)
    app.include_router(ops_router)
    app.include_router(web_router)
    app.add_middleware(JsonBodies)  # `curl -d '{...}'` sends a form Content-Type; Ollama reads JSON anyway
    app.add_middleware(BrowserRedirect)  # a browser opening / gets the chat page; clients keep the text

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Answer while the server runs (no API key needed): for load balancers and probes."""
        return {"status": "ok"}

    app.openapi = lambda: candor_openapi(app)  # type: ignore[method-assign]

    if server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(server.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )
    allowed = set(server.allowed_hosts)
    if not server.loopback_only:
        allowed |= machine_names() | {server.host}
    app.add_middleware(
        Guard,
        allowed_hosts=allowed,
        loopback_only=server.loopback_only,
        api_key=server.api_key,
        allowed_origins=server.cors_origins,
        max_body_bytes=server.max_body_bytes,
    )
    return app
