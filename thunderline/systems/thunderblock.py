"""ThunderBlock: the adapters that serve UPM snapshots, and user vaults.

Every adapter points at one snapshot (``active_snapshot_id``). Moving an adapter to a
new snapshot is one remote call (``sync_adapter``); the system keeps a ledger of each
adapter's snapshot before a sync (per idempotency key) so that a retried sync still
reports the *original* previous snapshot, not the one the first attempt already set.
``restore_adapter`` puts one adapter back. ``sync_adapters``/``restore_adapters`` do the
same for every adapter in one call (a failure midway leaves the earlier ones moved; the
restore is one transaction); they serve runs that started before the saga synced each
adapter as a step of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from thunderline.systems.base import System
from thunderline.systems.db import new_id
from thunderline.systems.errors import NotFound


@dataclass(frozen=True, slots=True)
class Adapter:
    adapter_id: str
    name: str
    active_snapshot_id: str | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class Vault:
    vault_id: str
    user_id: str
    idempotency_key: str | None
    created_at: str


class ThunderBlock(System):
    name = "thunderblock"
    OPERATIONS = ("sync_adapter", "restore_adapter", "sync_adapters", "restore_adapters",
                  "provision_vault", "delete_vault")
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS thunderblock_adapters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        adapter_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL UNIQUE,
        active_snapshot_id TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS thunderblock_sync_ledger (
        idempotency_key TEXT NOT NULL,
        adapter_id TEXT NOT NULL,
        previous_snapshot_id TEXT,
        target_snapshot_id TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (idempotency_key, adapter_id)
    );
    CREATE TABLE IF NOT EXISTS thunderblock_vaults (
        vault_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS thunderblock_vaults_user ON thunderblock_vaults (user_id);
    """

    # --- adapters -------------------------------------------------------------------

    def create_adapter(self, name: str, active_snapshot_id: str | None = None) -> str:
        adapter_id = new_id()
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO thunderblock_adapters (adapter_id, name,"
                         " active_snapshot_id, updated_at) VALUES (?, ?, ?, ?)",
                         (adapter_id, name, active_snapshot_id, self._now()))
        return adapter_id

    def adapters(self) -> list[Adapter]:
        rows = self._db.rows("SELECT * FROM thunderblock_adapters ORDER BY seq")
        return [_adapter(r) for r in rows]

    def adapter(self, adapter_id: str) -> Adapter:
        row = self._db.row("SELECT * FROM thunderblock_adapters WHERE adapter_id = ?",
                           (adapter_id,))
        if row is None:
            raise NotFound(self.name, f"no adapter {adapter_id}")
        return _adapter(row)

    def adapter_snapshots(self) -> dict[str, str | None]:
        """Each adapter's ``active_snapshot_id``, by adapter id."""
        return {a.adapter_id: a.active_snapshot_id for a in self.adapters()}

    def adapter_ids(self) -> list[str]:
        """Every adapter's id, in the order they were created."""
        return [a.adapter_id for a in self.adapters()]

    def sync_adapter(self, snapshot_id: str, adapter_id: str, idempotency_key: str, *,
                     before_change: Callable[[str | None], None] | None = None,
                     ) -> str | None:
        """Point one adapter at ``snapshot_id``; returns the snapshot it was on before.

        ``before_change(previous)`` is called before the adapter changes, so the caller can
        record the previous snapshot durably first. A retry with the same key reports the
        snapshot from before the first attempt (the ledger), not the one it set.
        """
        trip = self._guard("sync_adapter")
        prev = self._move(snapshot_id, self.adapter(adapter_id), idempotency_key,
                          before_change)
        trip.finish()
        return prev

    def _move(self, snapshot_id: str, adapter: Adapter, idempotency_key: str,
              before_change: Callable[[str | None], None] | None) -> str | None:
        """Move one adapter to ``snapshot_id``, its previous snapshot in the ledger first;
        returns that previous snapshot."""
        ledger = self._db.row(
            "SELECT previous_snapshot_id FROM thunderblock_sync_ledger"
            " WHERE idempotency_key = ? AND adapter_id = ?",
            (idempotency_key, adapter.adapter_id))
        # A retry of the same sync finds the adapter already moved; the ledger holds what
        # it pointed at before the first attempt touched it.
        prev = adapter.active_snapshot_id if ledger is None else ledger[0]
        if before_change is not None:
            before_change(prev)
        now = self._now()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO thunderblock_sync_ledger (idempotency_key, adapter_id,"
                " previous_snapshot_id, target_snapshot_id, recorded_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (idempotency_key, adapter.adapter_id, prev, snapshot_id, now))
            conn.execute("UPDATE thunderblock_adapters SET active_snapshot_id = ?,"
                         " updated_at = ? WHERE adapter_id = ?",
                         (snapshot_id, now, adapter.adapter_id))
        return prev

    def restore_adapter(self, snapshot_id: str, adapter_id: str,
                        previous: str | None) -> bool:
        """Put one adapter that the ``snapshot_id`` sync moved back on ``previous``.

        Only while it is still on ``snapshot_id``: one never moved, or moved on by someone
        else since, is not ours to roll back. Returns whether it was restored (False when
        there was nothing to do, so restoring twice is harmless).
        """
        trip = self._guard("restore_adapter")
        with self._db.transaction() as conn:
            changed = conn.execute(
                "UPDATE thunderblock_adapters SET active_snapshot_id = ?, updated_at = ?"
                " WHERE adapter_id = ? AND active_snapshot_id IS ?",
                (previous, self._now(), adapter_id, snapshot_id)).rowcount
        trip.finish()
        return bool(changed) and previous != snapshot_id

    def synced_by(self, key_prefix: str) -> dict[str, str]:
        """Adapters a sync moved, by the idempotency key it used (those starting with
        ``key_prefix``): key -> adapter id."""
        rows = self._db.rows("SELECT idempotency_key, adapter_id FROM thunderblock_sync_ledger"
                             " WHERE substr(idempotency_key, 1, ?) = ?",
                             (len(key_prefix), key_prefix))
        return {r["idempotency_key"]: r["adapter_id"] for r in rows}

    def sync_adapters(self, snapshot_id: str, idempotency_key: str, *,
                      before_change: Callable[[str, str | None], None] | None = None,
                      ) -> dict[str, str | None]:
        """Point every adapter at ``snapshot_id``; returns each one's previous snapshot.

        ``before_change(adapter_id, previous)`` is called before each adapter is changed,
        so the caller can record the previous snapshot durably first. Each adapter is its
        own call (its own transaction): a failure midway leaves the earlier ones changed.
        """
        trip = self._trip("sync_adapters")
        previous: dict[str, str | None] = {}
        for index, adapter in enumerate(self.adapters()):
            trip.item(index)
            before = (None if before_change is None else
                      functools.partial(before_change, adapter.adapter_id))
            previous[adapter.adapter_id] = self._move(snapshot_id, adapter, idempotency_key,
                                                      before)
        trip.finish()
        return previous

    def restore_adapters(self, snapshot_id: str,
                         previous: Mapping[str, str | None]) -> list[str]:
        """Put adapters that ``snapshot_id`` sync moved back on their previous snapshot.

        One transaction: if anything fails, no adapter is restored, and the call can be
        repeated. Only adapters still on ``snapshot_id`` are touched; one that was never
        moved, or was moved on by someone else since, is not ours to roll back. Returns
        the ids of the adapters restored.
        """
        trip = self._trip("restore_adapters")
        restored: list[str] = []
        with self._db.transaction() as conn:
            now = self._now()
            for index, (adapter_id, prev) in enumerate(sorted(previous.items())):
                trip.item(index)
                changed = conn.execute(
                    "UPDATE thunderblock_adapters SET active_snapshot_id = ?, updated_at = ?"
                    " WHERE adapter_id = ? AND active_snapshot_id IS ?",
                    (prev, now, adapter_id, snapshot_id)).rowcount
                if changed and prev != snapshot_id:
                    restored.append(adapter_id)
            trip.finish()
        return restored

    # --- vaults ---------------------------------------------------------------------

    def provision_vault(self, user_id: str, idempotency_key: str) -> str:
        """Create the user's vault; the same idempotency key returns the same vault."""
        trip = self._guard("provision_vault")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT vault_id FROM thunderblock_vaults"
                               " WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if row is not None:
                vault_id = str(row[0])
            else:
                vault_id = new_id()
                conn.execute("INSERT INTO thunderblock_vaults (vault_id, user_id,"
                             " idempotency_key, created_at) VALUES (?, ?, ?, ?)",
                             (vault_id, user_id, idempotency_key, self._now()))
        trip.finish()
        return vault_id

    def delete_vault(self, vault_id: str) -> bool:
        """Delete a vault; ``False`` if it was already gone (deleting is idempotent)."""
        trip = self._guard("delete_vault")
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM thunderblock_vaults WHERE vault_id = ?",
                                   (vault_id,)).rowcount > 0
        trip.finish()
        return deleted

    def vault_for_key(self, idempotency_key: str) -> Vault | None:
        row = self._db.row("SELECT * FROM thunderblock_vaults WHERE idempotency_key = ?",
                           (idempotency_key,))
        return None if row is None else _vault(row)

    def vaults(self, user_id: str | None = None) -> list[Vault]:
        if user_id is None:
            rows = self._db.rows("SELECT * FROM thunderblock_vaults ORDER BY created_at")
        else:
            rows = self._db.rows("SELECT * FROM thunderblock_vaults WHERE user_id = ?"
                                 " ORDER BY created_at", (user_id,))
        return [_vault(r) for r in rows]


def _vault(row: Any) -> Vault:
    return Vault(row["vault_id"], row["user_id"], row["idempotency_key"], row["created_at"])


def _adapter(row: Any) -> Adapter:
    return Adapter(row["adapter_id"], row["name"], row["active_snapshot_id"], row["updated_at"])
