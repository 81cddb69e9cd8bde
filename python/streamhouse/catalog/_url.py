"""Parsing and redacting ``metadata_url`` values; a password never reaches a log line or an error."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgres", "postgresql")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (also ``password=`` query parameters)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostinfo}" if sep else f"{user}@{hostinfo}"
    query = "&".join(
        f"{k}=***" if k.lower() in ("password", "sslpassword") else f"{k}{sep}{val}"
        for k, sep, val in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scheme_of(url: str) -> str | None:
    """The URL scheme if ``url`` looks like ``scheme://...``, else None (a plain path)."""
    head, sep, _ = url.partition("://")
    if not sep or not head or "/" in head or "\\" in head:
        return None
    return head.lower()
