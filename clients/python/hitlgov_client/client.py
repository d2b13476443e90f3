"""`Client` and `AsyncClient`: the integration API v1 over httpx, sync and asyncio alike.

Both share how requests are built and answers read (`_Api`); they differ only in how they
send and sleep. `wait` polls with exponential backoff and full jitter, and a 429 or 503
answer's Retry-After is honoured (never polled sooner).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .errors import RateLimited, WaitTimeout, error_for
from .models import FINAL, Proposal

USER_AGENT = "hitlgov-client-python/0.1"
PROPOSAL_FIELDS = ("target", "changes", "amount", "currency", "customer_impact", "evidence", "rationale", "context",
                   "callback_url")


class Backoff:
    """Delays between polls: `first` seconds, times `factor` each time, at most `most`; full jitter
    (a random share between half and all of it) so many waiting clients do not poll in step."""

    def __init__(self, first: float = 0.5, factor: float = 1.6, most: float = 15.0, rng: random.Random | None = None):
        self.first, self.factor, self.most = first, factor, most
        self.rng = rng or random.Random()

    def delays(self):
        delay = self.first
        while True:
            yield delay * self.rng.uniform(0.5, 1.0)
            delay = min(delay * self.factor, self.most)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class _Api:
    """What both clients share: requests as the contract spells them, answers read into types or errors."""

    def __init__(self, base_url: str, api_key: str, *, agent: str = "", backoff: Backoff | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.agent = agent
        self.backoff = backoff or Backoff()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"}

    def _submit_body(self, connector: str, action: str, *, idempotency_key: str, agent: str | None, confidence: float,
                     **fields: Any) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(PROPOSAL_FIELDS))
        if unknown:
            raise TypeError(f"unknown proposal fields: {', '.join(unknown)}")
        body = {"idempotency_key": idempotency_key, "agent": agent or self.agent, "connector": connector,
                "action": action, "confidence": confidence}
        body.update({name: value for name, value in fields.items() if value is not None})
        if isinstance(body.get("target"), tuple):
            body["target"] = {"type": str(body["target"][0]), "id": str(body["target"][1])}
        return body

    @staticmethod
    def _read(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:500]}
        if response.status_code >= 400:
            raise error_for(response.status_code, body, retry_after_seconds(response.headers.get("Retry-After")))
        return body

    @staticmethod
    def _pause(error: RateLimited | None, planned: float) -> float:
        return max(planned, error.retry_after or 0.0) if error else planned


class Client(_Api):
    """The API v1, synchronously.

    `Client(base_url, api_key, agent="refund-bot")`; `agent` is the default agent name of
    submitted proposals. `sleep` and `clock` are for tests that control time.
    """

    def __init__(self, base_url: str, api_key: str, *, agent: str = "", timeout: float = 30.0,
                 backoff: Backoff | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        super().__init__(base_url, api_key, agent=agent, backoff=backoff)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers(), timeout=timeout, transport=transport)
        self._sleep, self._clock = sleep, clock

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._read(self._http.request(method, path, json=body))

    def submit(self, connector: str, action: str, *, idempotency_key: str, confidence: float, agent: str | None = None,
               **fields: Any) -> Proposal:
        """Propose an action (target, changes, amount, currency, customer_impact, evidence, rationale,
        context, callback_url). The same key and body again returns the first proposal."""
        body = self._submit_body(connector, action, idempotency_key=idempotency_key, agent=agent,
                                 confidence=confidence, **fields)
        return Proposal.from_json(self._call("POST", "/api/v1/proposals/", body))

    def get(self, proposal_id: str) -> Proposal:
        return Proposal.from_json(self._call("GET", f"/api/v1/proposals/{proposal_id}/"))

    def cancel(self, proposal_id: str, reason: str = "") -> Proposal:
        return Proposal.from_json(self._call("POST", f"/api/v1/proposals/{proposal_id}/cancel/", {"reason": reason}))

    def answer_info(self, proposal_id: str, answer: str, *, evidence: list[dict] | None = None, rationale: str | None = None,
                    changes: dict | None = None) -> Proposal:
        """Answer a reviewer's request for more information; a revised change is previewed and decided again."""
        body = _info_body(answer, evidence, rationale, changes)
        return Proposal.from_json(self._call("POST", f"/api/v1/proposals/{proposal_id}/info/", body))

    def report_outcome(self, proposal_id: str, *, ok: bool, result: dict | None = None, error: str = "") -> Proposal:
        """For a connector whose actions this integration carries out: how it went. Once per approval."""
        body = {"ok": ok, "result": result or {}, "error": error}
        return Proposal.from_json(self._call("POST", f"/api/v1/proposals/{proposal_id}/outcome/", body))

    def wait(self, proposal_id: str, timeout: float = 3600.0, *, until: Collection[str] = FINAL) -> Proposal:
        """Poll until the proposal's status is one of `until` (default: final); WaitTimeout after `timeout` s."""
        deadline = self._clock() + timeout
        delays = self.backoff.delays()
        last = _unknown(proposal_id)
        while True:
            limited = None
            try:
                last = self.get(proposal_id)
                if last.status in until:
                    return last
            except RateLimited as exc:
                limited = exc
            pause = self._pause(limited, next(delays))
            if self._clock() + pause > deadline:
                raise WaitTimeout(last, timeout)
            self._sleep(pause)


