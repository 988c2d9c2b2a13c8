"""A bounded fuzz run over GGUF headers (hypothesis); scripts/fuzz_gguf.py is the 10,000-input run.

Each mutated header goes through candor's preflight (a typed refusal, or a pass) and, when it passes,
through llama.cpp in a memory-capped probe child that also decodes two tokens: what candor lets
through must never crash or hang llama.cpp, and harmless changes (a new name, an extra key) must load.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from gguf_layout import Base
from gguf_mutants import (
    INTERESTING,
    STRINGS,
    Mutant,
    drop_key,
    extra_key,
    flip_bytes,
    rename,
    set_field,
    set_float,
    set_number,
    set_string,
    transplant,
    truncate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor.engine.probe import ProbeSession
from candor.errors import InvalidModelFile, UnsupportedModel
from candor.preflight import preflight

MEMORY_CAP = 1 << 30  # the tiny model decodes in well under 512 MiB of address space
CHECK_SECONDS = 2.0  # preflight reads a 0.5 MB file in milliseconds; anything near this is a hang
FUZZ = settings(
    max_examples=600,
    deadline=None,  # timed by hand: the probe's first start is slow, and that is not a finding
    derandomize=True,  # the same inputs on every CI run; the script explores with fresh seeds
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutants(base: Base) -> st.SearchStrategy[Mutant]:
    """Byte flips, field overwrites, cuts, new metadata values, dropped keys, other architectures."""
    values = st.sampled_from(INTERESTING) | st.integers(0, (1 << 64) - 1)
    return st.one_of(
        st.builds(
            partial(flip_bytes, base),
            st.lists(st.integers(0, 1 << 20), min_size=1, max_size=4),
            st.lists(st.integers(0, 255), min_size=4, max_size=4),
        ),
        st.builds(partial(set_field, base), st.integers(0, 10_000), values),
        st.builds(partial(truncate, base), st.integers(0, 1 << 20)),
        st.builds(partial(set_number, base), st.integers(0, 100), values),
        st.builds(partial(set_float, base), st.integers(0, 100), st.floats(width=32)),
        st.builds(
            partial(set_string, base), st.integers(0, 100), st.sampled_from(STRINGS) | st.text(max_size=40)
        ),
        st.builds(partial(drop_key, base), st.integers(0, 100)),
        st.builds(partial(transplant, base), st.integers(0, 1000)),
    )


def harmless(base: Base) -> st.SearchStrategy[Mutant]:
    """Changes a validator must let through: any name, any extra key."""
    key = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=40)
    return st.one_of(
        st.builds(partial(rename, base), st.text(min_size=1, max_size=300)),
        st.builds(partial(extra_key, base), key, st.integers(0, (1 << 64) - 1) | st.text(max_size=200)),
    )


def check(mutant: Mutant, path: Path, probes: ProbeSession) -> str:
    """Run one input through candor's checks and then llama.cpp; return where it ended."""
    path.write_bytes(mutant.data)
    started = time.monotonic()
    try:
        preflight(path)  # any exception but a typed refusal fails the test: a crash of candor
    except (InvalidModelFile, UnsupportedModel) as exc:
        assert time.monotonic() - started < CHECK_SECONDS, mutant.how
        assert not mutant.harmless, f"{mutant.how}: a harmless change was refused: {exc}"
        assert str(exc), mutant.how
        return "refused by candor"
    assert time.monotonic() - started < CHECK_SECONDS, mutant.how
    result = probes.probe(path)
    assert not result.crashed, f"{mutant.how}: passed candor's checks, then {result.reason}"
    assert not result.timed_out, f"{mutant.how}: passed candor's checks, then hung llama.cpp"
    assert result.ok or not mutant.harmless, f"{mutant.how}: a harmless change failed: {result.reason}"
    return "ran in llama.cpp" if result.ok else "refused by llama.cpp"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base.make(tmp_path_factory.mktemp("fuzz-base"))


@pytest.fixture(scope="module")
def probes() -> Iterator[ProbeSession]:
    with ProbeSession(timeout=30, max_memory=MEMORY_CAP, decode=True) as session:
        yield session


def test_mutated_headers_never_crash_or_hang(base: Base, probes: ProbeSession, tmp_path: Path) -> None:
    tally: Counter[str] = Counter()
    path = tmp_path / "mutant.gguf"

    @FUZZ
    @given(mutants(base))
    def run(mutant: Mutant) -> None:
        tally[check(mutant, path, probes)] += 1

    run()
    print(dict(tally), "probe children started:", probes.started)
    assert sum(tally.values()) >= FUZZ.max_examples
    # Not a validator that refuses everything: many mutants reach llama.cpp, and some still run.
    assert tally["ran in llama.cpp"] + tally["refused by llama.cpp"] >= FUZZ.max_examples // 10
    assert tally["ran in llama.cpp"] > 0 and tally["refused by candor"] > 0


def test_harmless_mutations_still_load(base: Base, probes: ProbeSession, tmp_path: Path) -> None:
    tally: Counter[str] = Counter()
    path = tmp_path / "harmless.gguf"

    @settings(FUZZ, max_examples=40)
    @given(harmless(base))
    def run(mutant: Mutant) -> None:
        tally[check(mutant, path, probes)] += 1

    run()
    assert tally == Counter({"ran in llama.cpp": 40})
