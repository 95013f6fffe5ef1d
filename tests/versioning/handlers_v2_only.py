"""Handlers for version 2 of the ``fulfil`` saga only (shop.ship, version 1's last
step, is gone): runs still on version 1 would be stranded."""

from concordia import Registry

registry = Registry()
registry.add_action("shop.reserve", lambda ctx: {"ok": True})
registry.add_compensation("shop.release", lambda ctx: None)
registry.add_action("shop.deliver", lambda ctx: {"v": 2})