class AsyncClient(_Api):
    """The API v1 for asyncio: the same methods as `Client`, awaited."""

    def __init__(self, base_url: str, api_key: str, *, agent: str = "", timeout: float = 30.0,
                 backoff: Backoff | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.monotonic):
        super().__init__(base_url, api_key, agent=agent, backoff=backoff)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=timeout,
                                       transport=transport)
        self._sleep, self._clock = sleep, clock

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._read(await self._http.request(method, path, json=body))

    async def submit(self, connector: str, action: str, *, idempotency_key: str, confidence: float,
                     agent: str | None = None, **fields: Any) -> Proposal:
        body = self._submit_body(connector, action, idempotency_key=idempotency_key, agent=agent,
                                 confidence=confidence, **fields)
        return Proposal.from_json(await self._call("POST", "/api/v1/proposals/", body))

    async def get(self, proposal_id: str) -> Proposal:
        return Proposal.from_json(await self._call("GET", f"/api/v1/proposals/{proposal_id}/"))

    async def cancel(self, proposal_id: str, reason: str = "") -> Proposal:
        return Proposal.from_json(await self._call("POST", f"/api/v1/proposals/{proposal_id}/cancel/", {"reason": reason}))

    async def answer_info(self, proposal_id: str, answer: str, *, evidence: list[dict] | None = None,
                          rationale: str | None = None, changes: dict | None = None) -> Proposal:
        body = _info_body(answer, evidence, rationale, changes)
        return Proposal.from_json(await self._call("POST", f"/api/v1/proposals/{proposal_id}/info/", body))

    async def report_outcome(self, proposal_id: str, *, ok: bool, result: dict | None = None, error: str = "") -> Proposal:
        body = {"ok": ok, "result": result or {}, "error": error}
        return Proposal.from_json(await self._call("POST", f"/api/v1/proposals/{proposal_id}/outcome/", body))

    async def wait(self, proposal_id: str, timeout: float = 3600.0, *, until: Collection[str] = FINAL) -> Proposal:
        deadline = self._clock() + timeout
        delays = self.backoff.delays()
        last = _unknown(proposal_id)
        while True:
            limited = None
            try:
                last = await self.get(proposal_id)
                if last.status in until:
                    return last
            except RateLimited as exc:
                limited = exc
            pause = self._pause(limited, next(delays))
            if self._clock() + pause > deadline:
                raise WaitTimeout(last, timeout)
            await self._sleep(pause)


def _info_body(answer: str, evidence, rationale, changes) -> dict[str, Any]:
    body: dict[str, Any] = {"answer": answer}
    if evidence is not None:
        body["evidence"] = evidence
    if rationale is not None:
        body["rationale"] = rationale
    if changes is not None:
        body["changes"] = changes
    return body


def _unknown(proposal_id: str) -> Proposal:
    """A stand-in when the last poll was refused (429): the status is not known."""
    return Proposal.from_json({"id": proposal_id, "status": "unknown"})
