"""ThunderLink: user accounts, communities and community memberships.

A default community exists from the start; new users join it during provisioning.
Deleting a user does not cascade to memberships (as in the platform, memberships are
rows of their own), so a membership left behind by an incomplete rollback is an orphan
that ``World.orphan_memberships()`` finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thunderline.systems.base import System
from thunderline.systems.db import new_id
from thunderline.systems.errors import NotFound, Rejected

DEFAULT_COMMUNITY_SLUG = "commons"


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    display_name: str
    idempotency_key: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class Community:
    community_id: str
    slug: str
    name: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class Membership:
    membership_id: str
    user_id: str
    community_id: str
    role: str
    idempotency_key: str | None
    created_at: str


class ThunderLink(System):
    name = "thunderlink"
    OPERATIONS = ("create_user", "delete_user", "add_membership", "remove_membership")
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS thunderlink_users (
        user_id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        display_name TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS thunderlink_users_email
        ON thunderlink_users (lower(email));
    CREATE TABLE IF NOT EXISTS thunderlink_communities (
        community_id TEXT PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS thunderlink_memberships (
        membership_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        community_id TEXT NOT NULL,
        role TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at TEXT NOT NULL,
        UNIQUE (user_id, community_id)
    );
    """

    def ensure_default_community(self) -> str:
        with self._db.transaction() as conn:
            row = conn.execute("SELECT community_id FROM thunderlink_communities"
                               " WHERE is_default = 1").fetchone()
            if row is not None:
                return str(row[0])
            community_id = new_id()
            conn.execute("INSERT INTO thunderlink_communities (community_id, slug, name,"
                         " is_default, created_at) VALUES (?, ?, ?, 1, ?)",
                         (community_id, DEFAULT_COMMUNITY_SLUG, "Thunderline Commons",
                          self._now()))
            return community_id

    def default_community(self) -> Community:
        row = self._db.row("SELECT * FROM thunderlink_communities WHERE is_default = 1")
        if row is None:
            raise NotFound(self.name, "no default community")
        return _community(row)

    def communities(self) -> list[Community]:
        return [_community(r) for r in
                self._db.rows("SELECT * FROM thunderlink_communities ORDER BY created_at")]

    # --- users ----------------------------------------------------------------------

    def create_user(self, email: str, display_name: str, idempotency_key: str) -> str:
        """Create an account; the same idempotency key returns the same user."""
        trip = self._guard("create_user")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT user_id FROM thunderlink_users WHERE idempotency_key = ?",
                               (idempotency_key,)).fetchone()
            if row is not None:
                user_id = str(row[0])
            else:
                if conn.execute("SELECT 1 FROM thunderlink_users WHERE lower(email) = lower(?)",
                                (email,)).fetchone():
                    raise Rejected(self.name, f"an account for {email} already exists")
                user_id = new_id()
                conn.execute("INSERT INTO thunderlink_users (user_id, email, display_name,"
                             " idempotency_key, created_at) VALUES (?, ?, ?, ?, ?)",
                             (user_id, email, display_name, idempotency_key, self._now()))
        trip.finish()
        return user_id

    def delete_user(self, user_id: str) -> bool:
        """Delete an account; ``False`` if it was already gone."""
        trip = self._guard("delete_user")
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM thunderlink_users WHERE user_id = ?",
                                   (user_id,)).rowcount > 0
        trip.finish()
        return deleted

    def user(self, user_id: str) -> User:
        row = self._db.row("SELECT * FROM thunderlink_users WHERE user_id = ?", (user_id,))
        if row is None:
            raise NotFound(self.name, f"no user {user_id}")
        return _user(row)

    def user_for_key(self, idempotency_key: str) -> User | None:
        """The user created under ``idempotency_key``, if any (and not deleted)."""
        row = self._db.row("SELECT * FROM thunderlink_users WHERE idempotency_key = ?",
                           (idempotency_key,))
        return None if row is None else _user(row)

    def find_user_by_email(self, email: str) -> User | None:
        row = self._db.row("SELECT * FROM thunderlink_users WHERE lower(email) = lower(?)",
                           (email,))
        return None if row is None else _user(row)

    def users(self) -> list[User]:
        return [_user(r) for r in
                self._db.rows("SELECT * FROM thunderlink_users ORDER BY created_at")]

    # --- memberships ----------------------------------------------------------------

    def add_membership(self, user_id: str, community_id: str, idempotency_key: str, *,
                       role: str = "member") -> str:
        """Join a community; joining again (or repeating the key) returns the membership."""
        trip = self._guard("add_membership")
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM thunderlink_communities WHERE community_id = ?",
                            (community_id,)).fetchone() is None:
                raise NotFound(self.name, f"no community {community_id}")
            row = conn.execute("SELECT membership_id FROM thunderlink_memberships"
                               " WHERE idempotency_key = ? OR (user_id = ? AND community_id = ?)",
                               (idempotency_key, user_id, community_id)).fetchone()
            if row is not None:
                membership_id = str(row[0])
            else:
                membership_id = new_id()
                conn.execute("INSERT INTO thunderlink_memberships (membership_id, user_id,"
                             " community_id, role, idempotency_key, created_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             (membership_id, user_id, community_id, role, idempotency_key,
                              self._now()))
        trip.finish()
        return membership_id

    def remove_membership(self, membership_id: str) -> bool:
        """Delete a membership; ``False`` if it was already gone."""
        trip = self._guard("remove_membership")
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM thunderlink_memberships"
                                   " WHERE membership_id = ?", (membership_id,)).rowcount > 0
        trip.finish()
        return deleted

    def membership_for_key(self, idempotency_key: str) -> Membership | None:
        row = self._db.row("SELECT * FROM thunderlink_memberships WHERE idempotency_key = ?",
                           (idempotency_key,))
        return None if row is None else _membership(row)

    def memberships(self, user_id: str | None = None) -> list[Membership]:
        if user_id is None:
            rows = self._db.rows("SELECT * FROM thunderlink_memberships ORDER BY created_at")
        else:
            rows = self._db.rows("SELECT * FROM thunderlink_memberships WHERE user_id = ?"
                                 " ORDER BY created_at", (user_id,))
        return [_membership(r) for r in rows]


def _user(row: Any) -> User:
    return User(row["user_id"], row["email"], row["display_name"], row["idempotency_key"],
                row["created_at"])


def _community(row: Any) -> Community:
    return Community(row["community_id"], row["slug"], row["name"], bool(row["is_default"]))


def _membership(row: Any) -> Membership:
    return Membership(row["membership_id"], row["user_id"], row["community_id"], row["role"],
                      row["idempotency_key"], row["created_at"])
