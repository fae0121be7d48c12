"""Devin API v1 (``devin``): one Devin session per CCDash run.

Provider facts relied on (https://docs.devin.ai/api-reference/v1):

- ``Authorization: Bearer <apiKey>``; base URL ``https://api.devin.ai``. The
  vendor labels v1 alpha, so every answer is read tolerantly: missing fields
  default, unknown ``status_enum`` values map to None, never an exception.
- ``POST /v1/sessions {"prompt", "idempotent", "title", "tags"}`` →
  ``{"session_id", "url", "is_new_session"}``. With ``idempotent: true`` and
  the prompt of an existing session, Devin answers that session with
  ``is_new_session: false``: the only provider-side dedupe we have.
- ``GET /v1/sessions/{id}`` → ``status_enum``, ``messages[]`` (the whole
  transcript, no paging), ``pull_request{url}``; no ``url``.
- ``GET /v1/sessions?limit=&offset=&tags=`` → ``{"sessions": [...]}``
  (https://docs.devin.ai/api-reference/v1/sessions/list-sessions): ``limit``
  (default 100), ``offset`` (default 0), ``tags`` (sessions carrying them).
  Each item is a session summary: ``session_id``, ``status``,
  ``status_enum`` (the same values as the session read), ``tags``,
  ``title``, ``created_at``, ``updated_at``; no ``messages`` and no ``url``.
  The order is not documented (our simulator lists the newest first).
- The session's page: the create answer's ``url`` where given, else built from
  ``session_id`` in the same shape (``https://app.devin.ai/sessions/<id>``
  without the ``devin-`` prefix), so a recovered or polled run keeps a link.
- ``DELETE /v1/sessions/{id}`` terminates the session (it cannot be resumed):
  a 2xx confirms the cancel. The answer for a session that already ended is
  undocumented (our simulator says 409): any 4xx but 401/403/404/429 means
  "it ended by itself", not a confirmed cancel; the session is re-read.
- ``POST /v1/sessions/{id}/message {"message"}`` → ``{"detail"}``
  (https://docs.devin.ai/api-reference/sessions/send-a-message-to-an-existing-devin-session):
  the user's answer to a ``blocked`` session, or new work for one that
  finished. The answer for a session that ended for good is unconfirmed:
  any 4xx but 401/403/404/429 means "it no longer takes messages".
- No rate-limit headers are documented; a 429 with ``Retry-After`` is still
  honoured by the shared gate in ``connectors.http``.

Correlation: the prompt ends with a marker line carrying the run's
``dispatch_key`` and the session is tagged ``ccdash-run-<key>``. The marker
makes the prompt identical on every attempt of one run (so ``idempotent``
dedupes a re-sent create) and different between runs of the same command (so
it never merges two runs into one session).

Batch polling: the summaries carry ``status_enum``, so the due runs of a
project are polled by listing the sessions tagged ``ccdash`` (every session
CCDash creates), ``LIST_PAGE`` a page, until each wanted session was seen, a
page comes back short, or ``LIST_MAX_PAGES`` were read (500 sessions); a
session missing from those pages (older ones, if Devin lists the newest first
as our simulator does) is left out of the answer, and the reconciler reads it
on its own (side by side with the others). The listing has no messages: the
reconciler reads them with ``fetch_logs`` (one session read) when its log
rules say they are due; a run polled alone still gets status and messages
from one read (``poll_status_with_logs``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from connectors.base import (
    TERMINAL,
    CancelResult,
    Capabilities,
    ConfigField,
    DispatchResult,
    HealthResult,
    LogBatch,
    LogEntry,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import (
    ConfigurationError,
    ConnectorError,
    InvalidResponse,
    ProviderConflict,
)
from connectors.http import credential_key
from connectors.http_adapter import HttpAdapter
from connectors.redaction import Redactor

# (connect, read) seconds for every call.
TIMEOUT: tuple[float, float] = (3.05, 10.0)
# Sessions scanned by recover_dispatch when the tag filter is not honoured:
# the lost session was created moments ago, so it is on the newest page.
RECOVER_PAGE_SIZE = 100
BASE_TAG = "ccdash"
DEFAULT_APP_URL = "https://app.devin.ai"
# Cancel answers that mean "it already ended, re-read it" (unconfirmed by Devin).
_RAISE_ON_CANCEL = frozenset({401, 403, 404, 429})
# Sessions that take no more messages (expired, including after our DELETE).
ENDED_FOR_GOOD = frozenset({"expired"})
# Batch polling: the documented default page size, and how many pages one
# listing reads at most before the sessions it did not reach are read alone.
LIST_PAGE = 100
LIST_MAX_PAGES = 5
# A listing page answers the groups polled within this many seconds of it
# (one sweep hands a provider's due runs out in groups: per claim, per project).
LISTING_REUSE_S = 2.0
_pages: dict[tuple, tuple[float, list[dict[str, Any]], bool]] = {}
_pages_lock = threading.Lock()


def forget_listings() -> None:
    """Drop the listing pages kept for reuse (tests: a fresh start)."""
    with _pages_lock:
        _pages.clear()


def run_tag(dispatch_key: str) -> str:
    return f"ccdash-run-{dispatch_key}"


def prompt_marker(dispatch_key: str) -> str:
    return f"[ccdash-run: {dispatch_key}]"


class DevinAdapter(HttpAdapter):
    provider_id = "devin"
    timeout = TIMEOUT
    label = "Devin"
    kind = "external"
    input_kind = "prompt"
    # No artifact API in v1: the pull request link arrives as a provider log line.
    # Follow-ups: a message to the session (an answer while it is blocked, or
    # new work once it finished). The session read carries its messages
    # (logs_with_status, for a run polled alone); the listing does not, so
    # batch-polled runs have them read by fetch_logs when they are due.
    CAPABILITIES = Capabilities(
        supports_cancel=True,
        supports_follow_up=True,
        supports_batch_poll=True,
        supports_logs=True,
        logs_with_status=True,
    )
    default_base_url = "https://api.devin.ai"
    default_hosts = ("api.devin.ai",)
    config_fields = (
        ConfigField(
            "baseUrl",
            "API base URL",
            kind="url",
            default=default_base_url,
            help_text="Devin API endpoint (v1).",
        ),
        ConfigField(
            "tags",
            "Extra session tags",
            help_text="Comma-separated tags added to every session (besides ccdash tags).",
            pattern=r"[\w .:/-]+(,[\w .:/-]+)*",
        ),
    )
    secret_fields = (ConfigField("apiKey", "API key", required=True),)
    # Decisions for the "(decide and document)" rows:
    # - suspend_requested*/resume_requested*: the session is being put to sleep
    #   or woken; it has not ended and does not ask for input, so it stays
    #   ``running`` (mapping them to ``waiting`` would flap on every suspend).
    # - expired is ``failed``; Devin may also report it after our DELETE, which
    #   is why ``cancel`` confirms the cancel itself (the service then stores
    #   ``canceled`` without waiting for a poll).
    state_table = {
        "working": "running",
        "resumed": "running",
        "suspend_requested": "running",
        "suspend_requested_frontend": "running",
        "resume_requested": "running",
        "resume_requested_frontend": "running",
        "blocked": "waiting",
        "finished": "succeeded",
        "expired": "failed",
    }

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.require_secret('apiKey')}"}

    def _session(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``; 404 → RunNotFound, 401/403 → AuthError."""
        return self.call_json("GET", f"/v1/sessions/{session_id}", "session read")

    # --- dispatch and recovery ----------------------------------------------------

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        """Create the session. Always ``idempotent: true`` with the marked
        prompt, so even a create re-sent after a lost answer returns the
        existing session (``is_new_session: false``) instead of a second one."""
        tags = [BASE_TAG, run_tag(spec.dispatch_key), *self._extra_tags()]
        body = {
            "prompt": f"{spec.command}\n\n{prompt_marker(spec.dispatch_key)}",
            "idempotent": True,
            "title": f"{spec.title} [{spec.dispatch_key}]",
            "tags": list(dict.fromkeys(tags)),
        }
        created = self.call_json("POST", "/v1/sessions", "session creation", json=body)
        session_id = str(created.get("session_id") or "")
        if not session_id:
            raise InvalidResponse("Devin session creation answered without a session_id")
        return DispatchResult(
            provider_run_id=session_id,
            provider_url=str(created.get("url") or "") or self.session_url(session_id),
            provider_state={"isNewSession": bool(created.get("is_new_session", True))},
        )

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        """The session an interrupted dispatch created, found by listing
        (tag ``ccdash-run-<key>``, else the key in the title). Read-only: when
        nothing matches, ``dispatch`` follows, and its idempotent create is the
        second safety net should the listing have missed the session."""
        tag = run_tag(spec.dispatch_key)
        params = {"tags": tag, "limit": RECOVER_PAGE_SIZE}
        listing = self.call_json("GET", "/v1/sessions", "session list", params=params)
        for session in listing.get("sessions") or ():
            if not isinstance(session, Mapping) or not session.get("session_id"):
                continue
            if tag in (session.get("tags") or ()) or spec.dispatch_key in str(
                session.get("title") or ""
            ):
                return DispatchResult(
                    provider_run_id=str(session["session_id"]),
                    provider_url=self.session_url(str(session["session_id"])),
                    provider_status_raw=_native_status(session),
                )
        return None

    def session_url(self, session_id: str) -> str:
        """The session's page, in the shape of the create answer's ``url``:
        Devin's web app for the public API, the endpoint itself otherwise (a
        proxy or the simulator serves the page there)."""
        base = DEFAULT_APP_URL if self.base_url == self.default_base_url else self.base_url
        return f"{base}/sessions/{session_id.removeprefix('devin-')}"

    def _extra_tags(self) -> list[str]:
        return [t.strip() for t in str(self.settings.get("tags") or "").split(",") if t.strip()]

    # --- status and output ----------------------------------------------------------

    def poll_status(self, ref: RunRef) -> RunState:
        """Map ``status_enum`` (None when unknown)."""
        return self._state(self._session(ref.provider_run_id), ref.provider_run_id)

    def poll_many(self, refs: Sequence[RunRef]) -> dict[int, RunState | ConnectorError]:
        """The sessions tagged ``ccdash`` (``GET /v1/sessions?tags=ccdash``,
        ``LIST_PAGE`` a page, conditionally), read page after page until every
        wanted session was listed, a page comes back short or
        ``LIST_MAX_PAGES`` were read; each listed session's ``status_enum``
        is mapped like a session read. Runs of sessions not listed (older
        than the pages read, or gone) are left out of the answer: the
        reconciler reads each alone (a vanished one is then that run's
        ``RunNotFound``). No messages: they come from ``fetch_logs``.
        Raises when a listing page fails (transient errors, a rejected key)."""
        # Runs by session: a follow-up run continues its parent's session.
        wanted: dict[str, list[RunRef]] = {}
        for ref in refs:
            wanted.setdefault(ref.provider_run_id, []).append(ref)
        answers: dict[str, RunState | ConnectorError] = {}
        if wanted:
            for sessions in self._listing_pages():
                for session in sessions:
                    session_id = str(session.get("session_id") or "")
                    if session_id in wanted and session_id not in answers:
                        answers[session_id] = self._state(session, session_id)
                if len(answers) == len(wanted):
                    break
        return {
            ref.run_id: answers[ref.provider_run_id]
            for ref in refs
            if ref.provider_run_id in answers
        }

    def _listing_pages(self) -> Iterator[list[dict[str, Any]]]:
        """The listing's pages, read as they are asked for (a caller that
        found what it wanted stops reading)."""
        for number in range(LIST_MAX_PAGES):
            sessions, full = self._listing_page(number * LIST_PAGE)
            yield sessions
            if not full:
                return

    def _listing_page(self, offset: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of CCDash's sessions and whether it was full, shared by
        the groups polled within ``LISTING_REUSE_S`` of each other. New
        sessions only push the others further down, so a page read a moment
        ago may repeat a session of the next one but never skips one."""
        key = (self.base_url, credential_key(self.auth_headers(), None), offset)
        now = time.monotonic()
        with _pages_lock:
            kept = _pages.get(key)
            if kept is not None and now - kept[0] <= LISTING_REUSE_S:
                return kept[1], kept[2]
        params = {"tags": BASE_TAG, "limit": LIST_PAGE, "offset": offset}
        listing = self.call_json(
            "GET", "/v1/sessions", "session list", params=params, conditional=True
        )
        found = listing.get("sessions") or []
        sessions = [s for s in found if isinstance(s, Mapping)]
        full = isinstance(found, list) and len(found) >= LIST_PAGE
        with _pages_lock:
            for old in [k for k, kept in _pages.items() if now - kept[0] > LISTING_REUSE_S]:
                del _pages[old]
            _pages[key] = (now, sessions, full)
        return sessions, full

    def poll_status_with_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> RunState:
        """The session read carries its messages: the status and the messages
        new since ``cursor`` from one GET (``logs_with_status``). The output
        is always handed back, even when nothing is new: it tells the
        reconciler this poll already read it (no second GET)."""
        session = self._session(ref.provider_run_id)
        state = self._state(session, ref.provider_run_id)
        return replace(state, logs=_new_output(session, cursor))

    def _state(self, session: Mapping[str, Any], session_id: str) -> RunState:
        raw = _native_status(session)
        return RunState(
            provider_status_raw=raw,
            status=self.map_status(raw),
            provider_url=self.session_url(session_id),
        )

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        """Messages after ``cursor`` (see ``_new_output``), one GET of the
        session: what a batch-polled run's output is read with, with the same
        cursor as ``poll_status_with_logs``."""
        return _new_output(self._session(ref.provider_run_id), cursor)

    # --- cancel and health ------------------------------------------------------------

    def cancel(self, ref: RunRef) -> CancelResult:
        """``DELETE`` terminates synchronously: a 2xx is a confirmed cancel.
        "Already ended" (any other 4xx but 401/403/404/429) re-reads the session
        and hands back its status with ``accepted=False``; 404 → RunNotFound."""
        response = self.send("DELETE", f"/v1/sessions/{ref.provider_run_id}")
        status = response.status_code
        if status >= 500 or status in _RAISE_ON_CANCEL:
            self.check(response, "session termination")
        if response.ok:
            return CancelResult(confirmed=True, provider_status_raw=self._status_quietly(ref))
        # It ended by itself before our DELETE: report how, not a cancel.
        raw = _native_status(self._session(ref.provider_run_id))
        return CancelResult(
            confirmed=self.map_status(raw) in TERMINAL, provider_status_raw=raw, accepted=False
        )

    # --- follow-ups ----------------------------------------------------------------------

    def send_message(self, ref: RunRef, text: str) -> None:
        """Answer the blocked session; Devin works on, which the next poll
        shows. Raises ``ProviderConflict("session_ended")`` when the session
        no longer takes messages."""
        self._post_message(ref.provider_run_id, text)

    def follow_up(self, parent: RunRef, text: str) -> DispatchResult:
        """New work in the same session: a message, where the session still
        takes one (an expired or terminated session does not: 409
        ``session_ended``). The follow-up run follows the same session id."""
        session = self._session(parent.provider_run_id)
        raw = _native_status(session)
        if raw in ENDED_FOR_GOOD:
            raise ProviderConflict(
                f"Devin session {parent.provider_run_id} has ended ({raw}) and no longer "
                "takes messages; start a new run instead.",
                code="session_ended",
            )
        self._post_message(parent.provider_run_id, text)
        return DispatchResult(
            provider_run_id=parent.provider_run_id,
            provider_url=self.session_url(parent.provider_run_id),
        )

    def _post_message(self, session_id: str, text: str) -> None:
        response = self.send("POST", f"/v1/sessions/{session_id}/message", json={"message": text})
        status = response.status_code
        if 400 <= status < 500 and status not in _RAISE_ON_CANCEL:
            detail = ""
            try:
                body = response.json()
                detail = str(body.get("detail") or "") if isinstance(body, dict) else ""
            except ValueError:
                pass
            message = Redactor(self.secrets.secret_values()).scrub(detail[:200])
            raise ProviderConflict(
                f"Devin refused the message (HTTP {status}): {message or 'session not accepting'}",
                code="session_ended",
                status_code=status,
            )
        self.check(response, "message")

    def _status_quietly(self, ref: RunRef) -> str:
        # Best effort: the raw value after DELETE is worth storing, not failing for.
        try:
            return _native_status(self._session(ref.provider_run_id))
        except ConnectorError:
            return ""

    def check_health(self) -> HealthResult:
        """``GET /v1/sessions?limit=1`` (v1 has no "whoami"): accepted key and a
        base URL that answers like the Devin API."""
        try:
            response = self.send("GET", "/v1/sessions", params={"limit": 1})
        except ConfigurationError as exc:
            return HealthResult(False, exc.message)
        except ConnectorError as exc:
            return HealthResult(False, f"Devin API unreachable: {exc.message}")
        status = response.status_code
        if status in (401, 403):
            return HealthResult(False, f"API key rejected by Devin (HTTP {status}).")
        if status == 429:
            return HealthResult(False, "Rate limited by Devin; try again later.")
        if status >= 400:
            return HealthResult(False, f"Devin API answered HTTP {status}; check baseUrl.")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sessions"), list):
            return HealthResult(False, "baseUrl does not answer like the Devin API (no sessions).")
        return HealthResult(True, "API key accepted; sessions can be listed.")


def _native_status(session: Mapping[str, Any]) -> str:
    # status_enum is the documented machine value; "status" is free text.
    return str(session.get("status_enum") or session.get("status") or "")


def _new_output(session: Mapping[str, Any], cursor: Mapping[str, Any]) -> LogBatch:
    """Messages after the cursor, then the pull request link once.

    Cursor ``{"seen": count, "lastEventId": id, "pullRequestUrl": url}``: the
    transcript only grows at the end, so new messages are those after the last
    one we stored (found by ``event_id``), or after the first ``seen`` when
    that id is gone or messages carry none.
    """
    messages = [m for m in session.get("messages") or () if isinstance(m, Mapping)]
    start = min(int(cursor.get("seen") or 0), len(messages))
    last_id = cursor.get("lastEventId")
    if last_id:
        ids = [m.get("event_id") for m in messages]
        if last_id in ids:
            start = ids.index(last_id) + 1
    fresh = messages[start:]
    entries = [_message_entry(m) for m in fresh]
    next_cursor = dict(cursor)
    next_cursor["seen"] = start + len(fresh)
    if fresh and fresh[-1].get("event_id"):
        next_cursor["lastEventId"] = str(fresh[-1]["event_id"])
    pull_request = session.get("pull_request")
    pr_url = str(pull_request.get("url") or "") if isinstance(pull_request, Mapping) else ""
    if pr_url and pr_url != cursor.get("pullRequestUrl"):
        entries.append(
            LogEntry("provider", f"Pull request: {pr_url}\n", {"pullRequestUrl": pr_url})
        )
        next_cursor["pullRequestUrl"] = pr_url
    return LogBatch(entries=tuple(entries), cursor=next_cursor)


def _message_entry(message: Mapping[str, Any]) -> LogEntry:
    kind = str(message.get("type") or "")
    # Devin's own messages are the run's output; user/initial messages are context.
    stream = "stdout" if kind == "devin_message" else "provider"
    payload = {
        key: str(message[source])
        for key, source in (("eventId", "event_id"), ("type", "type"), ("at", "timestamp"))
        if message.get(source)
    }
    text = str(message.get("message") or "")
    # A message may hold several lines; as an entry it ends with its newline.
    return LogEntry(stream, text if text.endswith("\n") else text + "\n", payload)


ADAPTER = DevinAdapter
