"""Context checkpoints, without llama.cpp: which one a prefix may use, and which ones are kept."""

from __future__ import annotations

from candor.engine.checkpoints import (
    CHECKPOINT_BYTES_PER_SEQUENCE,
    Checkpoint,
    CheckpointStore,
    checkpoints_kept,
)


def checkpoint(end: int, size: int = 10) -> Checkpoint:
    return Checkpoint(end, None, size)


def test_a_checkpoint_resumes_at_its_end_or_one_before() -> None:
    cp = checkpoint(1500)  # the window of position 1499: cells 1500 - n_swa .. 1499
    assert cp.resumes_at(2000) == 1500
    assert cp.resumes_at(1500) == 1500
    assert cp.resumes_at(1499) == 1499  # the same prompt again: its last token is read again
    assert cp.resumes_at(1498) == -1  # position 1498 attends to one cell before the checkpoint's


def test_the_newest_checkpoint_that_serves_the_prefix_is_chosen() -> None:
    store = CheckpointStore(most=4)
    for end in (300, 900, 1500):
        store.add(0, checkpoint(end))
    found = store.best(0, 1200)
    assert found is not None and (found[0].end, found[1]) == (900, 900)
    assert store.best(0, 298) is None
    assert store.best(1, 1200) is None  # another sequence's


def test_a_cut_drops_the_checkpoints_past_it() -> None:
    store = CheckpointStore(most=4)
    for end in (300, 900, 1500):
        store.add(0, checkpoint(end))
    store.drop_from(0, 900)  # positions 900 on are gone: a checkpoint ending at 900 still matches
    assert [c.end for c in store.of(0)] == [300, 900]
    store.drop_from(0, 0)
    assert store.of(0) == [] and store.bytes == 0


def test_the_oldest_go_past_the_count_or_the_bytes_the_newest_stays() -> None:
    store = CheckpointStore(most=2, max_bytes=25)
    store.add(0, checkpoint(100))
    store.add(0, checkpoint(200))
    store.add(0, checkpoint(200))  # the same end again replaces it
    assert [c.end for c in store.of(0)] == [100, 200]
    store.add(0, checkpoint(300))
    assert [c.end for c in store.of(0)] == [200, 300]
    store.add(0, checkpoint(400, size=20))  # 10 + 20 bytes are over the bound
    assert [c.end for c in store.of(0)] == [400]
    store.add(0, checkpoint(500, size=30))  # alone over the bound, still kept
    assert [c.end for c in store.of(0)] == [500]


def test_the_count_kept_is_bounded_by_bytes() -> None:
    assert checkpoints_kept(8 << 20, 4) == 4
    assert checkpoints_kept(CHECKPOINT_BYTES_PER_SEQUENCE // 2, 4) == 2
    assert checkpoints_kept(CHECKPOINT_BYTES_PER_SEQUENCE * 3, 4) == 1
    assert checkpoints_kept(8 << 20, 0) == 0
