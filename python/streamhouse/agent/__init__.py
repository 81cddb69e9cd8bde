"""The agent wing: lifecycle and leases (core), one partition's write path (partition), the agent-level
flush into one object (flush, uploader), committed reads (segcache), and the object collector (collector).

Imports go downward only: core uses the others; nothing here imports ``core``.
"""

from streamhouse.agent.core import Agent

__all__ = ["Agent"]
