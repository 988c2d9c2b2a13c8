"""StopMatcher: streamed text is cut at the first stop string, however the text is split."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.errors import InvalidParameter
from candor.textstream import GluedStop, StopMatcher


def expected_output(text: str, stops: Sequence[str]) -> str:
    """The text up to the stop string that completes first (ties: the one starting first)."""
    found = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]
    return text[: min(found)[1]] if found else text


def stream(stops: Sequence[str], pieces: Sequence[str]) -> tuple[str, bool, list[str]]:
    """Push pieces as a generator would; return the output, whether a stop hit, and each push's output."""
    matcher = StopMatcher(stops)
    emitted = []
    hit = False
    for piece in pieces:
        text, hit = matcher.push(piece)
        emitted.append(text)
        if hit:
            break
    tail = "" if hit else matcher.flush()
    return "".join(emitted) + tail, hit, emitted


def split_at(text: str, cuts: Sequence[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


ALPHABET = "ab\n<|>"
texts = st.text(alphabet=ALPHABET, max_size=60)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=5), max_size=4)


@settings(max_examples=500)
@given(text=texts, stops=stop_lists, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=20))
def test_output_is_the_text_up_to_the_first_stop_however_it_is_split(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    output, hit, _ = stream(stops, split_at(text, cuts))
    assert output == expected_output(text, stops)
    assert hit == any(s in text for s in stops)


@given(text=texts, stops=stop_lists)
def test_one_character_at_a_time_matches_all_at_once(text: str, stops: list[str]) -> None:
    assert stream(stops, list(text))[0] == stream(stops, [text])[0] == expected_output(text, stops)


def longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> str:
    """The longest tail of text that some stop string starts with (and is longer than)."""
    for k in range(len(text), 0, -1):
        if any(len(s) > k and s.startswith(text[-k:]) for s in stops):
            return text[-k:]
    return ""


@settings(max_examples=300)
@given(text=texts, stops=stop_lists, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=20))
def test_only_text_that_may_start_a_stop_is_held_back(text: str, stops: list[str], cuts: list[int]) -> None:
    matcher = StopMatcher(stops)
    sent = emitted = ""
    for piece in split_at(text, cuts):
        out, hit = matcher.push(piece)
        sent += piece
        emitted += out
        if hit:
            break
        assert sent.startswith(emitted)
        assert sent[len(emitted) :] == (longest_stop_prefix_suffix(sent, stops) if stops else "")


def test_a_stop_split_across_pushes_is_caught() -> None:
    output, hit, emitted = stream(["<|im_end|>"], ["Hello", " world<|im", "_e", "nd|>", "more"])
    assert (output, hit) == ("Hello world", True)
    assert emitted == ["Hello", " world", "", ""]


def test_overlapping_partial_prefixes() -> None:
    assert stream(["abcd"], ["ababcd"])[:2] == ("ab", True)
    assert stream(["abcd"], list("ababcd"))[:2] == ("ab", True)
    assert stream(["aab"], list("aaab"))[:2] == ("a", True)
    assert stream(["abcd"], ["abab", "cx"])[:2] == ("ababcx", False)


def test_the_stop_that_completes_first_wins() -> None:
    # "bc" completes before "abcd" does, so streaming can only ever cut at "bc".
    assert stream(["abcd", "bc"], ["abcd"])[0] == "a"
    assert stream(["abcd", "bc"], list("abcd"))[0] == "a"
    # Completing together, the one starting earlier wins.
    assert stream(["cd", "abcd"], ["xabcd"])[0] == "x"


def test_held_text_is_released_once_it_cannot_start_a_stop() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.push("a<") == ("a", False)
    assert matcher.push("/") == ("", False)
    assert matcher.push("x") == ("</x", False)
    assert matcher.push("</") == ("", False)
    assert matcher.flush() == "</"
    assert matcher.flush() == ""


def test_after_a_stop_nothing_more_is_emitted() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("aSTOPb") == ("a", True)
    assert matcher.stopped
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_no_stops_passes_text_straight_through() -> None:
    matcher = StopMatcher([])
    piece = "x" * 1000
    out, hit = matcher.push(piece)
    assert out is piece
    assert not hit
    assert matcher.flush() == ""


