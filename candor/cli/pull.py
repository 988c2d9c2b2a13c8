"""`candor pull`: download a GGUF model from Hugging Face, verify every byte, and give it a name.

Files go to the Hugging Face cache (HF_HOME, HF_HUB_CACHE), shared with llama.cpp's -hf; an interrupted
pull resumes where it stopped. Gated models need HF_TOKEN; HF_ENDPOINT selects a mirror.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from candor.identity import read_card
from candor.store.library import StoreEntry, pull

if TYPE_CHECKING:
    from candor.store.library import PullProgress

EXAMPLES = """examples:
  candor pull hf.co/Qwen/Qwen3-0.6B-GGUF:Q8_0         a quantization from a GGUF repo
  candor pull unsloth/gemma-3-1b-it-GGUF              Q4_K_M, or the repo's only GGUF
  candor pull hf.co/ORG/REPO/model-Q5_K_M.gguf        one file by its path in the repo
"""
_DOWNLOADING = "downloading "


def register(sub: Any) -> None:
    """Add the `pull` command."""
    parser = sub.add_parser(
        "pull",
        help="download a GGUF model from Hugging Face",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="hf.co/ORG/REPO[:QUANT], ORG/REPO[:QUANT] or ORG/REPO/FILE.gguf (QUANT defaults to Q4_K_M)",
    )
    parser.set_defaults(handler=handle)


class PlainProgress:
    """One line per step on stderr, for logs and pipes."""

    def __init__(self) -> None:
        self._last: tuple[str, str | None] | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, event: PullProgress) -> None:
        """Print a step once; a download once when it starts and once when it is complete."""
        downloading = event.status.startswith(_DOWNLOADING)
        done = downloading and event.total is not None and event.completed == event.total
        key = (event.status + (" (done)" if done else ""), event.file)
        if key == self._last:
            return
        self._last = key
        line = _step_text(event)
        if downloading and event.total:
            line += f": {_size(event.completed or 0)} of {_size(event.total)}"
        print(line, file=sys.stderr, flush=True)


class BarProgress:
    """A rich progress bar per file (bytes, speed, time left) on a terminal's stderr."""

    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._last_status: str | None = None

    def __enter__(self) -> BarProgress:
        self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bars.stop()

    def __call__(self, event: PullProgress) -> None:
        """Advance the file's bar, or print a step."""
        if event.status.startswith(_DOWNLOADING) and event.file:
            task = self._tasks.get(event.file)
            if task is None:
                task = self._bars.add_task(_short(event.file), total=event.total)
                self._tasks[event.file] = task
            self._bars.update(task, completed=event.completed or 0, total=event.total)
        elif event.status != self._last_status:
            self._last_status = event.status
            self._bars.console.print(_step_text(event), style="dim", highlight=False)


def _step_text(event: PullProgress) -> str:
    if not event.file or event.file in event.status:
        return event.status
    return f"{event.status} {event.file}"


def _short(path: str, width: int = 40) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def report(entry: StoreEntry) -> None:
    """Print the name, the model's honest summary, and the files that came with it."""
    print(entry.name)
    try:
        print(f"  {read_card(Path(entry.path)).summary()}")
    except Exception as exc:  # the pull succeeded; a summary that cannot be read is not a failure
        print(f"  (cannot describe the model: {exc})")
    if len(entry.parts) > 1:
        print(f"  {len(entry.parts)} parts, {_size(entry.size)} in all")
    if entry.mmproj:
        print(f"  projector: {entry.mmproj}")
    for licence in entry.license_files:
        print(f"  licence: {licence}")
    print(f"  file: {entry.path}")


def handle(args: argparse.Namespace) -> int:
    """Pull the model, showing progress on stderr, then print what it is."""
    display = BarProgress() if sys.stderr.isatty() else PlainProgress()
    with display:
        entry = pull(args.model, progress=display)
    report(entry)
    return 0
