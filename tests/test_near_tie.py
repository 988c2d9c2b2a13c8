"""The near-tie comparison that the integration tests use, on made-up answers."""

from __future__ import annotations

import pytest
from near_tie import Greedy, assert_same_up_to_a_near_tie, assert_text_same_up_to_a_near_tie


def answer(*steps: tuple[bytes, dict[bytes, float]], ended: bool = False) -> Greedy:
    return Greedy(tuple(piece for piece, _ in steps), tuple(top for _, top in steps), ended)


SKY = (b" The", {b" The": -0.1, b" Blue": -2.5})
BLUE = (b" sky", {b" sky": -0.5, b" sea": -0.9, b" air": -4.0})
SEA = (b" sea", {b" sea": -0.6, b" sky": -0.8, b" air": -4.1})


def test_the_same_answer_with_a_little_drift_agrees() -> None:
    other = answer((b" The", {b" The": -0.2, b" Blue": -2.0}), BLUE)
    assert assert_same_up_to_a_near_tie(answer(SKY, BLUE), other) == 2


def test_answers_may_part_at_a_near_tie_only() -> None:
    assert assert_same_up_to_a_near_tie(answer(SKY, BLUE), answer(SKY, SEA)) == 1
    far = (b" air", {b" air": -0.1, b" sky": -3.0, b" sea": -3.5})
    with pytest.raises(AssertionError, match="led"):
        assert_same_up_to_a_near_tie(answer(SKY, BLUE), answer(SKY, far))


def test_a_moved_logprob_is_a_bug_even_when_the_tokens_agree() -> None:
    moved = (b" The", {b" The": -0.1, b" Blue": -0.2})
    with pytest.raises(AssertionError, match="moved"):
        assert_same_up_to_a_near_tie(answer(SKY, BLUE), answer(moved, BLUE))


def test_an_early_end_must_be_a_near_tie_with_the_end() -> None:
    with pytest.raises(AssertionError, match="not among"):
        assert_same_up_to_a_near_tie(answer(SKY, ended=True), answer(SKY, BLUE))
    ending = (b" sky", {b" sky": -0.5, b"": -1.0})
    assert assert_same_up_to_a_near_tie(answer(SKY, ended=True), answer(SKY, ending)) == 1


def test_a_shown_text_is_compared_token_by_token() -> None:
    run = answer(SKY, BLUE, (b" is\n", {b" is\n": -0.1}))
    assert_text_same_up_to_a_near_tie("The sky is", run)  # stripped at both ends
    assert_text_same_up_to_a_near_tie("The sea, at dusk", run)  # parted at a near-tie
    with pytest.raises(AssertionError, match="not one of"):
        assert_text_same_up_to_a_near_tie("The cat", run)
    with pytest.raises(AssertionError, match="led"):
        assert_text_same_up_to_a_near_tie("The air", run)
    with pytest.raises(AssertionError, match="past the answer"):
        assert_text_same_up_to_a_near_tie("The sky is blue", run)


def test_a_text_cut_by_a_stop_string_within_a_token_is_the_answer_it_came_with() -> None:
    glued = (b" skyuser", {b" skyuser": -0.3, b" sky": -1.0})
    run = Greedy((SKY[0], glued[0]), (SKY[1], glued[1]), ended=True, text=" The sky")
    assert_text_same_up_to_a_near_tie("The sky", run)  # what the API showed, stop string cut
    with pytest.raises(AssertionError, match="not one of"):
        assert_text_same_up_to_a_near_tie("The cat", run)