def test_a_single_string_is_one_stop() -> None:
    assert stream("ab", ["xaby"])[0] == "x"  # type: ignore[arg-type]


@pytest.mark.parametrize("stops", [[""], ["ok", ""], [None]])
def test_empty_or_non_string_stops_are_invalid(stops: list[object]) -> None:
    with pytest.raises(InvalidParameter):
        StopMatcher(stops)  # type: ignore[arg-type]


def test_each_push_scans_only_the_held_tail_and_new_text() -> None:
    matcher = StopMatcher(["<|end|>"])
    for _ in range(10_000):
        assert matcher.push("token ") == ("token ", False)
    assert matcher.push("<|en") == ("", False)
    assert matcher.push("d|>") == ("", True)


def expected_glued_output(text: str, stops: Sequence[str]) -> str:
    """As expected_output, where a GluedStop counts only after a letter or at a line's start, and cuts the
    word it is glued to and the spaces before that word."""
    plain = {s for s in stops if not isinstance(s, GluedStop)}  # a plain stop string overrules its twin
    found = []
    for stop in [s for s in stops if not (isinstance(s, GluedStop) and s in plain)]:
        for start in range(len(text) - len(stop) + 1):
            before = text[start - 1] if start else ""
            counts = not isinstance(stop, GluedStop) or before in ("", "\n") or before.isalpha()
            if text.startswith(stop, start) and counts:
                cut = start
                if isinstance(stop, GluedStop):
                    cut = len(text[:start].rstrip("ab")) if before.isalpha() else start
                    cut = len(text[:cut].rstrip(" \t")) if before.isalpha() else cut
                found.append((start + len(stop), start, cut))
                break
    return text[: min(found)[2]] if found else text


GLUED_ALPHABET = "ab .\t\n"


@settings(max_examples=500)
@given(
    text=st.text(alphabet=GLUED_ALPHABET, max_size=60),
    stops=st.lists(
        st.builds(
            lambda s, glued: GluedStop(s) if glued else s,
            st.text(alphabet=GLUED_ALPHABET, min_size=1, max_size=4),
            st.booleans(),
        ),
        max_size=3,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=20),
)
def test_a_glued_stop_counts_only_without_a_space_before_however_the_text_is_split(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    assert stream(stops, split_at(text, cuts))[0] == expected_glued_output(text, stops)


def test_a_glued_stop_is_a_role_line_not_a_word_of_the_answer() -> None:
    role = [GluedStop("user\n")]
    assert stream(role, ["Why? mendatang", "user", "\nWhat"])[:2] == ("Why?", True)  # the stray word goes too
    assert stream(role, ["Why?", " mend", "atang", "user\n"])[:2] == ("Why?", True)
    assert stream(role, ["Hi\n", "user\n"])[:2] == ("Hi\n", True)
    assert stream(role, ["user\nHi"])[:2] == ("", True)
    assert stream(role, ["ask the ", "user", "\nnow"])[:2] == ("ask the user\nnow", False)
    assert stream(role, ["ask the\t", "user\n"])[:2] == ("ask the\tuser\n", False)
    assert stream(role, ["x = self.", "user\n"])[:2] == ("x = self.user\n", False)


def test_with_a_glued_stop_the_last_word_waits_for_the_next() -> None:
    matcher = StopMatcher([GluedStop("user\n")])
    assert matcher.push("Hello") == ("", False)
    assert matcher.push(" world") == ("Hello", False)
    assert matcher.push(".") == (" world.", False)
    assert matcher.flush() == ""


def test_the_matcher_names_the_stop_string_that_ended_the_text() -> None:
    matcher = StopMatcher(["END", "STOP"])
    assert matcher.push("one ST")[0] == "one " and matcher.matched is None
    assert matcher.push("OP and END") == ("", True)  # STOP completes first, END after it
    assert matcher.matched == "STOP"
    plain = StopMatcher(["x"])
    assert plain.push("abc") == ("abc", False) and plain.flush() == "" and plain.matched is None
