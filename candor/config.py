"""Every CANDOR_* setting, declared once: name, type, default and what it does.

CLI flags override these; `candor doctor`, `candor serve --help` and the README's table show them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candor.errors import InvalidParameter

DEFAULT_PORT = 11434


def physical_cores() -> int:
    """Count the physical cores this process may run on (llama.cpp's default thread count)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    siblings: set[str] = set()
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            siblings.add(path.read_text().strip())
        except OSError:
            siblings.add(str(cpu))
    return max(1, len(siblings))


@dataclass(frozen=True)
class Address:
    """Where a candor server listens or is called."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """The base URL, with an IPv6 host in brackets."""
        return f"{self.scheme}://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def _address(raw: str) -> Address:
    """OLLAMA_HOST's forms: `host`, `host:port`, `http://host:port`, `[::1]:port`, a bare IPv6 address."""
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [IPv6]:port
        name, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    elif rest.count(":") == 1:
        name, _, port = rest.partition(":")
    else:  # a bare IPv6 address has no port
        name, port = rest, ""
    if scheme not in ("http", "https") or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError("not a server address; write it as HOST[:PORT], e.g. 127.0.0.1:11434")
    return Address(scheme, name or "127.0.0.1", int(port) if port else DEFAULT_PORT)


def parse_address(raw: str) -> Address:
    """Read a --host flag (OLLAMA_HOST's forms); the host defaults to 127.0.0.1 and the port to 11434."""
    try:
        return _address(raw)
    except ValueError as exc:
        raise InvalidParameter(f"{raw!r} is {exc}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise ValueError(f"must be a whole number of at least {low}")
        return value

    return parse


def _context(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return _at_least(1)(text)
    except ValueError:
        raise ValueError("must be auto or a whole number of at least 1") from None


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _path(text: str) -> Path:
    return Path(text).expanduser()


def parse_names(text: str) -> tuple[str, ...]:
    """Read a comma-separated list of names (blanks dropped)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag(text: str) -> bool:
    # Any value turns it on, as before; the usual spellings of "off" turn it off.
    return text.strip().lower() not in ("0", "false", "no", "off")


LOAD_MODES = ("auto", "ram", "mmap")
CPU_BUFFER_MODES = ("auto", "all", "none")


@dataclass(frozen=True)
class Setting:
    """One environment setting: its variable, how its text is read, its default and what it does."""

    env: str
    parse: Callable[[str], Any]  # raises ValueError with what a valid value looks like
    default: Callable[[], Any]
    default_text: str  # the default as `candor serve --help` and the README write it
    description: str
    fallback: str = ""  # a variable read when `env` is unset (Ollama's own name for the same thing)
    secret: bool = False  # its value is never shown

    @property
    def key(self) -> str:
        """The field of Settings that holds it."""
        return self.env.removeprefix("CANDOR_").lower()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CANDOR_HOME",
        _path,
        lambda: Path.home() / ".candor",
        "~/.candor",
        "where candor keeps its store, caches and settings",
    ),
    Setting(
        "CANDOR_CTX",
        _context,
        lambda: None,
        "auto",
        "context tokens per request (per slot) when a request does not set one; auto = the model's "
        "training context, capped by what fits the memory budget",
    ),
    Setting(
        "CANDOR_THREADS",
        _at_least(1),
        physical_cores,
        "physical cores",
        "CPU threads for llama.cpp",
    ),
    Setting(
        "CANDOR_BATCH",
        _at_least(1),
        lambda: 512,
        "512",
        "prompt tokens evaluated per llama_decode call (llama.cpp's n_batch)",
    ),
    Setting(
        "CANDOR_GPU_LAYERS",
        _int,
        lambda: -1,
        "-1",
        "layers to offload to a GPU backend; -1 = as many as fit in free GPU memory, 0 = none",
    ),
    Setting(
        "CANDOR_LOAD_MODE",
        _one_of(*LOAD_MODES),
        lambda: "auto",
        "auto",
        "how a runner holds a model's weights: ram (read into memory, on huge pages where the system "
        "allows), mmap (mapped from the file, as llama.cpp does by default) or auto (ram when the "
        "model fits in half of the available memory)",
    ),
    Setting(
        "CANDOR_CPU_BUFFERS",
        _one_of(*CPU_BUFFER_MODES),
        lambda: "auto",
        "auto",
        "llama.cpp's extra CPU buffer types for weights (AMX, CPU_REPACK): all (llama.cpp's default), "
        "none, or auto (all unless a once-per-boot CPU self-test finds one that crashes this machine)",
    ),
    Setting(
        "CANDOR_HOST",
        _address,
        lambda: Address("http", "127.0.0.1", DEFAULT_PORT),
        "127.0.0.1:11434",
        "where `candor serve` listens and the other commands find it, as HOST[:PORT] (else OLLAMA_HOST)",
        fallback="OLLAMA_HOST",
    ),
    Setting(
        "CANDOR_API_KEY",
        str,
        lambda: "",
        "none",
        "the server requires 'Authorization: Bearer KEY'; the other commands send it",
        secret=True,
    ),
    Setting(
        "CANDOR_ALLOWED_HOSTS",
        parse_names,
        lambda: (),
        "none",
        "extra Host names the server accepts besides its own address, comma-separated",
    ),
    Setting(
        "CANDOR_CORS_ORIGINS",
        parse_names,
        lambda: (),
        "none",
        "origins browsers may call the server from, comma-separated",
    ),
    Setting(
        "CANDOR_PARALLEL",
        _at_least(1),
        lambda: 4,
        "4",
        "requests the server decodes together per model (Ollama's OLLAMA_NUM_PARALLEL)",
    ),
    Setting(
        "CANDOR_MAX_QUEUE",
        _at_least(0),
        lambda: 32,
        "32",
        "requests that may wait per model before the server answers 503",
    ),
    Setting(
        "CANDOR_MAX_LOADED_MODELS",
        _at_least(1),
        lambda: 2,
        "2",
        "models the server keeps loaded at once",
    ),
    Setting(
        "CANDOR_KEEP_ALIVE",
        str,
        lambda: "5m",
        "5m",
        "how long an idle model stays loaded in the server: '5m', '30s', 0, -1 = forever",
    ),
    Setting(
        "CANDOR_DEBUG",
        _flag,
        lambda: False,
        "off",
        "log every module's debug messages and show tracebacks of unexpected errors",
    ),
    Setting(
        "CANDOR_CPU_SELFTEST_FAULT",
        str,
        lambda: "",
        "none",
        "for tests: the CPU self-test dies by SIGILL wherever this extra buffer type (e.g. CPU_REPACK) "
        "holds weights, as if its kernels were illegal on this CPU",
    ),
    Setting(
        "CANDOR_REF_DIR",
        _path,
        lambda: Path.home() / ".cache" / "candor-ref",
        "~/.cache/candor-ref",
        "for benchmarks: where the reference llama.cpp tools are built",
    ),
)

_BY_ENV = {setting.env: setting for setting in SETTINGS}


def _source(setting: Setting, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, text) of the variable that sets `setting`, or None when it keeps its default."""
    for name in (setting.env, setting.fallback):
        if name and env.get(name, "") != "":
            return name, env[name]
    return None


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """Read one setting by its variable (environment over default); a malformed one is an error naming it.

    Commands that need one setting read it alone, so a bad variable they do not use cannot stop them."""
    setting = _BY_ENV[name]
    found = _source(setting, os.environ if environ is None else environ)
    if found is None:
        return setting.default()
    variable, raw = found
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise InvalidParameter(
            f"{variable}={raw!r} is invalid ({exc}); fix it, or unset it for the default "
            f"({setting.default_text}). It sets: {setting.description}"
        ) from None


def server_address(flag: str | None = None, environ: Mapping[str, str] | None = None) -> Address:
    """The --host flag, else CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434: where `candor serve`
    listens and where the other commands call it."""
    if flag:
        return parse_address(flag)
    address: Address = read("CANDOR_HOST", environ)
    return address


@dataclass(frozen=True)
class Settings:
    """Resolved settings: environment over defaults. One field per entry of SETTINGS, named by its key."""

    home: Path
    ctx: int | None  # None: auto (candor.plan.context_size)
    threads: int
    batch: int
    gpu_layers: int
    load_mode: str
    cpu_buffers: str
    host: Address
    api_key: str
    allowed_hosts: tuple[str, ...]
    cors_origins: tuple[str, ...]
    parallel: int
    max_queue: int
    max_loaded_models: int
    keep_alive: str
    debug: bool
    cpu_selftest_fault: str
    ref_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting of SETTINGS; a malformed one is an error that names it."""
        env = os.environ if environ is None else environ
        return cls(**{setting.key: read(setting.env, env) for setting in SETTINGS})

    @property
    def cache_dir(self) -> Path:
        """Derived data that can be rebuilt (hash caches, the assembled default model)."""
        return self.home / "cache"


@dataclass(frozen=True)
class SettingRow:
    """One setting as `candor doctor` shows it."""

    env: str
    value: str
    source: str  # "env", "env OLLAMA_HOST" (its fallback variable set it) or "default"
    description: str


def _shown(setting: Setting, value: Any) -> str:
    if setting.secret:
        return "(set)" if value else "(none)"
    if isinstance(value, tuple):
        return ",".join(value) or "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "(none)"


def describe(environ: Mapping[str, str] | None = None) -> list[SettingRow]:
    """Return every setting with its current value and where that came from (a variable or the default)."""
    env = os.environ if environ is None else environ
    rows = []
    for setting in SETTINGS:
        found = _source(setting, env)
        value = _shown(setting, read(setting.env, env))
        source = "default" if found is None else "env" if found[0] == setting.env else f"env {found[0]}"
        rows.append(SettingRow(setting.env, value, source, setting.description))
    return rows
