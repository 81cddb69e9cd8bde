"""Shared test set-up. Service fixtures live in tests/fixtures/: each starts a real server (a private
PostgreSQL cluster, a moto S3 server) and fails instead of skipping when CI=true."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.s3", "tests.fixtures.faultproxy"]
