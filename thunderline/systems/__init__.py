"""The simulated external systems of the Thunderline platform, one module each.

They keep real state in SQLite tables of their own (see ``thunderline.world.World``,
which opens them all over one database file) and fail on demand through a shared
``FailurePlan``. They know nothing of Concordia.
"""

from thunderline.systems.cerebros import CerebrosBridge, TrainingJob
from thunderline.systems.errors import (
    ExternalSystemError,
    InjectedFailure,
    NotFound,
    Rejected,
    Unavailable,
)
from thunderline.systems.faults import FailurePlan
from thunderline.systems.models import Candidate, ModelRegistry, ModelRun, ModelVersion
from thunderline.systems.thunderblock import Adapter, ThunderBlock, Vault
from thunderline.systems.thundergate import MagicToken, SentEmail, TelemetryRecord, ThunderGate
from thunderline.systems.thunderlink import Community, Membership, ThunderLink, User
from thunderline.systems.upm import Snapshot, UPMSnapshots

__all__ = [
    "Adapter", "Candidate", "CerebrosBridge", "Community", "ExternalSystemError",
    "FailurePlan", "InjectedFailure", "MagicToken", "Membership", "ModelRegistry", "ModelRun",
    "ModelVersion", "NotFound", "Rejected", "SentEmail", "Snapshot", "TelemetryRecord",
    "ThunderBlock", "ThunderGate", "ThunderLink", "TrainingJob", "UPMSnapshots", "Unavailable",
    "User", "Vault",
]
