"""GitHub Actions: a CCDash run is one ``workflow_dispatch`` run of a configured
workflow (https://docs.github.com/rest/actions).

The workflow must declare two inputs: the command (``commandInput``, default
``command``) and ``ccdash_run_id`` (our ``dispatch_key``), and should echo the
latter in its ``run-name`` (``run-name: CCDash ${{ inputs.ccdash_run_id }}``)
so the run can be found by ``display_title`` when GitHub does not answer with
the run's id (204) and when an interrupted dispatch is recovered. GitHub has
no idempotency key: a re-sent dispatch creates a second run, so nothing here
sends again after a dispatch may have been accepted.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

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
    AuthError,
    ConfigurationError,
    ConnectorError,
    DispatchUnconfirmed,
)
from connectors.http import current_tallies, tallying
from connectors.http_adapter import HttpAdapter
from connectors.redaction import Redactor

TIMEOUT = (3.05, 10.0)
CORRELATION_INPUT = "ccdash_run_id"
# The dispatch body's ``inputs`` has ``maxProperties: 25`` in GitHub's
# description (https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event).
MAX_INPUTS = 25
# A 204 dispatch is listed after a moment: look a few times (waiting
# LIST_RETRY_DELAY_S, 2x, 3x... in between, about 5 s in all) before giving up.
LIST_ATTEMPTS = 5
LIST_RETRY_DELAY_S = 0.5
JOBS_PAGE_SIZE = 100  # the documented maximum of per_page
JOBS_MAX_PAGES = 10
# ``created`` lower bounds: our clock may run ahead of GitHub's.
DISPATCH_LOOKBACK_S = 120
RECOVERY_LOOKBACK_S = 24 * 3600
RECOVERY_PAGES = 3
# Batch polling: a page holds at most 100 runs, and a filtered listing gives
# at most 1,000 results (https://docs.github.com/rest/actions/workflow-runs).
LIST_PAGE = 100
LIST_MAX_PAGES = 10
# Pages of one listing read at once (GitHub allows 100 concurrent requests).
LIST_CONCURRENCY = 4
# A listing answers the groups polled within this many seconds of it (one
# sweep hands a provider's due runs out in several groups), and the creation
# bound of a listing is rounded down to this many seconds so that they match.
LISTING_REUSE_S = 2.0
SINCE_ROUNDING_S = 600
SINCE_MEMORY_S = 600
# (base URL, repository, workflow) -> (the earliest recent created bound, when)
_bounds: dict[tuple[str, str, str], tuple[float, float]] = {}
# (base URL, token, repository, workflow, status) -> (read at, created bound, runs)
_listings: dict[tuple, tuple[float, float | None, list[dict[str, Any]]]] = {}
_listings_lock = threading.Lock()


def forget_listings() -> None:
    """Drop the listings kept for reuse (tests: a fresh start)."""
    with _listings_lock:
        _listings.clear()
        _bounds.clear()


# Native statuses of an active run, each listable with ``status=``.
ACTIVE_NATIVE = ("in_progress", "queued", "requested", "pending", "waiting")
API = "https://api.github.com"
API_VERSION = "2022-11-28"
# From this API version on, dispatch has no ``return_run_details`` field and
# always answers 200 with the run's details.
RUN_DETAILS_VERSION = "2026-03-10"
# GitHub's storage hosts for job logs (https://docs.github.com/en/actions/reference/
# runners/self-hosted-runners#communication-between-self-hosted-runners-and-github):
# deliberately not every *.blob.core.windows.net account, only GitHub's.
STORAGE_HOSTS = ("*.actions.githubusercontent.com", "productionresultssa*.blob.core.windows.net")
INPUT = r"[A-Za-z_][A-Za-z0-9_-]*"
WORKFLOW = r"\d+|[A-Za-z0-9._-]+\.ya?ml"  # a file name or the numeric id


class GitHubActionsAdapter(HttpAdapter):
    provider_id = "github_actions"
    timeout = TIMEOUT
    storage_hosts = STORAGE_HOSTS
    label = "GitHub Actions"
    input_kind = "command"
    CAPABILITIES = Capabilities(supports_cancel=True, supports_batch_poll=True, supports_logs=True)
    default_base_url = API
    default_hosts = ("api.github.com",)
    config_fields = (
        ConfigField("baseUrl", "API base URL (GHES: https://HOST/api/v3)", "url", default=API),
        ConfigField("owner", "Owner", required=True, pattern=r"[A-Za-z0-9][A-Za-z0-9-]{0,38}"),
        ConfigField("repo", "Repository", required=True, pattern=r"[A-Za-z0-9._-]{1,100}"),
        ConfigField("workflow", "Workflow file or id", required=True, pattern=WORKFLOW),
        ConfigField("ref", "Branch or tag", default="main", pattern=r"[^\s~^:?*\[\\]+"),
        ConfigField("commandInput", "Input for the command", default="command", pattern=INPUT),
        ConfigField("extraInputs", "Extra inputs (name: value)", "object"),
        ConfigField("apiVersion", "API version", default=API_VERSION, pattern=r"\d{4}-\d{2}-\d{2}"),
    )
    secret_fields = (
        ConfigField("token", "Token", required=True),
        # The secret GitHub signs webhook deliveries with (X-Hub-Signature-256):
        # set it here and in the repository's webhook (workflow_run, workflow_job).
        ConfigField("webhookSecret", "Webhook secret"),
    )
    # Native status, or "completed/<conclusion>". Decisions beyond the docs:
    # - waiting → waiting: a deployment environment waits for a reviewer, a
    #   person must act (as Devin's "blocked"); it can follow in_progress, which
    #   "queued" could not (running → queued is not a transition).
    # - neutral → succeeded: the run finished without failing; GitHub treats
    #   neutral as passing for required checks.
    # - skipped → canceled: every job was skipped (``if:``), the command never
    #   ran; "succeeded" would claim it did, nothing failed, and canceled runs
    #   can be retried.
    state_table = {
        "requested": "queued",
        "queued": "queued",
        "pending": "queued",
        "waiting": "waiting",
        "in_progress": "running",
        "completed/success": "succeeded",
        "completed/neutral": "succeeded",
        "completed/failure": "failed",
        "completed/timed_out": "failed",
        "completed/startup_failure": "failed",
        "completed/action_required": "failed",
        "completed/stale": "failed",
        "completed/cancelled": "canceled",
        "completed/skipped": "canceled",
    }

    @classmethod
    def clean_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Extra inputs: valid names and scalar values, not our two inputs, and
        at most ``MAX_INPUTS`` inputs in all."""
        command_input, extra = settings["commandInput"], settings.get("extraInputs") or {}
        errors: dict[str, list[str]] = {}
        if command_input == CORRELATION_INPUT:
            errors["commandInput"] = [f"{CORRELATION_INPUT} is reserved for the CCDash run id."]
        problems = []
        if len(extra) + 2 > MAX_INPUTS:
            problems.append(f"GitHub accepts {MAX_INPUTS} inputs; CCDash uses two of them.")
        for name, value in extra.items():
            if not re.fullmatch(INPUT, name):
                problems.append(f"{name!r} is not an input name.")
            elif name in (command_input, CORRELATION_INPUT):
                problems.append(f"{name!r} is set by CCDash.")
            if not isinstance(value, str | int | float | bool):
                problems.append(f"{name!r} must be a string, number or boolean.")
        if problems:
            errors["extraInputs"] = problems
        if errors:
            raise ConfigurationError("Invalid GitHub Actions settings.", errors)
        return settings

    # --- the contract ----------------------------------------------------------

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        """POST .../dispatches, shaped for the configured API version: before
        2026-03-10 with ``return_run_details: true`` (200 with the run's id);
        from 2026-03-10 without it (the version always answers 200 with it).
        An older server that refuses the field (400/422) is asked again
        without it and answers 204.

        A 2xx without the run's id is resolved by listing runs for the
        correlation input in ``display_title``. Not found after
        ``LIST_ATTEMPTS``: ``DispatchUnconfirmed``. GitHub has no idempotency
        key, so an accepted dispatch is never sent again: the run fails and
        the message says how to make the workflow findable (its ``run-name``).
        404 or 422 (no ``workflow_dispatch`` trigger, unknown ref or input)
        raise ``ConfigurationError``."""
        started = time.time()
        body: dict[str, Any] = {
            "ref": self._ref,
            "inputs": {
                **(self.settings.get("extraInputs") or {}),
                self.settings.get("commandInput", "command"): spec.command,
                CORRELATION_INPUT: spec.dispatch_key,
            },
        }
        if not self._run_details_by_default:
            body["return_run_details"] = True
        path = f"{self._workflow_path()}/dispatches"
        response = self.send("POST", path, json=body)
        if (
            response.status_code in (400, 422)
            and "return_run_details" in body
            and "return_run_details" in response.text
        ):
            del body["return_run_details"]
            response = self.send("POST", path, json=body)
        if response.status_code >= 300:
            self._raise_dispatch_error(response)
        details = self.decode(response, "dispatch") if response.status_code == 200 else {}
        if details.get("workflow_run_id"):
            return DispatchResult(str(details["workflow_run_id"]), str(details.get("html_url", "")))
        for attempt in range(LIST_ATTEMPTS):
            if attempt:
                time.sleep(LIST_RETRY_DELAY_S * attempt)
            found = self._find_run(spec.dispatch_key, started - DISPATCH_LOOKBACK_S, pages=1)
            if found is not None:
                return found
        raise DispatchUnconfirmed(
            f"GitHub accepted the dispatch but the run cannot be found: workflow {self._wf} "
            f"must name its runs after the correlation input. Add "
            f"`run-name: ${{{{ inputs.{CORRELATION_INPUT} }}}}` (or put that expression in "
            "its existing run-name) and retry. The run GitHub started was not sent again."
        )

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        """The run whose ``display_title`` carries ``spec.dispatch_key`` (last 24 h)."""
        since = time.time() - RECOVERY_LOOKBACK_S
        return self._find_run(spec.dispatch_key, since, pages=RECOVERY_PAGES)

    def poll_status(self, ref: RunRef) -> RunState:
        """GET .../runs/{id}, conditionally: an unchanged run costs a 304,
        which GitHub does not count against the rate limit. A re-run keeps the
        id and bumps ``run_attempt``; status and jobs (``filter=latest``)
        follow the latest attempt, so the attempt number itself is not kept."""
        return self._state(
            self.call_json("GET", self._run_path(ref), "run status", conditional=True)
        )

    def poll_many(self, refs: Sequence[RunRef]) -> dict[int, RunState | ConnectorError]:
        """The runs of the configured workflow, listed by status
        (``GET .../workflows/{wf}/runs?status=S&event=workflow_dispatch&created=>=T``,
        100 a page, conditionally) for in_progress and every other active
        status the runs were last seen in;
        a run found in any list takes its state from there. Runs missing from
        every list (they moved to a status not listed, e.g. completed, or are
        past GitHub's 1,000 results of a filtered listing) are left out of the
        answer: the reconciler reads each alone (``poll_status``), side by side.
        ``T`` is the oldest run's creation less ``DISPATCH_LOOKBACK_S``.
        Raises when a listing fails (transient errors, a rejected token)."""
        wanted = {ref.provider_run_id: ref for ref in refs}
        states: dict[int, RunState | ConnectorError] = {}
        created = [ref.created_at for ref in refs if ref.created_at is not None]
        since = None
        if len(created) == len(refs):
            since = self._listing_bound(min(created) - DISPATCH_LOOKBACK_S)
        for status in _listed_statuses(refs):
            for run in self._recent_listing(status, since):
                ref = wanted.get(str(run.get("id")))
                if ref is not None and ref.run_id not in states:
                    states[ref.run_id] = self._state(run)
        return states

    def cancel(self, ref: RunRef) -> CancelResult:
        """POST .../cancel. 202 is not a confirmation: GitHub cancels
        asynchronously and a job can ignore it (``if: always()``), so the
        run is over only when it shows ``completed``. 409 (already completed):
        re-read the run; it is over, but the cancel was not accepted
        (``accepted=False``): its conclusion is its own outcome."""
        response = self.send("POST", f"{self._run_path(ref)}/cancel")
        if response.status_code == 409:
            state = self.poll_status(ref)
            return CancelResult(state.status in TERMINAL, state.provider_status_raw, accepted=False)
        self.check(response, "cancel")
        return CancelResult(confirmed=False)

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        """New lines of each job of the latest attempt, each with its line
        ending. Job logs are not incremental: the whole text is downloaded and
        ``cursor["jobs"][job_id]`` lines are skipped. A trailing partial line
        waits until the job completes. A completed job whose log was read is
        listed in ``cursor["complete"]`` and never downloaded again; a log
        not available yet (404) yields nothing. A log over
        ``EXECUTION_MAX_OUTPUT_BYTES`` is cut there, with a provider line
        saying so."""
        stored = {str(k): int(v) for k, v in (cursor.get("jobs") or {}).items()}
        complete = set(cursor.get("complete") or ())
        entries: list[LogEntry] = []
        for job in self._jobs(ref):
            job_id = str(job.get("id"))
            if job_id in complete:
                continue
            finished = job.get("status") == "completed"
            log = self._job_log(job_id)
            if log is None:
                continue
            text, truncated = log
            lines = _LINE.findall(text)
            if lines and not lines[-1].endswith("\n") and not (finished or truncated):
                lines.pop()  # the job is still writing this line
            done = stored.get(job_id, 0)
            payload = {"job": str(job.get("name") or job_id)}
            entries += [LogEntry("stdout", line, payload) for line in lines[done:]]
            stored[job_id] = max(done, len(lines))
            if truncated:
                limit = _max_log_bytes()
                notice = f"[log of job {payload['job']} cut at {limit} bytes]\n"
                entries.append(LogEntry("provider", notice, {**payload, "truncated": True}))
            if finished or truncated:
                complete.add(job_id)
        return LogBatch(tuple(entries), {"jobs": stored, "complete": sorted(complete)})

    def _jobs(self, ref: RunRef) -> list[dict[str, Any]]:
        """Every job of the latest attempt: ``per_page=100`` pages, following
        the ``Link: rel="next"`` header (at most ``JOBS_MAX_PAGES``)."""
        jobs: list[dict[str, Any]] = []
        path: str | None = f"{self._run_path(ref)}/jobs"
        params: dict[str, Any] | None = {"filter": "latest", "per_page": JOBS_PAGE_SIZE}
        for _ in range(JOBS_MAX_PAGES):
            if path is None:
                break
            response = self.call("GET", path, "job list", params=params)
            jobs += [j for j in self.decode(response, "job list").get("jobs") or []]
            following = response.links.get("next", {}).get("url")
            path = following if following and self.http.same_origin(following) else None
            params = None  # the next link carries the query
        return jobs

    def check_health(self) -> HealthResult:
        """GET the repository, the workflow (exists, active) and its file
        through the Contents API: the workflow object does not list triggers,
        the YAML does. A token that cannot read contents (403) leaves the
        trigger unverified (dispatch still reports it, as ConfigurationError)."""
        try:
            response = self.send("GET", self._repo_path())
            if response.status_code == 404:
                return HealthResult(
                    False, f"Repository {self._full_name} not found (or not visible)."
                )
            self.check(response, "repository check")
            response = self.send("GET", self._workflow_path())
            if response.status_code == 404:
                return HealthResult(False, f"Workflow {self._wf} not found in {self._full_name}.")
            self.check(response, "workflow check")
            found = self.decode(response, "workflow check")
            if found.get("state", "active") != "active":
                return HealthResult(False, f"Workflow {self._wf} is {found['state']} on GitHub.")
            return self._check_trigger(str(found.get("path") or ""))
        except AuthError as exc:
            return HealthResult(
                False, f"GitHub refused the token (revoked or lacking access): {exc}"
            )
        except (ConnectorError, ConfigurationError) as exc:
            return HealthResult(False, exc.message)

    # --- helpers ---------------------------------------------------------------

    @property
    def _wf(self) -> str:
        return str(self.settings.get("workflow", ""))

    @property
    def _ref(self) -> str:
        return str(self.settings.get("ref") or "main")

    @property
    def _full_name(self) -> str:
        return f"{self.settings.get('owner')}/{self.settings.get('repo')}"

    def _repo_path(self) -> str:
        return f"/repos/{self._full_name}"

    def _workflow_path(self) -> str:
        return f"{self._repo_path()}/actions/workflows/{quote(self._wf, safe='')}"

    def _run_path(self, ref: RunRef) -> str:
        return f"{self._repo_path()}/actions/runs/{quote(ref.provider_run_id, safe='')}"

    def _state(self, run: Mapping[str, Any]) -> RunState:
        raw = _native_status(run)
        return RunState(raw, self.map_status(raw), str(run.get("html_url") or ""))

    def _listing_bound(self, since: float) -> float:
        """The ``created`` bound of a listing: ``since`` rounded down, or an
        earlier bound this workflow was listed with in the last
        ``SINCE_MEMORY_S`` (the groups of one round — and of the next rounds —
        then ask for the same listing, whichever of them comes first)."""
        since -= since % SINCE_ROUNDING_S
        key = (self.base_url, self._full_name, self._wf)
        now = time.time()
        with _listings_lock:
            kept = _bounds.get(key)
            if kept is not None and kept[0] < since and abs(now - kept[1]) <= SINCE_MEMORY_S:
                return kept[0]  # (it moves on once no group has asked for it that long)
            _bounds[key] = (since, now)
        return since

    def _recent_listing(self, status: str, since: float | None) -> list[dict[str, Any]]:
        """``_list_runs``, shared by the groups of runs polled within
        ``LISTING_REUSE_S`` of each other (the groups one sweep hands out of
        one claim after another): a listing of ``status`` at most that old,
        created since ``since`` or earlier (a listing from further back holds
        every run a later bound would), is read once. Wall-clock time: the
        reuse is about the provider's state, which moves with it."""
        key = (self.base_url, self.require_secret("token"), self._full_name, self._wf, status)
        now = time.time()
        with _listings_lock:
            kept = _listings.get(key)
            fresh = kept is not None and abs(now - kept[0]) <= LISTING_REUSE_S
            if kept is not None and fresh and _covers(kept[1], since):
                return kept[2]
        runs = self._list_runs(status, since)
        with _listings_lock:
            for old in [k for k, kept in _listings.items() if abs(now - kept[0]) > LISTING_REUSE_S]:
                del _listings[old]
            _listings[key] = (now, since, runs)
        return runs

    def _list_runs(self, status: str, since: float | None) -> list[dict[str, Any]]:
        """Every run of the workflow in ``status`` created since ``since``: the
        first page, then the others (as many as ``total_count`` says, up to
        the cap) ``LIST_CONCURRENCY`` at a time, so a long listing costs a few
        round trips, not one per page."""
        params: dict[str, Any] = {"status": status, "event": "workflow_dispatch"}
        if since is not None:
            params["created"] = datetime.fromtimestamp(since, UTC).strftime(">=%Y-%m-%dT%H:%M:%SZ")
        path = f"{self._workflow_path()}/runs"

        def page(number: int) -> dict[str, Any]:
            query = {**params, "per_page": LIST_PAGE, "page": number}
            return self.call_json("GET", path, "run listing", params=query, conditional=True)

        first = page(1)
        found = first.get("workflow_runs") or []
        runs = [run for run in found if isinstance(run, dict)]
        total = first.get("total_count")
        if len(found) < LIST_PAGE or not isinstance(total, int):
            return runs
        last = min(LIST_MAX_PAGES, math.ceil(total / LIST_PAGE))
        tallies = current_tallies()

        def counted_page(number: int) -> dict[str, Any]:
            with tallying(tallies):
                return page(number)

        with ThreadPoolExecutor(LIST_CONCURRENCY, thread_name_prefix="github-list") as pool:
            for body in pool.map(counted_page, range(2, last + 1)):
                runs += [run for run in body.get("workflow_runs") or [] if isinstance(run, dict)]
        return runs

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.require_secret('token')}"}

    def api_headers(self) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": str(self.settings.get("apiVersion") or API_VERSION),
        }

    def _raise_dispatch_error(self, response: requests.Response) -> None:
        detail = Redactor(self.secrets.secret_values()).scrub(_message(response))
        if response.status_code == 404:
            message = f"Workflow {self._wf} not found in {self._full_name}."
            raise ConfigurationError(message, {"workflow": [message]})
        if response.status_code == 422 and "workflow_dispatch" in detail:
            message = f"Workflow {self._wf} has no workflow_dispatch trigger ({detail})."
            raise ConfigurationError(message, {"workflow": [message]})
        if response.status_code == 422:
            message = f"GitHub refused the dispatch: {detail}"
            raise ConfigurationError(message, {"nonField": [message]})
        self.check(response, "dispatch")

    def _find_run(self, key: str, since: float, *, pages: int) -> DispatchResult | None:
        """The newest workflow_dispatch run on our ref whose title holds ``key``."""
        match = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
        branch = re.sub(r"^refs/(heads|tags)/", "", str(self._ref))
        created = datetime.fromtimestamp(since, UTC).strftime(">=%Y-%m-%dT%H:%M:%SZ")
        params = {"event": "workflow_dispatch", "branch": branch, "created": created}
        for page in range(1, pages + 1):
            query = {**params, "per_page": 100, "page": page}
            response = self.send("GET", f"{self._workflow_path()}/runs", params=query)
            if response.status_code == 404:
                self._raise_dispatch_error(response)
            self.check(response, "run lookup")
            runs = self.decode(response, "run lookup").get("workflow_runs") or []
            for run in runs:
                if run.get("id") and match.search(str(run.get("display_title") or "")):
                    url, raw = str(run.get("html_url") or ""), _native_status(run)
                    return DispatchResult(str(run["id"]), url, raw)
            if len(runs) < 100:
                return None
        return None

    @property
    def _run_details_by_default(self) -> bool:
        version = str(self.settings.get("apiVersion") or API_VERSION)
        return version >= RUN_DETAILS_VERSION

    def _job_log(self, job_id: str) -> tuple[str, bool] | None:
        """A job's whole log and whether it was cut, or None while GitHub has
        none to give. GitHub
        answers 302 to a signed URL on a storage host (one of
        ``storage_hosts``): it is fetched without credentials, capped at
        ``EXECUTION_MAX_OUTPUT_BYTES``."""
        path = f"{self._repo_path()}/actions/jobs/{quote(job_id, safe='')}/logs"
        got = self.download(path, "job log", max_bytes=_max_log_bytes())
        if got.status in (403, 404, 410):  # expired, or not written yet
            return None
        if got.error is not None:
            self.check(got.error, "job log")
        text = got.content.decode("utf-8", errors="replace").removeprefix("\ufeff")
        return text, got.truncated

    def _check_trigger(self, path: str) -> HealthResult:
        found = f"{self._full_name} reachable, workflow {self._wf} found"
        contents = f"{self._repo_path()}/contents/{quote(path)}"
        response = self.send("GET", contents, params={"ref": self._ref})
        if response.status_code == 404:
            return HealthResult(False, f"Workflow file {path} not found on ref {self._ref}.")
        try:
            self.check(response, "workflow file")
            content = self.decode(response, "workflow file")
            # Files over 1 MB come without content ("encoding": "none").
            text = base64.b64decode(str(content["content"])).decode("utf-8", errors="replace")
        except (AuthError, KeyError, ValueError):  # 403: the token cannot read contents
            return HealthResult(True, f"{found}; its triggers could not be read.")
        # Absence of the word is conclusive; its presence (even in a comment) is trusted.
        if "workflow_dispatch" not in text:
            return HealthResult(False, f"Workflow {self._wf} has no workflow_dispatch trigger.")
        if not _RUN_NAME.search(text):
            return HealthResult(
                True,
                f"{found}, accepting workflow_dispatch. Warning: its run-name does not "
                f"carry ${{{{ inputs.{CORRELATION_INPUT} }}}}; add `run-name: "
                f"${{{{ inputs.{CORRELATION_INPUT} }}}}` or a run GitHub does not report "
                "back (204, lost answer) cannot be found and fails as dispatch_unconfirmed.",
            )
        return HealthResult(True, f"{found}, accepting workflow_dispatch.")


