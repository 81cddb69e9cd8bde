"""Shared test set-up. Service fixtures live in tests/fixtures/: each starts a real server (a private
PostgreSQL cluster, a moto S3 server) and fails instead of skipping when CI=true."""

import os

# Agents that tests start as processes leave the schema registry's port (127.0.0.1:8081 by default) alone,
# unless a test gives them one: tests, and the engineers running them, share the machine.
os.environ.setdefault("STREAMHOUSE_SCHEMA_REGISTRY_LISTEN", "")

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.s3", "tests.fixtures.faultproxy"]
