"""Benchmarks run by ``streamhouse bench``: ``engine`` (the storage engines alone) and ``produce``
(end to end through gRPC). Timing lives here, never in tests."""
