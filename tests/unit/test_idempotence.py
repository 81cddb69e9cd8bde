"""The rule that accepts an idempotent batch once (agent/idempotence.py), without an agent."""

from __future__ import annotations

import pytest

from streamhouse.agent.idempotence import RETAINED_BATCHES, ProducerStates
from streamhouse.catalog.base import ProducerBatch, ProducerSnapshot
from streamhouse.errors import DuplicateSequence, InvalidArgument, OutOfOrderSequence, ProducerFenced


def write(states: ProducerStates, pid: int, epoch: int, first: int, count: int, base: int) -> None:
    assert states.check(pid, epoch, first, count) is None
    states.record(pid, epoch, first, count, base, base + count)


def test_in_order_batches_are_written_and_a_retry_gets_the_original_offsets() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 0, 3, base=10)
    write(s, 1, 0, 3, 2, base=20)
    assert s.check(1, 0, 0, 3) == ProducerBatch(0, 2, 10, 13)
    assert s.check(1, 0, 3, 2) == ProducerBatch(3, 4, 20, 22)
    assert s.check(1, 0, 5, 1) is None  # the next one


def test_a_gap_is_refused_and_changes_nothing() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 0, 3, base=0)
    with pytest.raises(OutOfOrderSequence, match="next expected is 3"):
        s.check(1, 0, 4, 1)
    assert s.check(1, 0, 3, 1) is None


def test_a_retry_with_a_different_size_is_refused() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 0, 3, base=0)
    with pytest.raises(InvalidArgument, match="same batch"):
        s.check(1, 0, 0, 2)


def test_only_the_last_batches_are_answered_older_ones_are_duplicates() -> None:
    s = ProducerStates("t-0")
    for i in range(RETAINED_BATCHES + 2):
        write(s, 1, 0, i, 1, base=100 + i)
    with pytest.raises(DuplicateSequence):
        s.check(1, 0, 0, 1)
    with pytest.raises(DuplicateSequence):
        s.check(1, 0, 1, 1)
    assert s.check(1, 0, 2, 1) == ProducerBatch(2, 2, 102, 103)


def test_epochs_fence_older_sessions_and_restart_at_zero() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 0, 5, base=0)
    with pytest.raises(OutOfOrderSequence, match="must start at sequence 0"):
        s.check(1, 1, 5, 1)
    write(s, 1, 1, 0, 1, base=5)
    with pytest.raises(ProducerFenced):
        s.check(1, 0, 5, 1)
    assert s.check(1, 1, 0, 1) == ProducerBatch(0, 0, 5, 6)


def test_unknown_producers_start_anywhere_and_producers_are_independent() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 40, 2, base=0)  # forgotten earlier (expired): accepted where it is
    write(s, 2, 0, 0, 1, base=2)
    assert s.check(1, 0, 42, 1) is None and s.check(2, 0, 1, 1) is None


def test_sequences_past_32_bits_are_refused() -> None:
    s = ProducerStates("t-0")
    with pytest.raises(InvalidArgument, match="32 bits"):
        s.check(1, 0, 2**32 - 1, 2)
    assert s.check(1, 0, 2**32 - 1, 1) is None


def test_changed_producers_are_taken_once_and_load_restores_them() -> None:
    s = ProducerStates("t-0")
    write(s, 1, 0, 0, 2, base=0)
    write(s, 2, 0, 0, 1, base=2)
    changed = s.take_changed()
    assert [c.producer_id for c in changed] == [1, 2]
    assert s.take_changed() == ()
    write(s, 2, 0, 1, 1, base=3)
    assert [(c.producer_id, c.batches) for c in s.take_changed()] == [
        (2, (ProducerBatch(0, 0, 2, 3), ProducerBatch(1, 1, 3, 4)))
    ]
    other = ProducerStates("t-0")
    other.load(list(changed))
    assert other.check(1, 0, 0, 2) == ProducerBatch(0, 1, 0, 2)
    with pytest.raises(OutOfOrderSequence):
        other.check(1, 0, 3, 1)


def test_expiry_forgets_idle_producers_but_not_unsaved_ones() -> None:
    s = ProducerStates("t-0")
    s.load([ProducerSnapshot(1, 0, (ProducerBatch(0, 0, 0, 1),))])
    write(s, 2, 0, 0, 1, base=1)
    assert s.expire(0) == 1  # 2 changed since the last seal: kept until its segment carries it
    assert len(s) == 1
    s.take_changed()
    assert s.expire(0) == 1 and len(s) == 0
