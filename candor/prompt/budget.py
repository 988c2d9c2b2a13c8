"""What one render of an untrusted chat template may spend: time, value sizes and total work."""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from jinja2.utils import Namespace

from candor.errors import InvalidParameter


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render of a chat template (a GGUF file's template is untrusted code)."""

    max_output: int = 1_000_000  # characters in the rendered prompt
    max_value: int = 2_000_000  # characters plus items in any one value the template builds
    max_created: int = 32_000_000  # characters and items the template creates over the whole render
    max_seconds: float = 1.0  # wall-clock time of one render
    max_int_bits: int = 4096  # size of any integer the template computes

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidParameter(f"render limit {f.name} must be a positive number; got {value!r}")
            if math.isinf(value) or math.isnan(value):
                raise InvalidParameter(f"render limit {f.name} must be finite; got {value!r}")


class Refused(Exception):
    """A guard stopped the render; the renderer reports it as candor's TemplateError."""


def _scalar_size(item: object) -> int:
    """Size of a value without parts (-1 for a container)."""
    if isinstance(item, (str, bytes)):
        return len(item) + 1
    if isinstance(item, (list, tuple, set, frozenset, dict, Namespace)):
        return -1
    if isinstance(item, int):
        return item.bit_length() // 3 + 1  # at least its number of decimal digits
    if isinstance(item, range):
        try:
            return len(item) + 1
        except OverflowError:
            return sys.maxsize
    return 1


def _parts(item: object) -> Iterator[object]:
    if isinstance(item, dict):
        return itertools.chain.from_iterable(item.items())
    if isinstance(item, Namespace):
        try:
            return iter((object.__getattribute__(item, "_Namespace__attrs"),))
        except AttributeError:  # a future jinja2 may store attributes differently
            return iter(())
    assert isinstance(item, (list, tuple, set, frozenset))
    return iter(item)


class _Frame:
    """A container being measured: its remaining parts and its size so far."""

    __slots__ = ("container", "parts", "total")

    def __init__(self, container: object) -> None:
        self.container = container
        self.parts = _parts(container)
        self.total = 1


def measure(value: object, limit: int) -> int:
    """Count the characters and items in value, shared parts once per reference; stop past limit.

    This is the size of value written out (str, tojson) or compared, so a structure that shares
    its parts (`[a, a]` nested sixty times) is as big as it would be unshared. Each distinct part is
    walked once, and a value that contains itself counts as too big.
    """
    size = _scalar_size(value)
    if size >= 0:
        return size
    done: dict[int, int] = {}  # id -> size of each container already measured
    active = {id(value)}
    frames = [_Frame(value)]
    while frames:
        frame = frames[-1]
        total = frame.total
        for part in frame.parts:
            kind = type(part)  # the common leaves first, without a call
            if isinstance(part, str) and kind is str:
                size = len(part) + 1
            elif isinstance(part, int) and kind is int:
                size = part.bit_length() // 3 + 1
            elif kind is bool or kind is float or part is None:
                size = 1
            else:
                size = _scalar_size(part)
            if size < 0:
                size = done.get(id(part), -1)
                if size < 0:
                    if id(part) in active:
                        return limit + 1  # it contains itself: endless when written out
                    active.add(id(part))
                    frames.append(_Frame(part))
                    break
            total += size
            if total > limit:
                return total
        else:
            frames.pop()
            active.discard(id(frame.container))
            done[id(frame.container)] = total
            if not frames:
                return total
            frames[-1].total += total
            if frames[-1].total > limit:
                return frames[-1].total
            continue
        frame.total = total
    return 0  # not reached: the loop returns when the outermost container is done


class RenderBudget:
    """The deadline of one render and a running count of what it has created."""

    __slots__ = ("_created", "_deadline", "limits")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self._deadline = time.monotonic() + limits.max_seconds
        self._created = 0

    def tick(self) -> None:
        """Stop the render once its time is up."""
        if time.monotonic() > self._deadline:
            raise Refused(
                f"ran for more than {self.limits.max_seconds:g} s and was stopped (it may loop forever)"
            )

    def charge(self, amount: int) -> None:
        """Count characters or items the template just created."""
        self._created += amount
        if self._created > self.limits.max_created:
            raise Refused(f"created more than {self.limits.max_created:,} characters and items in total")

    def check_size(self, size: int, what: str = "a value", unit: str = "characters and items") -> None:
        """Refuse a value (built or about to be built) larger than the limit."""
        if size > self.limits.max_value:
            raise Refused(
                f"tried to build {what} of {size:,} {unit} (the limit is {self.limits.max_value:,})"
            )

    def check_value(self, value: object, what: str = "a value") -> None:
        """Refuse a value whose characters and items, counted through shared parts, pass the limit."""
        self.check_size(measure(value, self.limits.max_value), what)

    def check_int_bits(self, bits: int) -> None:
        """Refuse an integer result larger than the limit."""
        if bits > self.limits.max_int_bits:
            limit = self.limits.max_int_bits
            raise Refused(f"tried to compute an integer of about {bits:,} bits (the limit is {limit:,})")

    def account(self, result: Any) -> None:
        """Check the size of a value a call or filter returned, and charge for it."""
        if isinstance(result, str):
            self.check_size(len(result), "a string", "characters")
            self.charge(len(result))
        elif isinstance(result, (list, tuple, dict, set, frozenset)):
            self.check_value(result, "a collection")
            self.charge(len(result))
        elif isinstance(result, (range, Namespace)):
            self.check_value(result)
