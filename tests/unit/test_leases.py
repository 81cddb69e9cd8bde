"""Coordination logic (agent/leases.py): fair shares, what to take and hand over, the grace period for a
lost owner's acknowledged records, the data-directory lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamhouse.agent.leases import DataDirLock, capacity_note, fair_share, plan
from streamhouse.catalog.base import Lease, PartitionState
from streamhouse.errors import AgentIdentityInUse


def states(n: int, hw: int = 0) -> list[PartitionState]:
    return [PartitionState("t", p, hw, 0, 1, None) for p in range(n)]


@pytest.mark.parametrize(
    ("partitions", "agents", "cap", "share"),
    [(12, 3, 50, 4), (13, 3, 50, 5), (12, 1, 50, 12), (200, 1, 50, 50), (1, 4, 50, 1), (0, 2, 50, 0)],
)
def test_fair_share_is_an_even_split_rounded_up_and_capped(
    partitions: int, agents: int, cap: int, share: int
) -> None:
    assert fair_share(partitions, agents, cap) == share


def test_a_joining_agent_makes_the_owner_hand_over_its_excess() -> None:
    owned = {("t", p) for p in range(12)}
    leases = [Lease("t", p, "a", 1, 10_000, "i", 0) for p in range(12)]
    p = plan(
        agent_id="a",
        incarnation="i",
        states=states(12),
        leases=leases,
        live_agents=["a", "b", "c"],
        now_ms=5_000,
        owned=owned,
        max_per_agent=50,
        grace_ms=30_000,
    )
    assert (p.share, p.shed, p.candidates) == (4, 8, [])
    # The joiner sees nothing free until they are released, then takes up to its share.
    free = [Lease("t", q, "a", 1, 4_000, "i", 0) for q in range(8)] + leases[8:]
    j = plan(
        agent_id="b",
        incarnation="j",
        states=states(12),
        leases=free,
        live_agents=["a", "b", "c"],
        now_ms=5_000,
        owned=set(),
        max_per_agent=50,
        grace_ms=30_000,
    )
    assert [c.state.partition for c in j.candidates] == list(range(8)) and j.share == 4


def test_a_lost_owner_with_uncommitted_wal_acks_is_waited_for_then_reported() -> None:
    lapsed = Lease("t", 0, "a", 3, 1_000, "i", acked_offset=120)
    kwargs = dict(
        agent_id="b",
        incarnation="j",
        states=states(1, hw=100),
        leases=[lapsed],
        live_agents=["b"],
        owned=set(),
        max_per_agent=50,
        grace_ms=30_000,
    )
    waiting = plan(now_ms=11_000, **kwargs)  # type: ignore[arg-type]
    assert waiting.candidates == [] and waiting.waiting[0].remaining_ms == 20_000
    past = plan(now_ms=31_001, **kwargs)  # type: ignore[arg-type]
    assert past.waiting == [] and past.candidates[0].lost == (100, 120)
    # Everything it acknowledged is committed: no wait.
    committed = plan(now_ms=1_001, **{**kwargs, "states": states(1, hw=120)})  # type: ignore[arg-type]
    assert committed.candidates[0].lost is None and committed.waiting == []


def test_the_same_agent_reclaims_at_once_and_a_live_peer_lease_is_left_alone() -> None:
    mine_before = Lease("t", 0, "a", 1, 99_000, "old", 50)
    peer = Lease("t", 1, "b", 1, 99_000, "x", 0)
    p = plan(
        agent_id="a",
        incarnation="new",
        states=states(2),
        leases=[mine_before, peer],
        live_agents=["a", "b"],
        now_ms=5_000,
        owned=set(),
        max_per_agent=50,
        grace_ms=30_000,
    )
    assert [c.state.partition for c in p.candidates] == [0]


def test_capacity_note_names_the_knob_and_how_many_agents_are_missing() -> None:
    assert capacity_note(100, 2, 50) is None
    note = capacity_note(200, 1, 50)
    assert note is not None
    assert "max_partitions_per_agent=50" in note and "3 more agent(s)" in note and "150 partition(s)" in note


def test_the_data_directory_lock_refuses_a_second_process_and_goes_with_the_first(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire("a")
    code = (
        "import sys; from pathlib import Path; from streamhouse.agent.leases import DataDirLock\n"
        "from streamhouse.errors import AgentIdentityInUse\n"
        "try:\n    DataDirLock(Path(sys.argv[1])).acquire('b')\nexcept AgentIdentityInUse as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 3, other.stderr
    assert f"pid {__import__('os').getpid()}, agent id a" in other.stdout
    with pytest.raises(AgentIdentityInUse):
        DataDirLock(tmp_path).acquire("c")  # flock is per open file: the same process is refused too
    lock.release()
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
