"""A handler module for the validate CLI tests: its registry binds only some handlers.

Every handler of ``user_provisioning`` is bound, plus one action and one compensation of
``cerebros_nas`` with a typo in the compensation's name; nothing of ``upm_activation``.
"""

from __future__ import annotations

from typing import Any

from concordia.registry import Registry

registry = Registry()

USER_PROVISIONING_ACTIONS = [
    "thundergate.validate_email",
    "thunderlink.create_user",
    "thundergate.issue_magic_token",
    "thundergate.send_magic_link",
    "thunderblock.provision_vault",
    "thunderlink.add_community_membership",
]
USER_PROVISIONING_COMPENSATIONS = [
    "thunderlink.delete_user",
    "thundergate.revoke_magic_token",
    "thunderblock.delete_vault",
    "thunderlink.remove_community_membership",
]


def _noop(ctx: Any) -> dict[str, Any]:
    return {}


for _name in USER_PROVISIONING_ACTIONS:
    registry.add_action(_name, _noop)
for _name in USER_PROVISIONING_COMPENSATIONS:
    registry.add_compensation(_name, _noop)


@registry.action("thunderbolt.create_model_run")
def create_model_run(ctx: Any) -> dict[str, Any]:
    return {"run_id": "00000000-0000-0000-0000-000000000001"}


@registry.compensation("thunderbolt.fail_modelrun")  # misspelt on purpose
def fail_model_run(ctx: Any) -> None:
    return None
