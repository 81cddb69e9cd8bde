"""``streamhouse agents`` and ``streamhouse partitions``: the cluster as the catalog sees it, as text or JSON.

Both read one ``ListAgents`` reply (any agent answers for all of them). Liveness is the catalog's judgement on
its own clock: an agent is live while its heartbeat is younger than the lease ttl; a partition has an owner
while its lease has not expired. JSON has ``null`` where something is unknown (no live owner, no lease).
"""

from __future__ import annotations

import json
from typing import Any

from streamhouse.broker import ClusterView

AGENT_KEYS = ("agent_id", "address", "heartbeat_age_ms", "live", "partitions")
PARTITION_KEYS = (
    "topic",
    "partition",
    "owner_agent_id",
    "owner_address",
    "epoch",
    "high_watermark",
    "lease_expires_in_ms",
)


def agents_json(view: ClusterView) -> str:
    rows = [{key: getattr(a, key) for key in AGENT_KEYS} for a in view.agents]
    return json.dumps({"agents": rows})


def partitions_json(view: ClusterView) -> str:
    rows: list[dict[str, Any]] = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "owner_agent_id": p.owner_agent_id,
            "owner_address": p.owner_address,
            "epoch": p.leader_epoch,
            "high_watermark": p.high_watermark,
            "lease_expires_in_ms": p.lease_expires_in_ms,
        }
        for p in view.partitions
    ]
    return json.dumps({"partitions": rows})


def _ms(value: int) -> str:
    return f"{value}ms" if value < 10_000 else f"{value / 1000:.0f}s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def agents_text(view: ClusterView) -> str:
    if not view.agents:
        return "no agents registered in the catalog"
    rows = [
        [a.agent_id, a.address, _ms(a.heartbeat_age_ms), "yes" if a.live else "NO", str(a.partitions)]
        for a in view.agents
    ]
    lines = _table(["AGENT", "ADDRESS", "HEARTBEAT_AGE", "LIVE", "PARTITIONS"], rows)
    live = sum(a.live for a in view.agents)
    owned = sum(p.owner_agent_id is not None for p in view.partitions)
    lines.append(
        f"{live} of {len(view.agents)} agent(s) live (heartbeat within the lease ttl, "
        f"{view.lease_ttl_ms}ms); {owned} of {len(view.partitions)} partition(s) owned"
    )
    return "\n".join(lines)


def partitions_text(view: ClusterView) -> str:
    if not view.partitions:
        return "no partitions (no topics)"
    rows = []
    for p in view.partitions:
        if p.owner_agent_id is None:
            owner, address, expires = "(no live owner)", "-", "-"
        else:
            owner = p.owner_agent_id
            address = p.owner_address or "(address unknown)"
            expires = _ms(p.lease_expires_in_ms or 0)
        rows.append(
            [p.topic, str(p.partition), owner, address, str(p.leader_epoch), str(p.high_watermark), expires]
        )
    header = ["TOPIC", "PARTITION", "OWNER", "ADDRESS", "EPOCH", "HIGH_WATERMARK", "LEASE_EXPIRES_IN"]
    lines = _table(header, rows)
    unowned = sum(p.owner_agent_id is None for p in view.partitions)
    if unowned:
        lines.append(
            f"{unowned} of {len(view.partitions)} partition(s) have no live owner: produce to them fails "
            "until an agent takes them (see `streamhouse agents`; each agent owns at most "
            "max_partitions_per_agent)"
        )
    return "\n".join(lines)
