"""``concordia lint``: the gap audit — the seed's kinds of gap, found automatically."""

from concordia.lint.audit import Finding, audit

__all__ = ["Finding", "audit"]
