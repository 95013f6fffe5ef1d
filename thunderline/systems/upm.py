"""ThunderBolt's UPM snapshots: shadow-trained snapshots that may be promoted to active.

A snapshot moves ``shadow -> activating -> active`` and, when a newer one is activated,
``active -> retired``. At most one snapshot is active; activating one retires the one it
replaces in the same transaction and remembers it, so deactivating can reinstate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thunderline.systems.base import System
from thunderline.systems.db import new_id
from thunderline.systems.errors import NotFound, Rejected

SNAPSHOT_STATUSES = ("shadow", "activating", "active", "retired")


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: str
    drift_score: float
    shadow_validated: bool
    status: str
    created_at: str
    activated_at: str | None
    replaced_snapshot_id: str | None


class UPMSnapshots(System):
    name = "upm"
    OPERATIONS = ("load", "mark_activating", "mark_shadow", "activate", "deactivate")
    SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS upm_snapshots (
        snapshot_id TEXT PRIMARY KEY,
        drift_score REAL NOT NULL CHECK (drift_score >= 0),
        shadow_validated INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN {SNAPSHOT_STATUSES!r}),
        created_at TEXT NOT NULL,
        activated_at TEXT,
        replaced_snapshot_id TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS upm_one_active ON upm_snapshots (status)
        WHERE status = 'active';
    """

    def create_snapshot(self, drift_score: float, *, shadow_validated: bool = True,
                        status: str = "shadow") -> str:
        if status not in SNAPSHOT_STATUSES:
            raise ValueError(f"unknown snapshot status {status!r}")
        snapshot_id = new_id()
        now = self._now()
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO upm_snapshots (snapshot_id, drift_score, shadow_validated,"
                         " status, created_at, activated_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (snapshot_id, drift_score, int(shadow_validated), status, now,
                          now if status == "active" else None))
        return snapshot_id

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """Inspect a snapshot (no failure injection: this is how tests look)."""
        row = self._db.row("SELECT * FROM upm_snapshots WHERE snapshot_id = ?", (snapshot_id,))
        if row is None:
            raise NotFound(self.name, f"no snapshot {snapshot_id}")
        return _snapshot(row)

    def snapshots(self) -> list[Snapshot]:
        return [_snapshot(r) for r in
                self._db.rows("SELECT * FROM upm_snapshots ORDER BY created_at, snapshot_id")]

    def active_snapshot(self) -> Snapshot | None:
        row = self._db.row("SELECT * FROM upm_snapshots WHERE status = 'active'")
        return None if row is None else _snapshot(row)

    def load(self, snapshot_id: str) -> Snapshot:
        """The remote read a saga makes to learn a snapshot's drift and validation."""
        trip = self._guard("load")
        found = self.snapshot(snapshot_id)
        trip.finish()
        return found

    def mark_activating(self, snapshot_id: str) -> str:
        """``shadow -> activating``; returns the status it had (repeating is harmless)."""
        trip = self._guard("mark_activating")
        with self._db.transaction() as conn:
            status = self._status(conn, snapshot_id)
            if status == "shadow":
                conn.execute("UPDATE upm_snapshots SET status = 'activating'"
                             " WHERE snapshot_id = ?", (snapshot_id,))
            elif status != "activating":
                raise Rejected(self.name, f"snapshot {snapshot_id} is {status}, not shadow")
        trip.finish()
        return status

    def mark_shadow(self, snapshot_id: str) -> str:
        """``activating -> shadow`` (undoes ``mark_activating``); returns the old status."""
        trip = self._guard("mark_shadow")
        with self._db.transaction() as conn:
            status = self._status(conn, snapshot_id)
            if status == "activating":
                conn.execute("UPDATE upm_snapshots SET status = 'shadow'"
                             " WHERE snapshot_id = ?", (snapshot_id,))
            elif status != "shadow":
                raise Rejected(self.name, f"snapshot {snapshot_id} is {status}; "
                                          "deactivate it before returning it to shadow")
        trip.finish()
        return status

    def activate(self, snapshot_id: str) -> Snapshot:
        """``activating -> active``, retiring the snapshot that was active, atomically.

        Repeating it on an active snapshot returns it unchanged (same ``activated_at``).
        """
        trip = self._guard("activate")
        with self._db.transaction() as conn:
            status = self._status(conn, snapshot_id)
            if status == "activating":
                current = conn.execute("SELECT snapshot_id FROM upm_snapshots"
                                       " WHERE status = 'active'").fetchone()
                replaced = None if current is None else str(current[0])
                if replaced is not None:
                    conn.execute("UPDATE upm_snapshots SET status = 'retired'"
                                 " WHERE snapshot_id = ?", (replaced,))
                conn.execute("UPDATE upm_snapshots SET status = 'active', activated_at = ?,"
                             " replaced_snapshot_id = ? WHERE snapshot_id = ?",
                             (self._now(), replaced, snapshot_id))
            elif status != "active":
                raise Rejected(self.name, f"snapshot {snapshot_id} is {status}, not activating")
        trip.finish()
        return self.snapshot(snapshot_id)

    def deactivate(self, snapshot_id: str) -> bool:
        """Undo ``activate``: back to ``activating``, the replaced snapshot active again.

        Returns ``False`` when there was nothing to undo (already deactivated).
        """
        trip = self._guard("deactivate")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT status, replaced_snapshot_id FROM upm_snapshots"
                               " WHERE snapshot_id = ?", (snapshot_id,)).fetchone()
            if row is None:
                raise NotFound(self.name, f"no snapshot {snapshot_id}")
            changed = row["status"] == "active"
            if changed:
                conn.execute("UPDATE upm_snapshots SET status = 'activating', activated_at ="
                             " NULL, replaced_snapshot_id = NULL WHERE snapshot_id = ?",
                             (snapshot_id,))
                if row["replaced_snapshot_id"] is not None:
                    conn.execute("UPDATE upm_snapshots SET status = 'active'"
                                 " WHERE snapshot_id = ? AND status = 'retired'",
                                 (row["replaced_snapshot_id"],))
        trip.finish()
        return bool(changed)

    def _status(self, conn: Any, snapshot_id: str) -> str:
        row = conn.execute("SELECT status FROM upm_snapshots WHERE snapshot_id = ?",
                           (snapshot_id,)).fetchone()
        if row is None:
            raise NotFound(self.name, f"no snapshot {snapshot_id}")
        return str(row[0])


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        snapshot_id=row["snapshot_id"], drift_score=float(row["drift_score"]),
        shadow_validated=bool(row["shadow_validated"]), status=row["status"],
        created_at=row["created_at"], activated_at=row["activated_at"],
        replaced_snapshot_id=row["replaced_snapshot_id"])
