"""A module without a ``registry``: naming it with --handlers is a usage error."""

HANDLERS: dict[str, object] = {}
