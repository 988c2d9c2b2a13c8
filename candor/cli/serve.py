"""`candor serve`: the Ollama- and OpenAI-compatible HTTP API on 127.0.0.1:11434."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import socket
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from candor.config import SETTINGS, Settings, parse_names, read, server_address
from candor.errors import CandorError

if TYPE_CHECKING:
    from candor.scheduler import SchedulerConfig

EXAMPLES = """examples:
  candor serve                                  Ollama's address: existing clients need no setting
  candor serve --port 8080 --api-key s3cret     OpenAI clients: base_url http://127.0.0.1:8080/v1
  CANDOR_HOST=0.0.0.0:11434 candor serve --allowed-hosts host.docker.internal
"""


def settings_help(width: int = 100) -> str:
    """Every setting of candor.config as `serve --help` lists it: variable, default, what it does."""
    name_width = max(len(setting.env) for setting in SETTINGS)
    lines = ["settings (environment variables; the flags above override them):"]
    for setting in SETTINGS:
        head = f"  {setting.env:<{name_width}}  "
        text = f"{setting.description} (default: {setting.default_text})"
        wrapped = textwrap.wrap(text, width=max(40, width - len(head)))
        lines.append(head + wrapped[0])
        lines.extend(" " * len(head) + more for more in wrapped[1:])
    return "\n".join(lines) + "\n"


def register(sub: Any) -> None:
    """Add the `serve` command."""
    parser = sub.add_parser(
        "serve",
        help="serve Ollama's and OpenAI's HTTP APIs",
        description=__doc__,
        epilog=EXAMPLES + "\n" + settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Flags default to None; the environment is read when `serve` runs (a bad variable fails it alone,
    # not `serve --help`), through candor.config, which declares each variable once.
    parser.add_argument("--host", help="address to bind (CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 11434)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (CANDOR_API_KEY)")
    parser.add_argument(
        "--allowed-hosts", help="extra Host names to accept, comma-separated (CANDOR_ALLOWED_HOSTS)"
    )
    parser.add_argument(
        "--cors-origins", help="origins browsers may call from, comma-separated (CANDOR_CORS_ORIGINS)"
    )
    limits = parser.add_argument_group("capacity (Ollama's OLLAMA_NUM_PARALLEL, OLLAMA_MAX_QUEUE...)")
    limits.add_argument("--parallel", type=int, help="requests decoded together per model (CANDOR_PARALLEL)")
    limits.add_argument(
        "--ctx",
        type=int,
        metavar="N",
        help="context tokens per request when a request sets none (CANDOR_CTX; default: the model's "
        "training context, as far as the memory budget allows)",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        help="requests that may wait per model before the server answers 503 (CANDOR_MAX_QUEUE)",
    )
    limits.add_argument(
        "--max-loaded", type=int, help="models kept loaded at once (CANDOR_MAX_LOADED_MODELS)"
    )
    limits.add_argument(
        "--keep-alive",
        help="how long an idle model stays loaded: '5m', '30s', 0, -1 = forever (CANDOR_KEEP_ALIVE)",
    )
    parser.set_defaults(handler=handle)


def _names(flag: str | None, env: str) -> tuple[str, ...]:
    if flag is None:
        names: tuple[str, ...] = read(env)
        return names
    return parse_names(flag)


def scheduler_config(args: argparse.Namespace) -> SchedulerConfig:
    """The scheduler's limits from the flags (or their environment variables)."""
    from candor.scheduler import SchedulerConfig
    from candor.server.request_fields import keep_alive_seconds

    parallel = args.parallel if args.parallel is not None else read("CANDOR_PARALLEL")
    queue = args.max_queue if args.max_queue is not None else read("CANDOR_MAX_QUEUE")
    loaded = args.max_loaded if args.max_loaded is not None else read("CANDOR_MAX_LOADED_MODELS")
    for flag, value, low in (
        ("--parallel", parallel, 1),
        ("--max-queue", queue, 0),
        ("--max-loaded", loaded, 1),
    ):
        if value < low:
            raise CandorError(f"{flag} must be at least {low}; got {value}")
    keep_alive = keep_alive_seconds(
        args.keep_alive if args.keep_alive is not None else read("CANDOR_KEEP_ALIVE")
    )
    return SchedulerConfig(
        parallel=parallel,
        queue_max=queue,
        max_loaded=loaded,
        keep_alive=SchedulerConfig.keep_alive if keep_alive is None else keep_alive,
        allow_paths=False,  # requests name models; they never name files
    )


def engine_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the flags that override them."""
    settings = Settings.from_env()
    if args.ctx is None:
        return settings
    if args.ctx < 1:
        raise CandorError(f"--ctx must be at least 1; got {args.ctx}")
    return dataclasses.replace(settings, ctx=args.ctx)


def bind_address(host: str | None, port: int | None) -> tuple[str, int]:
    """--host/--port, else CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434."""
    address = server_address(host)
    return address.host, port or address.port


def _who_listens(host: str, port: int) -> str:
    try:
        import httpx

        answer = httpx.get(f"http://{host}:{port}/api/version", timeout=1).json()
        return "another candor" if "candor" in answer else "Ollama (stop it, or pick another --port)"
    except Exception:  # only a hint: any failure means "someone else"
        return "another program"


def handle(args: argparse.Namespace) -> int:
    """Check the port, then run uvicorn until Ctrl-C."""
    import uvicorn

    from candor.scheduler import Scheduler
    from candor.server.app import ServerSettings, create_app

    host, port = bind_address(args.host, args.port)
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CandorError(f"{host}:{port} is taken by {_who_listens(host, port)}") from None
        raise CandorError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()
    settings = ServerSettings(
        host=host,
        port=port,
        api_key=(args.api_key if args.api_key is not None else read("CANDOR_API_KEY")) or None,
        allowed_hosts=frozenset(_names(args.allowed_hosts, "CANDOR_ALLOWED_HOSTS")),
        cors_origins=_names(args.cors_origins, "CANDOR_CORS_ORIGINS"),
    )
    app = create_app(settings, scheduler=Scheduler(engine_settings(args), config=scheduler_config(args)))
    print(f"candor serving on http://{host}:{port} (Ollama API at /api, OpenAI API at /v1)", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.scheduler.close()
    return 0
