"""Benchmarks run by ``streamhouse bench``: ``engine`` (the storage engines alone), ``produce`` (end to end
through gRPC), ``cost`` (object-store requests of a steady stream, per partition count) and ``failover``
(how long the partitions of a killed or stopped agent cannot be written). Modules starting with ``_`` are
their shared parts. Timing lives here, never in tests."""
