"""How a model's weights that stay in RAM are held: read into memory that llama.cpp allocates, or mapped
from the file (llama.cpp's default)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from candor.plan.parts import MIB

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def hold_weights(mode: str, host_bytes: int, available: int | None) -> tuple[bool, str]:
    """Whether to read the weights into memory (CANDOR_LOAD_MODE=auto: when the model's RAM side fits in
    half of the available memory), and why.

    Read into memory, the weights sit in buffers that llama.cpp allocates, which a runner process asks
    glibc to back with transparent huge pages (scheduler/process.py); mapped from the file, they sit in
    the page cache on 4 KiB pages, and every step's pass over them walks the TLB for each page. On the
    default model (2 threads) llama-bench decodes 106 tokens/s that way against 88 mapped (94 read into
    memory on 4 KiB pages), and batched-bench's 8 streams 204 against 184. Mapping stays the choice for a
    model that would crowd the machine: the kernel can drop and re-read clean file pages under pressure,
    and a model larger than RAM still runs.
    """
    if mode == "ram":
        return True, "read into memory (CANDOR_LOAD_MODE=ram)"
    if mode == "mmap":
        return False, "mapped from the file (CANDOR_LOAD_MODE=mmap)"
    if available is None:
        return False, "mapped from the file (available memory unknown)"
    need, have = host_bytes // MIB, available // MIB
    if host_bytes <= available // 2:
        return True, f"read into memory: {need} MiB fit in half of the {have} MiB available"
    return False, f"mapped from the file: {need} MiB need more than half of the {have} MiB available"


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None off Linux."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def huge_pages_status() -> str:
    """Whether a runner's weights read into memory can get transparent huge pages here, in words."""
    try:
        text = THP_SETTING.read_text()
        mode = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        return "not available (no transparent huge pages on this system)"
    libc, version = platform.libc_ver()
    if mode == "never":
        return "off (transparent huge pages are 'never' on this system)"
    if mode == "always":
        return "yes (transparent huge pages are 'always' on this system)"
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if libc == "glibc" and parts >= (2, 35):
        return f"yes (system mode '{mode}'; runners ask glibc {version} for them)"
    found = f"{libc or 'an unknown C library'} {version}".strip()
    return f"no (system mode '{mode}' needs glibc 2.35 or newer to ask; this is {found})"
