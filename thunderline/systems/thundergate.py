"""ThunderGate: email checks, magic-link tokens and the MagicLinkSender.

The sender takes the caller's ``correlation_id`` as a required argument and writes it
on every outbox row and telemetry record, failures included, so an email problem can
be traced to the onboarding flow that caused it. Tokens are kept here, not in a saga's
journal: a step's result carries only the token id, and the secret never leaves the
gate except inside the email.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from thunderline.systems.base import System
from thunderline.systems.db import iso, new_id
from thunderline.systems.errors import NotFound, Rejected

TOKEN_STATUSES = ("issued", "revoked")
DEFAULT_TOKEN_TTL = timedelta(minutes=15)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


@dataclass(frozen=True, slots=True)
class MagicToken:
    token_id: str
    user_id: str
    email: str
    status: str
    issued_at: str
    expires_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class SentEmail:
    message_id: str
    to_email: str
    subject: str
    link: str
    correlation_id: str
    idempotency_key: str | None
    sent_at: str


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    seq: int
    name: str
    correlation_id: str
    attributes: dict[str, Any]
    at: str


class ThunderGate(System):
    name = "thundergate"
    OPERATIONS = ("check_email", "issue_token", "revoke_token", "send_magic_link")
    SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS thundergate_tokens (
        token_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        email TEXT NOT NULL,
        secret TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN {TOKEN_STATUSES!r}),
        idempotency_key TEXT UNIQUE,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE IF NOT EXISTS thundergate_outbox (
        message_id TEXT PRIMARY KEY,
        to_email TEXT NOT NULL,
        subject TEXT NOT NULL,
        link TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        sent_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS thundergate_telemetry (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        attributes TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS thundergate_telemetry_corr
        ON thundergate_telemetry (correlation_id);
    """

    def check_email(self, email: str) -> str:
        """The address, trimmed, if it is well formed; ``Rejected`` otherwise."""
        trip = self._guard("check_email")
        address = email.strip()
        if len(address) > 254 or not _EMAIL.match(address):
            raise Rejected(self.name, f"{email!r} is not a valid email address")
        trip.finish()
        return address

    # --- tokens ---------------------------------------------------------------------

    def issue_token(self, user_id: str, email: str, idempotency_key: str, *,
                    ttl: timedelta = DEFAULT_TOKEN_TTL) -> MagicToken:
        """Issue a single-use login token; the same key returns the same token."""
        trip = self._guard("issue_token")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT token_id FROM thundergate_tokens"
                               " WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if row is not None:
                token_id = str(row[0])
            else:
                token_id = new_id()
                issued = self._clock()
                conn.execute("INSERT INTO thundergate_tokens (token_id, user_id, email, secret,"
                             " status, idempotency_key, issued_at, expires_at)"
                             " VALUES (?, ?, ?, ?, 'issued', ?, ?, ?)",
                             (token_id, user_id, email, secrets.token_urlsafe(32),
                              idempotency_key, iso(issued), iso(issued + ttl)))
        trip.finish()
        return self.token(token_id)

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token so its link stops working; ``False`` if it already was."""
        trip = self._guard("revoke_token")
        with self._db.transaction() as conn:
            changed = conn.execute("UPDATE thundergate_tokens SET status = 'revoked',"
                                   " revoked_at = ? WHERE token_id = ? AND status = 'issued'",
                                   (self._now(), token_id)).rowcount > 0
        trip.finish()
        return changed

    def token(self, token_id: str) -> MagicToken:
        row = self._db.row("SELECT * FROM thundergate_tokens WHERE token_id = ?", (token_id,))
        if row is None:
            raise NotFound(self.name, f"no token {token_id}")
        return _token(row)

    def token_for_key(self, idempotency_key: str) -> MagicToken | None:
        row = self._db.row("SELECT * FROM thundergate_tokens WHERE idempotency_key = ?",
                           (idempotency_key,))
        return None if row is None else _token(row)

    def tokens(self, user_id: str | None = None) -> list[MagicToken]:
        if user_id is None:
            rows = self._db.rows("SELECT * FROM thundergate_tokens ORDER BY issued_at")
        else:
            rows = self._db.rows("SELECT * FROM thundergate_tokens WHERE user_id = ?"
                                 " ORDER BY issued_at", (user_id,))
        return [_token(r) for r in rows]

    def token_secret(self, token_id: str) -> str:
        """The secret of a live token, for the sender to put in the link."""
        row = self._db.row("SELECT secret, status, expires_at FROM thundergate_tokens"
                           " WHERE token_id = ?", (token_id,))
        if row is None:
            raise NotFound(self.name, f"no token {token_id}")
        if row["status"] != "issued":
            raise Rejected(self.name, f"token {token_id} is {row['status']}")
        if row["expires_at"] <= self._now():
            raise Rejected(self.name, f"token {token_id} expired at {row['expires_at']}")
        return str(row["secret"])

    # --- MagicLinkSender ------------------------------------------------------------

    def send_magic_link(self, email: str, token: str, redirect: str, *,
                        correlation_id: str, idempotency_key: str | None = None) -> str:
        """Email a login link; returns the message id.

        ``correlation_id`` is required and recorded on the outbox row and in telemetry,
        for failed sends too. With an ``idempotency_key`` a repeated call (a retry after
        a lost response) returns the first message instead of sending a second email.
        """
        if not correlation_id:
            raise ValueError("send_magic_link needs a correlation_id")
        trip = self._trip("send_magic_link")
        try:
            trip.item(0)
            message_id = self._send(email, token, redirect, correlation_id, idempotency_key)
        except Exception as error:
            self._record("magic_link.failed", correlation_id, {"to": email, "error": str(error)})
            raise
        # A failure planned past the send is a response lost on the way back: the email
        # went out (and is recorded as sent); only the caller does not know it.
        trip.finish()
        return message_id

    def _send(self, email: str, token: str, redirect: str, correlation_id: str,
              idempotency_key: str | None) -> str:
        with self._db.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute("SELECT message_id FROM thundergate_outbox"
                                   " WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return str(row[0])
            found = conn.execute("SELECT token_id, email, status FROM thundergate_tokens"
                                 " WHERE secret = ?", (token,)).fetchone()
            if found is None or found["status"] != "issued":
                raise Rejected(self.name, "the token is unknown or revoked")
            if found["email"].lower() != email.lower():
                raise Rejected(self.name, "the token was issued for another address")
            message_id = new_id()
            now = self._now()
            conn.execute("INSERT INTO thundergate_outbox (message_id, to_email, subject, link,"
                         " correlation_id, idempotency_key, sent_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (message_id, email, "Your Thunderline sign-in link",
                          _with_token(redirect, token), correlation_id, idempotency_key, now))
            self._record("magic_link.sent", correlation_id,
                         {"to": email, "message_id": message_id,
                          "token_id": found["token_id"]})
        return message_id

    def _record(self, name: str, correlation_id: str, attributes: dict[str, Any]) -> None:
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO thundergate_telemetry (name, correlation_id, attributes, at)"
                         " VALUES (?, ?, ?, ?)",
                         (name, correlation_id, json.dumps(attributes), self._now()))

    def outbox(self, correlation_id: str | None = None) -> list[SentEmail]:
        if correlation_id is None:
            rows = self._db.rows("SELECT * FROM thundergate_outbox ORDER BY sent_at")
        else:
            rows = self._db.rows("SELECT * FROM thundergate_outbox WHERE correlation_id = ?"
                                 " ORDER BY sent_at", (correlation_id,))
        return [SentEmail(r["message_id"], r["to_email"], r["subject"], r["link"],
                          r["correlation_id"], r["idempotency_key"], r["sent_at"])
                for r in rows]

    def telemetry(self, correlation_id: str | None = None) -> list[TelemetryRecord]:
        if correlation_id is None:
            rows = self._db.rows("SELECT * FROM thundergate_telemetry ORDER BY seq")
        else:
            rows = self._db.rows("SELECT * FROM thundergate_telemetry WHERE correlation_id = ?"
                                 " ORDER BY seq", (correlation_id,))
        return [TelemetryRecord(int(r["seq"]), r["name"], r["correlation_id"],
                                json.loads(r["attributes"]), r["at"]) for r in rows]


def _with_token(redirect: str, token: str) -> str:
    """``redirect`` with ``token=<secret>`` added to its query string."""
    parts = urlsplit(redirect)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _token(row: Any) -> MagicToken:
    return MagicToken(row["token_id"], row["user_id"], row["email"], row["status"],
                      row["issued_at"], row["expires_at"], row["revoked_at"])
