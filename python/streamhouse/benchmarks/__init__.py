"""Benchmarks run by ``streamhouse bench``: ``engine`` (the storage engines alone), ``produce`` (end to end
through gRPC) and ``cost`` (object-store requests of a steady stream, per partition count). Modules
starting with ``_`` are their shared parts. Timing lives here, never in tests."""