# A line with its "\n" ("\r\n" stays whole), or the unterminated last one.
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
# ``run-name:`` whose value uses the correlation input (any quoting or text around it).
_RUN_NAME = re.compile(
    rf"^\s*run-name:.*\$\{{\{{\s*inputs\.{CORRELATION_INPUT}\s*\}}\}}", re.MULTILINE
)


def _max_log_bytes() -> int:
    return int(settings.EXECUTION.get("MAX_OUTPUT_BYTES") or 2 * 1024 * 1024)


def _listed_statuses(refs: Sequence[RunRef]) -> list[str]:
    """The statuses to list: in_progress always (where a queued or waiting
    run goes next: found there, it is not read alone), and every other active
    status a run was last seen in."""
    seen = {ref.provider_status_raw for ref in refs} | {"in_progress"}
    return [status for status in ACTIVE_NATIVE if status in seen]


def _covers(kept_since: float | None, since: float | None) -> bool:
    """Whether a listing of runs created since ``kept_since`` holds every run
    created since ``since`` (None: no bound)."""
    return kept_since is None or (since is not None and kept_since <= since)


def _native_status(run: Mapping[str, Any]) -> str:
    status = str(run.get("status") or "")
    return f"completed/{run.get('conclusion') or ''}" if status == "completed" else status


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    return str(body.get("message", ""))[:300] if isinstance(body, dict) else ""


ADAPTER = GitHubActionsAdapter
