"""Handlers for both versions of the ``fulfil`` saga."""

from concordia import Registry

registry = Registry()
registry.add_action("shop.reserve", lambda ctx: {"ok": True})
registry.add_compensation("shop.release", lambda ctx: None)
registry.add_action("shop.ship", lambda ctx: {"v": 1})
registry.add_action("shop.deliver", lambda ctx: {"v": 2})
