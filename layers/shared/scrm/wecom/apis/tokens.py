"""One access token per (corp, agent), shared by every worker through the table.

WeCom rate-limits gettoken and may invalidate older tokens when a new one is fetched
(FACTS §5.1), so a fleet of Lambdas must not each fetch their own. Protocol, on the
AccessToken row (keys.access_token):

1. A process uses its local copy until REFRESH_MARGIN (5 min) before the token expires.
2. Otherwise it reads the row (consistent read); a token with more than the margin left
   is taken as is.
3. If not, it takes the lease: an UpdateItem conditional on `lease_until < now` setting
   `lease_owner` (random per attempt) and `lease_until = now + LEASE_SECONDS`. Exactly one
   worker wins; it calls gettoken and writes token + expiry while clearing the lease
   (conditional on still owning it).
4. The others poll the row with short sleeps, bounded by WAIT_LIMIT (> the lease) and the
   caller's deadline, and use the winner's token. A winner that dies leaves a lease that
   simply runs out; the next poll after that takes it over.
5. A configuration error from gettoken (wrong secret...) is kept on the row as a lease
   owned by `failed:<errcode>` for FAILURE_HOLD: every worker raises ConfigurationError
   at once and nobody calls gettoken again meanwhile, because repeated wrong-secret calls
   get the IP banned for an hour.

`invalidate(token)` removes a token WeCom refused, conditionally on it still being the
stored one, so that a newer token written by another worker survives.

Neither the token nor the secret is ever logged.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from pynamodb.exceptions import DoesNotExist, UpdateError

from scrm.platform.observability import log
from scrm.platform.times import readable
from scrm.store import keys
from scrm.store.models import AccessToken, condition_failed
from scrm.wecom.apis.errors import ConfigurationError, TransientError

REFRESH_MARGIN = 300.0
LEASE_SECONDS = 10.0
WAIT_LIMIT = LEASE_SECONDS + 5.0
POLL_INTERVAL = 0.2
FAILURE_HOLD = 300.0
FAILED_PREFIX = "failed:"

# Calls gettoken and answers (access_token, expires_in seconds).
Fetch = Callable[[], tuple[str, float]]


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


def _lost_condition(err: UpdateError) -> bool:
    return condition_failed(err)


class TokenStore:
    """Process-local cache in front of the shared AccessToken rows; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 *, lease_seconds: float = LEASE_SECONDS, wait_limit: float = WAIT_LIMIT,
                 poll_interval: float = POLL_INTERVAL):
        self._clock = clock
        self._sleep = sleep
        self._lease_seconds = lease_seconds
        self._wait_limit = wait_limit
        self._poll_interval = poll_interval
        self._local: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, corp_id: str, agent_id: str, fetch: Fetch, deadline: float | None = None) -> str:
        """A token valid for at least REFRESH_MARGIN more seconds; `fetch` runs only in the lease winner."""
        key = (corp_id, agent_id)
        token = self._usable(key)
        if token:
            return token
        # Threads of one process queue here, so only one of them goes to the table.
        with self._lock(key):
            token = self._usable(key)
            if token:
                return token
            shared = self._shared(corp_id, agent_id, fetch, deadline)
            with self._guard:
                self._local[key] = shared
            return shared.value

    def invalidate(self, corp_id: str, agent_id: str, token: str) -> None:
        """Forget `token` (WeCom called it invalid or expired) unless a newer one replaced it."""
        key = (corp_id, agent_id)
        with self._guard:
            if (cached := self._local.get(key)) and cached.value == token:
                del self._local[key]
        row = AccessToken(*keys.access_token(corp_id, agent_id))
        try:
            row.update(actions=[AccessToken.token.remove(), AccessToken.token_expires_at.set(0)],
                       condition=AccessToken.token == token)
        except UpdateError as err:
            if not _lost_condition(err):
                raise

    # --- internals ---------------------------------------------------------------------

    def _usable(self, key: tuple[str, str]) -> str | None:
        cached = self._local.get(key)
        return cached.value if cached and self._fresh(cached.expires_at) else None

    def _fresh(self, expires_at: float) -> bool:
        return expires_at - REFRESH_MARGIN > self._clock()

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _shared(self, corp_id: str, agent_id: str, fetch: Fetch, deadline: float | None) -> _Token:
        pk, sk = keys.access_token(corp_id, agent_id)
        give_up = self._clock() + self._wait_limit
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            now = self._clock()
            row = self._read(pk, sk)
            if row is not None and row.token and self._fresh(row.token_expires_at):
                return _Token(row.token, row.token_expires_at)
            if row is None or row.lease_until < now:
                owner = uuid.uuid4().hex
                leased = self._acquire(pk, sk, owner, now)
                if leased is not None:
                    return self._refresh(corp_id, agent_id, leased, owner, fetch)
            elif row.lease_owner and row.lease_owner.startswith(FAILED_PREFIX):
                raise ConfigurationError(int(row.lease_owner[len(FAILED_PREFIX):]),
                                         f"gettoken failed recently; not retried before {readable(row.lease_until)}",
                                         "gettoken")
            if self._clock() + self._poll_interval > give_up:
                raise TransientError(-1, "timed out waiting for another worker's token refresh", "gettoken")
            self._sleep(self._poll_interval)

    def _read(self, pk: str, sk: str) -> AccessToken | None:
        try:
            return AccessToken.get(pk, sk, consistent_read=True)
        except DoesNotExist:
            return None

    def _acquire(self, pk: str, sk: str, owner: str, now: float) -> AccessToken | None:
        """The row as it is once we hold the lease, or None if another worker holds it."""
        row = AccessToken(pk, sk)
        try:
            row.update(
                actions=[AccessToken.entity.set(AccessToken),  # the row may not exist yet
                         AccessToken.lease_owner.set(owner),
                         AccessToken.lease_until.set(now + self._lease_seconds)],
                condition=AccessToken.lease_until.does_not_exist() | (AccessToken.lease_until < now),
            )
        except UpdateError as err:
            if _lost_condition(err):
                return None
            raise
        return row

    def _refresh(self, corp_id: str, agent_id: str, leased: AccessToken, owner: str, fetch: Fetch) -> _Token:
        pk, sk = leased.PK, leased.SK
        # Between our read and our lease, a previous winner may have written a token and
        # released its lease: use that one rather than fetch a second.
        if leased.token and self._fresh(leased.token_expires_at):
            self._release(pk, sk, owner, [AccessToken.lease_until.set(0), AccessToken.lease_owner.remove()])
            return _Token(leased.token, leased.token_expires_at)
        started = self._clock()
        try:
            value, expires_in = fetch()
        except ConfigurationError as err:
            self._release(pk, sk, owner, [AccessToken.lease_owner.set(f"{FAILED_PREFIX}{err.errcode}"),
                                          AccessToken.lease_until.set(self._clock() + FAILURE_HOLD)])
            raise
        except Exception:
            self._release(pk, sk, owner, [AccessToken.lease_until.set(0), AccessToken.lease_owner.remove()])
            raise
        token = _Token(value, started + float(expires_in))  # counted from before the call: errs early
        try:
            AccessToken(pk, sk).update(
                actions=[AccessToken.token.set(token.value), AccessToken.token_expires_at.set(token.expires_at),
                         AccessToken.lease_until.set(0), AccessToken.lease_owner.remove()],
                condition=AccessToken.lease_owner == owner,
            )
        except UpdateError as err:
            if not _lost_condition(err):
                raise
            # We were slower than the lease and another worker took over; prefer its token
            # if it has already stored one (it is the newer), else ours is still good.
            row = self._read(pk, sk)
            if row is not None and row.token and self._fresh(row.token_expires_at):
                return _Token(row.token, row.token_expires_at)
        log.info("wecom access token refreshed", corp_id=corp_id, agent_id=agent_id, expires_in=expires_in)
        return token

    def _release(self, pk: str, sk: str, owner: str, actions: list) -> None:
        try:
            AccessToken(pk, sk).update(actions=actions, condition=AccessToken.lease_owner == owner)
        except UpdateError as err:
            if not _lost_condition(err):
                raise


@lru_cache(maxsize=1)
def default_store() -> TokenStore:
    """The store shared by every client of this process (real clock)."""
    return TokenStore()
