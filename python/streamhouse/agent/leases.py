"""Coordination between agents: one identity per process, and which partitions an agent should own.

Three things live here, apart from the agent's lease loop (core.py) that uses them:

- ``DataDirLock``: an exclusive ``flock`` on ``DATA_DIR/agent.lock`` for the life of the process. A second
  agent on the same data directory refuses to start: two processes appending to one WAL would both
  acknowledge the same offsets.
- ``claim_identity``: registers this process's incarnation under its agent id, refusing while another
  live process heartbeats under the same id (two agents started without ``--agent-id`` on one host name, or
  a copy of a pod). A predecessor that stopped heartbeating (killed) is taken over after at most the lease
  ttl; one on the same host and data directory at once, since this process holds that directory's lock.
- ``plan``: from the catalog's partitions, leases and live agents, the partitions this agent should try to
  take (free ones, lowest first, up to its fair share) and how many it should hand over (above its
  share). Agents acquiring at once may try the same partition: the catalog's compare-and-set gives it to
  one, and the other goes on to the next. A lease whose
  holder died with records it acknowledged (acks=wal) but never committed is left alone for
  ``failover_grace_ms`` so that the holder can come back and commit them; past that it is taken and the loss
  is reported, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamhouse.catalog.base import AgentInfo, Catalog, Lease, PartitionState
from streamhouse.errors import AgentIdentityInUse
from streamhouse.logs import get_logger

log = get_logger(__name__)

LOCK_FILE = "agent.lock"


def new_incarnation() -> str:
    """A fresh id for this process: leases and the agent row carry it."""
    return uuid.uuid4().hex[:16]


class DataDirLock:
    """An exclusive, non-blocking ``flock`` on ``DATA_DIR/agent.lock``, held until ``release`` or exit
    (the kernel drops it when the process dies, so a crash never leaves it behind)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, agent_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AgentIdentityInUse(
                f"data directory {self.path.parent} is in use by another agent process "
                f"({holder or 'unknown'}); each agent needs its own --data-dir (STREAMHOUSE_DATA_DIR): "
                "stop the other one, or give this one another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, agent id {agent_id}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def identity_metadata(data_dir: Path) -> dict[str, str]:
    """What the agent row says about where this process runs (to recognise its own predecessor)."""
    return {"host": socket.gethostname(), "data_dir": str(Path(data_dir).resolve()), "pid": str(os.getpid())}


async def claim_identity(
    catalog: Catalog,
    agent_id: str,
    incarnation: str,
    address: str,
    metadata: Mapping[str, str],
    *,
    ttl_ms: int,
    poll_ms: int,
) -> None:
    """Register ``incarnation`` as the process of ``agent_id``; see the module doc. Raises
    AgentIdentityInUse if another process keeps heartbeating under the id for longer than ``ttl_ms``."""
    waited_since: float | None = None
    while True:
        row = next((a for a in await catalog.list_agents() if a.agent_id == agent_id), None)
        now = await catalog.now_ms()
        if row is None or row.incarnation == incarnation:
            break
        age = now - row.heartbeat_at_ms
        if age > ttl_ms:
            log.info(
                "Agent id %s: taking over from its previous process (%s, last heartbeat %.1fs ago)",
                agent_id,
                row.address,
                age / 1000,
            )
            break
        if _same_place(row, metadata):
            # This process holds the data directory's lock, so the process that wrote that row is gone.
            log.info(
                "Agent id %s: taking over from its previous process on this host and data directory "
                "(pid %s, no longer running)",
                agent_id,
                row.metadata.get("pid", "?"),
            )
            break
        if waited_since is None:
            waited_since = time.monotonic()
            log.warning(
                "Agent id %s is in use by a live process at %s (heartbeat %.1fs ago, host %s); waiting up to "
                "%.0fs for it to stop heartbeating",
                agent_id,
                row.address,
                age / 1000,
                row.metadata.get("host", "?"),
                ttl_ms / 1000,
            )
        elif time.monotonic() - waited_since > (ttl_ms + poll_ms) / 1000:
            raise AgentIdentityInUse(
                f"agent id {agent_id!r} is in use by a live agent at {row.address} (host "
                f"{row.metadata.get('host', '?')}, data directory {row.metadata.get('data_dir', '?')}, "
                f"heartbeat {age / 1000:.1f}s ago): give this agent its own --agent-id "
                "(STREAMHOUSE_AGENT_ID), or stop the other one"
            )
        await asyncio.sleep(poll_ms / 1000)
    await catalog.register_agent(agent_id, address, metadata, incarnation=incarnation)


def _same_place(row: AgentInfo, metadata: Mapping[str, str]) -> bool:
    return bool(row.metadata.get("host")) and all(
        row.metadata.get(k) == metadata.get(k) for k in ("host", "data_dir")
    )


def fair_share(partitions: int, live_agents: int, max_per_agent: int) -> int:
    """The most partitions one of ``live_agents`` should own: an even split, rounded up, capped by
    ``max_partitions_per_agent``."""
    return min(max_per_agent, -(-partitions // max(live_agents, 1)))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A partition this agent may take now. ``lost``: offsets [start, end) that its previous holder
    acknowledged (acks=wal) and never committed, past the grace period: taking it loses them."""

    state: PartitionState
    previous: Lease | None
    lost: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A partition left alone for now: its lapsed holder acknowledged offsets [start, end) it has not
    committed, and may still come back within ``remaining_ms``."""

    state: PartitionState
    holder: Lease
    remaining_ms: int


@dataclass(frozen=True, slots=True)
class Plan:
    share: int
    live_agents: int
    candidates: list[Candidate]
    waiting: list[Waiting]
    shed: int  # how many owned partitions to hand over


def plan(
    *,
    agent_id: str,
    incarnation: str,
    states: Sequence[PartitionState],
    leases: Sequence[Lease],
    live_agents: Sequence[str],
    now_ms: int,
    owned: set[tuple[str, int]],
    max_per_agent: int,
    grace_ms: int,
) -> Plan:
    live = set(live_agents) | {agent_id}
    share = fair_share(len(states), len(live), max_per_agent)
    by_key = {(le.topic, le.partition): le for le in leases}
    candidates: list[Candidate] = []
    waiting: list[Waiting] = []
    for state in states:
        key = (state.topic, state.partition)
        if key in owned:
            continue
        lease = by_key.get(key)
        if lease is None:
            candidates.append(Candidate(state, None))
        elif lease.agent_id == agent_id and lease.incarnation != incarnation:
            candidates.append(Candidate(state, lease))  # this agent's previous process: reclaim at once
        elif lease.expires_at_ms > now_ms:
            continue  # held
        elif lease.agent_id == agent_id or lease.acked_offset <= state.high_watermark:
            candidates.append(Candidate(state, lease))
        else:
            lapsed = now_ms - lease.expires_at_ms
            if lapsed < grace_ms:
                waiting.append(Waiting(state, lease, grace_ms - lapsed))
            else:
                candidates.append(Candidate(state, lease, (state.high_watermark, lease.acked_offset)))
    return Plan(
        share=share,
        live_agents=len(live),
        candidates=candidates,
        waiting=waiting,
        shed=max(0, len(owned) - share),
    )


def capacity_note(partitions: int, live_agents: int, max_per_agent: int) -> str | None:
    """What to tell a user when the live agents cannot own every partition; None when they can."""
    capacity = live_agents * max_per_agent
    if partitions <= capacity:
        return None
    needed = -(-partitions // max_per_agent)
    return (
        f"{partitions} partitions exceed what the {live_agents} live agent(s) may own ({capacity} = "
        f"{live_agents} x max_partitions_per_agent={max_per_agent}): {partitions - capacity} partition(s) "
        f"stay unowned and refuse writes until {needed - live_agents} more agent(s) join or "
        "max_partitions_per_agent (STREAMHOUSE_MAX_PARTITIONS_PER_AGENT) is raised"
    )


__all__ = [
    "Candidate",
    "DataDirLock",
    "Plan",
    "Waiting",
    "capacity_note",
    "claim_identity",
    "fair_share",
    "identity_metadata",
    "new_incarnation",
    "plan",
]
