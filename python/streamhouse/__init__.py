"""StreamHouse: an S3-native event-streaming agent with a Rust hot path."""

from __future__ import annotations

__version__ = "0.1.0"

from streamhouse.client import Client, Consumer, Producer, Record

__all__ = ["Client", "Consumer", "Producer", "Record", "__version__"]
