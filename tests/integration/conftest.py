"""Fixtures for integration tests: the two storage set-ups every end-to-end test runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.wheel import build_or_take_wheel


@pytest.fixture(params=["embedded", "postgres+s3"])
def storage_setup(request: pytest.FixtureRequest) -> dict[str, str]:
    """Agent settings for one storage set-up: the embedded default (SQLite file and a local object
    directory inside the data directory: no settings) or production (a real PostgreSQL database and a
    real S3-compatible HTTP server, both started by the fixtures in tests/fixtures/)."""
    if request.param == "embedded":
        return {}
    postgres_url: str = request.getfixturevalue("postgres_url")
    s3_server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return {
        "metadata_url": postgres_url,
        "object_store": f"s3://{bucket}/streamhouse",
        "s3_endpoint_url": s3_server.endpoint_url,
    }


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution's wheel (tests/integration/wheel.py): built once per session, or given."""
    return build_or_take_wheel(tmp_path_factory.mktemp("wheel"))
