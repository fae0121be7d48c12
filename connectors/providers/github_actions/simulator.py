"""GitHub Actions REST API simulator.

Reference: https://docs.github.com/en/rest/actions/workflows and
https://docs.github.com/en/rest/actions/workflow-runs,
https://docs.github.com/en/rest/actions/workflow-jobs. Auth is
``Authorization: Bearer <token>`` (``token <token>`` also accepted); the
default valid token is ``sim-github-token``. Every API answer carries
``x-ratelimit-limit/remaining/used/reset/resource`` and is counted against the
hour's quota (``ratelimit_limit``, 5,000), except a ``304 Not Modified``: a
successful ``GET`` answer carries an ``ETag``, and the same request sent with
``If-None-Match`` naming it is answered 304 without a body and for free, as
GitHub does (https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
By default the window rolls over when the quota is used up (nothing is ever
refused on its own; use the rate-limit fault for that); option
``enforce_rate_limit`` answers every request over the quota with GitHub's
primary-limit 403 (``x-ratelimit-remaining: 0``) until the window resets.
``budget_stats()`` counts answers that counted,
304s, and rate-limit answers.

Endpoints (``{wf}`` is a workflow file name or its numeric id):

- ``GET /repos/{o}/{r}`` and ``GET /repos/{o}/{r}/actions/workflows/{wf}``:
  health checks; any owner/repo exists, workflows are configured. The
  repository is a ``full-repository`` (its owner a ``simple-user``), the
  workflow a ``workflow``, each with every field the official schema requires.
- ``GET /repos/{o}/{r}/contents/.github/workflows/{file}`` (the Contents
  API, https://docs.github.com/rest/repos/contents): the workflow's YAML,
  base64 in ``content`` (a ``content-file``), on every ``ref``; its ``on:`` lists
  ``workflow_dispatch`` only when the workflow has that trigger (the
  workflow object itself does not list triggers). Other paths 404.
- ``POST /repos/{o}/{r}/actions/workflows/{wf}/dispatches``
  ``{"ref", "inputs", "return_run_details"}``: ``200 {"workflow_run_id",
  "run_url", "html_url"}`` when ``return_run_details`` is true or the request
  sends ``X-GitHub-Api-Version: 2026-03-10``, else ``204``; under that version
  the body may not carry ``return_run_details`` (422), and an unknown version
  answers 400. ``inputs`` holds at most 25 properties (422); a workflow
  without the ``workflow_dispatch`` trigger answers 422 "Workflow does not
  have 'workflow_dispatch' trigger"; an unknown workflow 404. No idempotency:
  every dispatch creates a run.
  Option ``legacy_dispatch_status`` (422 or 400) plays an older server that
  rejects the unknown ``return_run_details`` field and ignores the API
  version header (so it only ever answers 204).
- ``GET .../actions/workflows/{wf}/runs?event=&branch=&status=&created=&per_page=&page=``:
  ``{"total_count", "workflow_runs"}``, newest first. ``created`` accepts
  ``>=T``, ``>T``, ``<=T``, ``<T``, ``A..B`` and a bare date or instant.
  Option ``listing_delay_seconds`` hides runs younger than that (GitHub lists
  a dispatched run only after a moment).
- ``GET /repos/{o}/{r}/actions/runs/{id}``: the run (``status`` requested,
  queued, pending, waiting, in_progress or completed; ``conclusion`` once
  completed). Runs are looked up by id alone; owner/repo are not checked.
- ``POST .../actions/runs/{id}/cancel``: 202; the run shows
  ``completed``/``cancelled`` about 0.3 s later (asynchronous). 409 "Cannot
  cancel a workflow run that is completed." once completed.
  ``POST .../force-cancel`` cancels at once (same 409).
- ``GET .../actions/runs/{id}/jobs?filter=latest&per_page=&page=``: option
  ``jobs_per_run`` jobs (default 1), each with ``steps[]``, paged with a
  ``Link: <...>; rel="next"`` header. Runs and jobs carry every field the
  official ``workflow-run`` and ``job`` schemas require, and so do the
  objects a run nests (``minimal-repository`` with its ``simple-user``
  owner, ``nullable-simple-commit``); a job's conclusion only takes the
  job's documented values.
- ``GET .../actions/jobs/{job_id}/logs``: 302 to a signed ``/_blob/`` URL valid
  60 s (on option ``log_redirect_base`` instead of this server when set)
  serving ``text/plain`` that grows while the job runs (the inputs are
  echoed at start, then one timestamped line per 0.25 s of running).
- ``GET .../actions/runs/{id}/logs``: 302 to a signed zip of the job log.

The run's ``display_title`` is the workflow's ``run-name`` rendered from the
inputs; the default template is ``CCDash ${{ inputs.ccdash_run_id }}`` so an
adapter can find its run by a correlation input. Workflows ``agent.yml``
(with the trigger) and ``no-trigger.yml`` (without) exist by default;
``configure_workflow`` / ``POST /_sim/workflows`` add more. Native states are
run statuses plus conclusions: a conclusion state means ``completed``.
Rate-limit fault: 429 with ``Retry-After`` by default; option
``rate_limit_status: 403`` answers 403 with ``x-ratelimit-remaining: 0`` and
``x-ratelimit-reset`` instead. Seed attributes: ``owner`` (``ccdash``),
``repo`` (``demo``), ``workflow`` (``agent.yml``), ``ref`` (``main``),
``inputs``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import random
import re
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.simulators.base import (
    Response,
    Router,
    SimError,
    SimRequest,
    SimRun,
    SimulatorServer,
    Step,
    iso,
)

DOCS_URL = "https://docs.github.com/rest"
NEW_API_VERSION = "2026-03-10"
API_VERSIONS = frozenset({"2022-11-28", NEW_API_VERSION})
DEFAULT_RUN_NAME = "CCDash ${{ inputs.ccdash_run_id }}"
MAX_INPUTS = 25  # the dispatch body's ``inputs`` has maxProperties 25
JOB_ID_FACTOR = 1000  # job ids are run id * 1000 + job number (1..999)
CANCEL_DELAY_SECONDS = 0.3
BLOB_TTL_SECONDS = 60
LOG_LINE_SECONDS = 0.25
LOG_LINE_LIMIT = 4000
RATE_WINDOW_SECONDS = 3600
RUN_ID_BASE = 10_000_000
JOB_NAME = "agent"

CONCLUSIONS = frozenset(
    {
        "success",
        "failure",
        "neutral",
        "cancelled",
        "skipped",
        "timed_out",
        "action_required",
        "stale",
        "startup_failure",
    }
)
# A job's conclusion takes fewer values than a run's (the ``job`` schema's
# enum): a run that could not start or went stale shows its job as failed
# or cancelled.
JOB_CONCLUSIONS = {"startup_failure": "failure", "stale": "cancelled"}
_INPUT_EXPRESSION = re.compile(r"\$\{\{\s*inputs\.([A-Za-z0-9_-]+)\s*\}\}")


@dataclass
class WorkflowConfig:
    """A workflow the simulated repositories have: file name, trigger, run-name."""

    id: int
    file: str
    name: str
    dispatch_trigger: bool = True
    run_name: str = DEFAULT_RUN_NAME


@dataclass(eq=False, kw_only=True)
class WorkflowRun(SimRun):
    number: int
    owner: str
    repo: str
    workflow: WorkflowConfig
    ref: str
    inputs: dict[str, Any] = field(default_factory=dict)
    display_title: str = ""
    head_sha: str = ""
    cancel_requested: bool = False

    @property
    def status(self) -> str:
        return "completed" if self.state in CONCLUSIONS else self.state

    @property
    def conclusion(self) -> str | None:
        return self.state if self.state in CONCLUSIONS else None

    @property
    def branch(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    def job_ids(self, count: int) -> list[int]:
        return [int(self.id) * JOB_ID_FACTOR + n for n in range(1, count + 1)]


def render_run_name(template: str, inputs: dict[str, Any]) -> str:
    """Expand ``${{ inputs.NAME }}`` like GitHub's ``run-name`` (missing inputs are empty)."""
    return _INPUT_EXPRESSION.sub(lambda match: str(inputs.get(match.group(1), "")), template)


def workflow_yaml(workflow: WorkflowConfig) -> str:
    """The workflow file a simulated repository holds: the trigger decides ``on:``."""
    if workflow.dispatch_trigger:
        trigger = (
            "  workflow_dispatch:\n    inputs:\n"
            "      command: {required: true, type: string}\n"
            "      ccdash_run_id: {required: true, type: string}\n"
        )
    else:
        trigger = "  push:\n    branches: [main]\n"
    return (
        f"name: {workflow.name}\nrun-name: {workflow.run_name}\non:\n{trigger}"
        "jobs:\n  agent:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: "$COMMAND"\n        env:\n          COMMAND: ${{ inputs.command }}\n'
    )


def _parse_instant(value: str) -> tuple[float, bool]:
    """(epoch seconds, is a bare date) for an ISO date or date-time."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp(), "T" not in value and " " not in value


def created_filter(expression: str) -> tuple[float, float]:
    """The inclusive ``[low, high]`` epoch range meant by a ``created`` qualifier."""
    try:
        for operator in (">=", "<=", ">", "<"):
            if expression.startswith(operator):
                instant, _ = _parse_instant(expression[len(operator) :])
                return {
                    ">=": (instant, float("inf")),
                    ">": (instant + 1, float("inf")),
                    "<=": (float("-inf"), instant),
                    "<": (float("-inf"), instant - 1),
                }[operator]
        if ".." in expression:
            low, high = expression.split("..", 1)
            return (
                _parse_instant(low)[0] if low != "*" else float("-inf"),
                _parse_instant(high)[0] if high != "*" else float("inf"),
            )
        instant, bare_date = _parse_instant(expression)
    except ValueError:
        raise SimError(422, "validation_failed", "Validation Failed") from None
    return (
        (instant, instant + timedelta(days=1).total_seconds() - 1)
        if bare_date
        else (instant, instant)
    )


def _delivery_headers(event: str, secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/sim",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    if not url.startswith(("http://", "https://")):
        return 0
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except OSError:  # an unreachable receiver loses the delivery, as with GitHub
        return 0


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or wanted in tags


def _node_id(kind: str, number: int | str) -> str:
    """A GraphQL-style node id (opaque base64, like GitHub's legacy ids)."""
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def _repository_id(name: str) -> int:
    """A stable numeric id for a repository or account name (case-insensitive)."""
    return int(hashlib.sha256(name.lower().encode()).hexdigest()[:8], 16)


def _log_time(timestamp: float) -> str:
    """GitHub's log line timestamp, e.g. ``2026-01-01T10:00:00.1234567Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class GitHubActionsSimulator(SimulatorServer):
    """Stand-in for the GitHub Actions REST API (see the module docstring)."""

    provider = "github_actions"
    default_token = "sim-github-token"
    default_port = 8701
    token_field = "token"
    demo_settings: ClassVar[dict[str, Any]] = {
        "owner": "ccdash",
        "repo": "demo",
        "workflow": "agent.yml",
        "ref": "main",
    }
    default_options: ClassVar[dict[str, Any]] = {
        "legacy_dispatch_status": None,
        # Plays a server that accepts ``return_run_details`` but ignores it (204).
        "ignore_run_details": False,
        "rate_limit_status": 429,
        "ratelimit_limit": 5000,
        "enforce_rate_limit": False,
        "listing_delay_seconds": 0.0,
        # Jobs per run (the jobs list pages them, ``per_page`` at most 100).
        "jobs_per_run": 1,
        # Where log downloads redirect to (a storage host); None: this server.
        "log_redirect_base": None,
        # Webhooks: where deliveries go, the secret they are signed with, and
        # the faults a delivery path has (every Nth sent twice or lost, each
        # batch in shuffled order).
        "webhook_url": None,
        "webhook_secret": "",
        "webhook_duplicate_every": 0,
        "webhook_drop_every": 0,
        "webhook_shuffle": False,
    }
    QUEUED_STATE = "queued"
    RUNNING_STATE = "in_progress"
    SUCCESS_STATE = "success"
    FAILURE_STATE = "failure"
    TERMINAL_STATES = CONCLUSIONS
    STATE_ALIASES: ClassVar[dict[str, str]] = {
        "running": "in_progress",
        "succeeded": "success",
        "failed": "failure",
        "canceled": "cancelled",
    }

    # -- set-up ------------------------------------------------------------------

    def reset_provider_state(self) -> None:
        self._workflows: dict[str, WorkflowConfig] = {}
        self.configure_workflow("agent.yml", name="CCDash agent")
        self.configure_workflow(
            "no-trigger.yml", name="No dispatch trigger", dispatch_trigger=False
        )
        self._rate_used = 0
        self._rate_reset = 0
        self._counted = 0
        self._not_modified = 0
        self._rate_limited = 0
        self._webhook_seen: dict[str, int] = {}
        self._webhook_count = 0

    def configure_workflow(
        self,
        file: str,
        *,
        dispatch_trigger: bool = True,
        run_name: str = DEFAULT_RUN_NAME,
        name: str | None = None,
    ) -> WorkflowConfig:
        """Add or replace a workflow every simulated repository has."""
        with self._lock:
            existing = self._workflows.get(file)
            workflow = WorkflowConfig(
                id=existing.id if existing else 100 + len(self._workflows) + 1,
                file=file,
                name=name or file.rsplit(".", 1)[0],
                dispatch_trigger=dispatch_trigger,
                run_name=run_name,
            )
            self._workflows[file] = workflow
            return workflow

    def add_routes(self, router: Router) -> None:
        repo = "/repos/{owner}/{repo}"
        workflow = repo + "/actions/workflows/{workflow}"
        run = repo + "/actions/runs/{run_id}"
        router.add("GET", repo, self._get_repo, "get_repo")
        router.add("GET", workflow, self._get_workflow, "get_workflow")
        router.add(
            "GET", repo + "/contents/.github/workflows/{file}", self._get_contents, "get_contents"
        )
        router.add("POST", workflow + "/dispatches", self._dispatch, "dispatch")
        router.add("GET", workflow + "/runs", self._list_runs, "list_runs")
        router.add("GET", run, self._get_run, "get_run")
        router.add("POST", run + "/cancel", self._cancel, "cancel")
        router.add("POST", run + "/force-cancel", self._force_cancel, "force_cancel")
        router.add("GET", run + "/jobs", self._list_jobs, "list_jobs")
        router.add("GET", run + "/logs", self._run_logs, "run_logs")
        router.add("GET", repo + "/actions/jobs/{job_id}/logs", self._job_logs, "job_logs")
        router.add("GET", "/_blob/jobs/{job_id}/log.txt", self._job_log_blob, "blob", api=False)
        router.add("GET", "/_blob/runs/{run_id}/logs.zip", self._run_logs_blob, "blob", api=False)
        router.add("GET", "/_sim/workflows", self._http_workflows, "_sim", api=False)
        router.add("POST", "/_sim/webhooks/deliver", self._http_deliver, "_sim", api=False)
        router.add("POST", "/_sim/workflows", self._http_configure_workflow, "_sim", api=False)

    # -- provider hooks --------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str) -> dict[str, str]:
        return {"message": message, "documentation_url": DOCS_URL, "status": str(status)}

    def extract_token(self, request: SimRequest) -> str | None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() in ("bearer", "token") else None

    def unauthorized_response(self, request: SimRequest) -> Response:
        if request.header("Authorization") is None:
            return self.error_response(401, "unauthorized", "Requires authentication")
        return self.error_response(401, "unauthorized", "Bad credentials")

    def unavailable_response(self, status: int) -> Response:
        return self.error_response(status, "unavailable", "Service Unavailable")

    def rate_limited_response(self, retry_after: int) -> Response:
        with self._lock:
            self._rate_limited += 1
        if self.options["rate_limit_status"] == 403:
            # Primary rate limit: 403, remaining 0, wait until the reset epoch.
            limit = str(self.options["ratelimit_limit"])
            return self.error_response(
                403,
                "rate_limited",
                "API rate limit exceeded for user ID 1.",
                {
                    "x-ratelimit-limit": limit,
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-used": limit,
                    "x-ratelimit-reset": str(int(self.now()) + retry_after),
                },
            )
        return self.error_response(
            429,
            "rate_limited",
            "You have exceeded a secondary rate limit. Please wait a few minutes and try again.",
            {"Retry-After": str(retry_after)},
        )

    def _api_version(self, request: SimRequest) -> str:
        """The requested API version (GitHub answers 400 for one it does not know)."""
        version = request.header("X-GitHub-Api-Version") or "2022-11-28"
        if version not in API_VERSIONS:
            raise SimError(400, "invalid", f"Invalid API version: {version}")
        return version

    def refuse_api_request(self, request: SimRequest) -> Response | None:
        """With ``enforce_rate_limit``: GitHub's primary-limit 403 once the
        window's quota is spent, until its reset."""
        if not self.options["enforce_rate_limit"]:
            return None
        with self._lock:
            self._roll_window(int(self.now()))
            if self._rate_used < int(self.options["ratelimit_limit"]):
                return None
            self._rate_limited += 1
            limit, reset = str(self.options["ratelimit_limit"]), str(self._rate_reset)
        return self.error_response(
            403,
            "rate_limited",
            "API rate limit exceeded for user ID 1.",
            {
                "x-ratelimit-limit": limit,
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": limit,
                "x-ratelimit-reset": reset,
                "x-ratelimit-resource": "core",
            },
        )

    def finalize_api_response(self, response: Response, request: SimRequest) -> Response:
        """Conditional answers (ETag, 304) and the rate-limit headers GitHub
        sends on every answer; a 304 and a rate-limit answer are not counted."""
        etag = None
        if request.method == "GET" and response.status == 200 and response.stream is None:
            etag = 'W/"' + hashlib.sha256(response.body).hexdigest()[:40] + '"'
            response.headers["ETag"] = etag
        not_modified = etag is not None and _matches(request.header("If-None-Match"), etag)
        refused = response.status in (403, 429) and "x-ratelimit-remaining" in response.headers
        with self._lock:
            now = int(self.now())
            self._roll_window(now)
            if not_modified:
                self._not_modified += 1
            elif not refused:
                self._rate_used += 1
                self._counted += 1
            limit = int(self.options["ratelimit_limit"])
            headers = {
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": str(max(0, limit - self._rate_used)),
                "x-ratelimit-used": str(self._rate_used),
                "x-ratelimit-reset": str(self._rate_reset),
                "x-ratelimit-resource": "core",
            }
        if not_modified:
            response = Response(304, b"", {"ETag": etag or ""})
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    def _roll_window(self, now: int) -> None:
        """A new hour's window when the last one ended (or, unless the limit is
        enforced, when its quota is used up). Lock held."""
        limit = int(self.options["ratelimit_limit"])
        spent = self._rate_used >= limit and not self.options["enforce_rate_limit"]
        if now >= self._rate_reset or spent:
            self._rate_used, self._rate_reset = 0, now + RATE_WINDOW_SECONDS

    def budget_stats(self) -> dict[str, int]:
        """Answers counted against the quota, free 304s, and rate-limit answers."""
        with self._lock:
            return {
                "counted": self._counted,
                "notModified": self._not_modified,
                "rateLimited": self._rate_limited,
            }

    def seed_run(
        self,
        steps: list[Step],
        now: float,
        *,
        owner: str = "ccdash",
        repo: str = "demo",
        workflow: str = "agent.yml",
        ref: str = "main",
        inputs: dict[str, Any] | None = None,
    ) -> SimRun:
        config = self._workflows.get(workflow)
        if config is None:
            raise ValueError(f"unknown workflow {workflow}")
        return self._create_run(owner, repo, config, ref, inputs or {}, steps, now)

    # -- repository and workflow ----------------------------------------------------------

    def _get_repo(self, request: SimRequest) -> Response:
        """A ``full-repository``: the run's ``minimal-repository`` plus the
        fields the full object adds (counts, flags, clone URLs, dates)."""
        owner, repo = request.params["owner"], request.params["repo"]
        return Response.json(200, self._full_repository_json(owner, repo))

    def _get_workflow(self, request: SimRequest) -> Response:
        return Response.json(200, self._workflow_json(request, self._workflow(request)))

    def _workflow(self, request: SimRequest) -> WorkflowConfig:
        key = request.params["workflow"]
        for workflow in self._workflows.values():
            if key in (workflow.file, str(workflow.id)):
                return workflow
        raise SimError(404, "not_found", "Not Found")

    def _workflow_json(self, request: SimRequest, workflow: WorkflowConfig) -> dict[str, Any]:
        full_name = f"{request.params['owner']}/{request.params['repo']}"
        return {
            "id": workflow.id,
            "name": workflow.name,
            "node_id": _node_id("Workflow", workflow.id),
            "path": f".github/workflows/{workflow.file}",
            "state": "active",
            "created_at": iso(0),
            "updated_at": iso(0),
            "url": f"{self.url}/repos/{full_name}/actions/workflows/{workflow.id}",
            "html_url": f"{self.url}/{full_name}/actions/workflows/{workflow.file}",
            "badge_url": f"{self.url}/{full_name}/workflows/{workflow.name}/badge.svg",
        }

    def _get_contents(self, request: SimRequest) -> Response:
        """A workflow file through the Contents API (base64, wrapped like GitHub's)."""
        workflow = self._workflows.get(request.params["file"])
        if workflow is None:
            raise SimError(404, "not_found", "Not Found")
        full_name = f"{request.params['owner']}/{request.params['repo']}"
        path = f".github/workflows/{workflow.file}"
        data = workflow_yaml(workflow).encode()
        encoded = base64.b64encode(data).decode()
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        return Response.json(
            200,
            {
                "type": "file",
                "encoding": "base64",
                "size": len(data),
                "name": workflow.file,
                "path": path,
                "sha": sha,
                "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)),
                "url": f"{self.url}/repos/{full_name}/contents/{path}",
                "git_url": f"{self.url}/repos/{full_name}/git/blobs/{sha}",
                "html_url": f"{self.url}/{full_name}/blob/main/{path}",
                "download_url": f"{self.url}/{full_name}/raw/main/{path}",
                "_links": {
                    "self": f"{self.url}/repos/{full_name}/contents/{path}",
                    "git": f"{self.url}/repos/{full_name}/git/blobs/{sha}",
                    "html": f"{self.url}/{full_name}/blob/main/{path}",
                },
            },
        )

    # -- dispatch ---------------------------------------------------------------------

    def _dispatch(self, request: SimRequest) -> Response:
        """Create a workflow dispatch event (200 with details, else 204)."""
        workflow = self._workflow(request)
        body = request.json_object()
        legacy_status = self.options["legacy_dispatch_status"]
        new_api = self._api_version(request) == NEW_API_VERSION and not legacy_status
        if new_api and "return_run_details" in body:
            # The 2026-03-10 request body does not declare the field.
            raise SimError(
                422,
                "invalid",
                'Invalid request.\n\n"return_run_details" is not a permitted key.',
            )
        if legacy_status and "return_run_details" in body:
            raise SimError(
                int(legacy_status),
                "invalid",
                'Invalid request.\n\n"return_run_details" is not a permitted key.',
            )
        ref, inputs = self._dispatch_arguments(body)
        if not workflow.dispatch_trigger:
            raise SimError(422, "invalid", "Workflow does not have 'workflow_dispatch' trigger")
        owner, repo = request.params["owner"], request.params["repo"]
        text = " ".join(str(value) for value in inputs.values())
        run = self._create_run(
            owner, repo, workflow, ref, inputs, self.script_for(text), self.now()
        )
        self.count_creation()
        wants_details = body.get("return_run_details") is True
        if (wants_details and not self.options["ignore_run_details"]) or new_api:
            return Response.json(
                200,
                {
                    "workflow_run_id": int(run.id),
                    "run_url": self._run_api_url(run),
                    "html_url": self._run_html_url(run),
                },
            )
        return Response(204)

    @staticmethod
    def _dispatch_arguments(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise SimError(422, "invalid", 'Invalid request.\n\n"ref" wasn\'t supplied.')
        inputs = body.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise SimError(
                422, "invalid", "Invalid request.\n\nFor 'properties/inputs', is not an object."
            )
        if len(inputs) > MAX_INPUTS:
            raise SimError(
                422,
                "invalid",
                f"Invalid request.\n\nFor 'properties/inputs', {len(inputs)} properties "
                f"is more than the maximum of {MAX_INPUTS}.",
            )
        return ref, inputs

    def _create_run(
        self,
        owner: str,
        repo: str,
        workflow: WorkflowConfig,
        ref: str,
        inputs: dict[str, Any],
        steps: list[Step],
        now: float,
    ) -> WorkflowRun:
        number = self.next_sequence()
        run = WorkflowRun(
            id=str(RUN_ID_BASE + number),
            steps=steps,
            created_at=now,
            number=number,
            owner=owner,
            repo=repo,
            workflow=workflow,
            ref=ref,
            inputs=dict(inputs),
            display_title=render_run_name(workflow.run_name, inputs) or workflow.name,
            head_sha=hashlib.sha1(str(number).encode(), usedforsecurity=False).hexdigest(),
        )
        self.add_run(run)
        return run

    # -- runs ---------------------------------------------------------------------------

    def _list_runs(self, request: SimRequest) -> Response:
        """List a workflow's runs, newest first, honouring event/branch/status/created."""
        workflow = self._workflow(request)
        owner, repo = request.params["owner"].lower(), request.params["repo"].lower()
        visible_before = self.now() - float(self.options["listing_delay_seconds"])
        event, branch, status = request.arg("event"), request.arg("branch"), request.arg("status")
        low, high = created_filter(request.arg("created") or "*..*")
        runs = [
            run
            for run in self.iter_runs()
            if isinstance(run, WorkflowRun)
            and run.workflow.id == workflow.id
            and (run.owner.lower(), run.repo.lower()) == (owner, repo)
            and run.created_at <= visible_before
            and event in (None, "", "workflow_dispatch")
            and branch in (None, "", run.branch)
            and status in (None, "", run.status, run.conclusion)
            and low <= int(run.created_at) <= high
        ]
        runs.sort(key=lambda run: (run.created_at, run.number), reverse=True)
        per_page = request.int_arg("per_page", 30)
        page = request.int_arg("page", 1, high=10_000)
        selected = runs[(page - 1) * per_page : page * per_page]
        return Response.json(
            200,
            {"total_count": len(runs), "workflow_runs": [self._run_json(run) for run in selected]},
        )

    def _run(self, request: SimRequest) -> WorkflowRun:
        run = self.find_run(request.params["run_id"])
        if not isinstance(run, WorkflowRun):
            raise SimError(404, "not_found", "Not Found")
        return run

    def _get_run(self, request: SimRequest) -> Response:
        return Response.json(200, self._run_json(self._run(request)))

    def _run_json(self, run: WorkflowRun) -> dict[str, Any]:
        """A ``workflow-run`` with every field the official schema requires."""
        api_url = self._run_api_url(run)
        repo_api = f"{self.url}/repos/{run.owner}/{run.repo}"
        repository = self._repository_json(run.owner, run.repo)
        return {
            "id": int(run.id),
            "name": run.workflow.name,
            "node_id": _node_id("WorkflowRun", run.id),
            "check_suite_id": int(run.id) + 1,
            "check_suite_node_id": _node_id("CheckSuite", int(run.id) + 1),
            "head_branch": run.branch,
            "head_sha": run.head_sha,
            "path": f".github/workflows/{run.workflow.file}",
            "display_title": run.display_title,
            "run_number": run.number,
            "run_attempt": 1,
            "event": "workflow_dispatch",
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": run.workflow.id,
            "url": api_url,
            "html_url": self._run_html_url(run),
            "pull_requests": [],
            "created_at": iso(run.created_at),
            "updated_at": iso(run.updated_at),
            "run_started_at": iso(run.created_at),
            "jobs_url": f"{api_url}/jobs",
            "logs_url": f"{api_url}/logs",
            "check_suite_url": f"{repo_api}/check-suites/{int(run.id) + 1}",
            "artifacts_url": f"{api_url}/artifacts",
            "cancel_url": f"{api_url}/cancel",
            "rerun_url": f"{api_url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{repo_api}/actions/workflows/{run.workflow.id}",
            "head_commit": {
                "id": run.head_sha,
                "tree_id": hashlib.sha1(run.head_sha.encode(), usedforsecurity=False).hexdigest(),
                "message": "Simulated commit",
                "timestamp": iso(run.created_at),
                "author": {"name": "CCDash Simulator", "email": "sim@ccdash.invalid"},
                "committer": {"name": "CCDash Simulator", "email": "sim@ccdash.invalid"},
            },
            "repository": repository,
            "head_repository": repository,
            "head_repository_id": repository["id"],
        }

    def _repository_json(self, owner: str, repo: str) -> dict[str, Any]:
        """A ``minimal-repository`` with every field the official schema
        requires: ids, names, its owner and the API's URL templates."""
        full_name = f"{owner}/{repo}"
        api = f"{self.url}/repos/{full_name}"
        return {
            "id": _repository_id(full_name),
            "node_id": _node_id("Repository", _repository_id(full_name)),
            "name": repo,
            "full_name": full_name,
            "owner": self._user_json(owner),
            "private": True,
            "html_url": f"{self.url}/{full_name}",
            "description": None,
            "fork": False,
            "url": api,
            "archive_url": api + "/{archive_format}{/ref}",
            "assignees_url": api + "/assignees{/user}",
            "blobs_url": api + "/git/blobs{/sha}",
            "branches_url": api + "/branches{/branch}",
            "collaborators_url": api + "/collaborators{/collaborator}",
            "comments_url": api + "/comments{/number}",
            "commits_url": api + "/commits{/sha}",
            "compare_url": api + "/compare/{base}...{head}",
            "contents_url": api + "/contents/{+path}",
            "contributors_url": api + "/contributors",
            "deployments_url": api + "/deployments",
            "downloads_url": api + "/downloads",
            "events_url": api + "/events",
            "forks_url": api + "/forks",
            "git_commits_url": api + "/git/commits{/sha}",
            "git_refs_url": api + "/git/refs{/sha}",
            "git_tags_url": api + "/git/tags{/sha}",
            "hooks_url": api + "/hooks",
            "issue_comment_url": api + "/issues/comments{/number}",
            "issue_events_url": api + "/issues/events{/number}",
            "issues_url": api + "/issues{/number}",
            "keys_url": api + "/keys{/key_id}",
            "labels_url": api + "/labels{/name}",
            "languages_url": api + "/languages",
            "merges_url": api + "/merges",
            "milestones_url": api + "/milestones{/number}",
            "notifications_url": api + "/notifications{?since,all,participating}",
            "pulls_url": api + "/pulls{/number}",
            "releases_url": api + "/releases{/id}",
            "stargazers_url": api + "/stargazers",
            "statuses_url": api + "/statuses/{sha}",
            "subscribers_url": api + "/subscribers",
            "subscription_url": api + "/subscription",
            "tags_url": api + "/tags",
            "teams_url": api + "/teams",
            "trees_url": api + "/git/trees{/sha}",
        }

    def _full_repository_json(self, owner: str, repo: str) -> dict[str, Any]:
        """A ``full-repository`` (``GET /repos/{owner}/{repo}``) with every
        field the official schema requires; no license, no forks or stars."""
        host = urlsplit(self.url).netloc
        full_name = f"{owner}/{repo}"
        return {
            **self._repository_json(owner, repo),
            "clone_url": f"{self.url}/{full_name}.git",
            "git_url": f"git://{host}/{full_name}.git",
            "ssh_url": f"git@{host}:{full_name}.git",
            "svn_url": f"{self.url}/{full_name}",
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "default_branch": "main",
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "open_issues": 0,
            "open_issues_count": 0,
            "network_count": 0,
            "subscribers_count": 0,
            "size": 0,
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "license": None,
            "pushed_at": iso(0),
            "created_at": iso(0),
            "updated_at": iso(0),
            "visibility": "private",
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
        }

    def _user_json(self, login: str) -> dict[str, Any]:
        """A ``simple-user`` (a repository's owner, shown as an organization)
        with every field the official schema requires."""
        user_id = _repository_id(login)
        api = f"{self.url}/users/{login}"
        return {
            "login": login,
            "id": user_id,
            "node_id": _node_id("Organization", user_id),
            "avatar_url": f"{self.url}/avatars/u/{user_id}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self.url}/{login}",
            "followers_url": api + "/followers",
            "following_url": api + "/following{/other_user}",
            "gists_url": api + "/gists{/gist_id}",
            "starred_url": api + "/starred{/owner}{/repo}",
            "subscriptions_url": api + "/subscriptions",
            "organizations_url": api + "/orgs",
            "repos_url": api + "/repos",
            "events_url": api + "/events{/privacy}",
            "received_events_url": api + "/received_events",
            "type": "Organization",
            "site_admin": False,
        }

    def _run_api_url(self, run: WorkflowRun) -> str:
        return f"{self.url}/repos/{run.owner}/{run.repo}/actions/runs/{run.id}"

    def _run_html_url(self, run: WorkflowRun) -> str:
        return f"{self.url}/{run.owner}/{run.repo}/actions/runs/{run.id}"

    # -- cancel -------------------------------------------------------------------------

    def _cancel(self, request: SimRequest) -> Response:
        """202 now; the run shows completed/cancelled ~0.3 s later (asynchronous)."""
        run = self._cancellable(request)
        if not run.cancel_requested:
            run.cancel_requested = True
            run.reschedule(self.now(), CANCEL_DELAY_SECONDS, [Step("cancelled")])
        return Response.json(202, {})

    def _force_cancel(self, request: SimRequest) -> Response:
        run = self._cancellable(request)
        run.cancel_requested = True
        run.force("cancelled", self.now())
        return Response.json(202, {})

    def _cancellable(self, request: SimRequest) -> WorkflowRun:
        run = self._run(request)
        if run.status == "completed":
            raise SimError(409, "conflict", "Cannot cancel a workflow run that is completed.")
        return run

    # -- jobs and logs ----------------------------------------------------------------------

    def _list_jobs(self, request: SimRequest) -> Response:
        """The run's jobs, paged (``per_page`` ≤ 100, ``page``) with a ``Link``
        header naming the next page, as GitHub's paginated lists do."""
        run = self._run(request)
        per_page = request.int_arg("per_page", 30)
        page = request.int_arg("page", 1, high=10_000)
        ids = run.job_ids(int(self.options["jobs_per_run"]))
        selected = ids[(page - 1) * per_page : page * per_page]
        response = Response.json(
            200, {"total_count": len(ids), "jobs": [self._job_json(run, i) for i in selected]}
        )
        if page * per_page < len(ids):
            base = f"{self._run_api_url(run)}/jobs"
            query = f"per_page={per_page}&page={page + 1}"
            if request.arg("filter"):
                query = f"filter={request.arg('filter')}&{query}"
            response.headers["Link"] = f'<{base}?{query}>; rel="next"'
        return response

    def _job_json(self, run: WorkflowRun, job_id: int) -> dict[str, Any]:
        """A ``job`` with every field the official schema requires; its
        conclusion only takes the job's documented values."""
        started = run.first_entry(self.RUNNING_STATE)
        completed = run.updated_at if run.status == "completed" else None
        conclusion = run.conclusion
        conclusion = JOB_CONCLUSIONS.get(conclusion, conclusion) if conclusion else None
        status = run.status if run.status in ("queued", "in_progress", "completed") else "queued"
        assigned = started is not None
        return {
            "id": job_id,
            "run_id": int(run.id),
            "run_url": self._run_api_url(run),
            "run_attempt": 1,
            "node_id": _node_id("CheckRun", job_id),
            "head_sha": run.head_sha,
            "url": f"{self.url}/repos/{run.owner}/{run.repo}/actions/jobs/{job_id}",
            "html_url": f"{self._run_html_url(run)}/job/{job_id}",
            "status": status,
            "conclusion": conclusion,
            "created_at": iso(run.created_at),
            "started_at": iso(started if started is not None else run.created_at),
            "completed_at": iso(completed) if completed is not None else None,
            "name": self._job_name(run, job_id),
            "steps": self._job_steps(conclusion, started, completed),
            "check_run_url": f"{self.url}/repos/{run.owner}/{run.repo}/check-runs/{job_id}",
            "labels": ["ubuntu-latest"],
            "runner_id": 1 if assigned else None,
            "runner_name": "GitHub Actions 1" if assigned else None,
            "runner_group_id": 1 if assigned else None,
            "runner_group_name": "GitHub Actions" if assigned else None,
            "workflow_name": run.workflow.name,
            "head_branch": run.branch,
        }

    @staticmethod
    def _job_name(run: WorkflowRun, job_id: int) -> str:
        number = job_id - int(run.id) * JOB_ID_FACTOR
        return JOB_NAME if number == 1 else f"{JOB_NAME}-{number}"

    @staticmethod
    def _job_steps(
        conclusion: str | None, started: float | None, completed: float | None
    ) -> list[dict[str, Any]]:
        if started is None:
            return []

        def step(number: int, name: str, status: str, conclusion: str | None) -> dict[str, Any]:
            return {"number": number, "name": name, "status": status, "conclusion": conclusion}

        steps = [step(1, "Set up job", "completed", "success")]
        if completed is None:
            return [*steps, step(2, "Run ccdash agent", "in_progress", None)]
        return [
            *steps,
            step(2, "Run ccdash agent", "completed", conclusion),
            step(3, "Complete job", "completed", "success"),
        ]

    def _job_logs(self, request: SimRequest) -> Response:
        """302 to a signed URL valid one minute (like GitHub's log download)."""
        job_id = request.params["job_id"]
        run = self._run_for_job(job_id)
        if run is None:
            raise SimError(404, "not_found", "Not Found")
        signed = self.presign(f"/_blob/jobs/{job_id}/log.txt", BLOB_TTL_SECONDS)
        elsewhere = self.options["log_redirect_base"]
        if elsewhere:
            signed = str(elsewhere).rstrip("/") + signed.removeprefix(self.url)
        return Response.redirect(signed)

    def _run_logs(self, request: SimRequest) -> Response:
        run = self._run(request)
        return Response.redirect(self.presign(f"/_blob/runs/{run.id}/logs.zip", BLOB_TTL_SECONDS))

    def _run_for_job(self, job_id: str) -> WorkflowRun | None:
        if not job_id.isdigit():
            return None
        run_id, number = divmod(int(job_id), JOB_ID_FACTOR)
        if not 1 <= number <= int(self.options["jobs_per_run"]):
            return None
        run = self.find_run(str(run_id))
        return run if isinstance(run, WorkflowRun) else None

    def _job_log_blob(self, request: SimRequest) -> Response:
        if not self.presigned_ok(request):
            return Response.text(403, "AuthenticationFailed: signature invalid or expired")
        run = self._run_for_job(request.params["job_id"])
        if run is None:
            return Response.text(404, "BlobNotFound")
        return Response.text(200, self._job_log(run))

    def _run_logs_blob(self, request: SimRequest) -> Response:
        if not self.presigned_ok(request):
            return Response.text(403, "AuthenticationFailed: signature invalid or expired")
        run = self.find_run(request.params["run_id"])
        if not isinstance(run, WorkflowRun):
            return Response.text(404, "BlobNotFound")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            log = self._job_log(run)
            archive.writestr(f"0_{JOB_NAME}.txt", log)
            archive.writestr(f"{JOB_NAME}/2_Run ccdash agent.txt", log)
        return Response(200, buffer.getvalue(), {"Content-Type": "application/zip"})

    def _job_log(self, run: WorkflowRun) -> str:
        """The job log so far: inputs echoed at start, a line per 0.25 s running, the end."""
        started = run.first_entry(self.RUNNING_STATE)
        if started is None:
            return ""
        at = _log_time(started)
        lines = [f"{at} ##[group]Run ccdash agent"]
        lines += [f"{at}   {name}: {value}" for name, value in run.inputs.items()]
        lines.append(f"{at} ##[endgroup]")
        ticks = run.ticks([self.RUNNING_STATE], LOG_LINE_SECONDS, LOG_LINE_LIMIT, self.now())
        lines += [f"{_log_time(t)} [sim] working, step {n}" for n, t in enumerate(ticks, 1)]
        if run.status == "completed":
            lines.append(
                f"{_log_time(run.updated_at)} Job finished with conclusion {run.conclusion}"
            )
        return "\n".join(lines) + "\n"

    # -- webhooks ---------------------------------------------------------------------------

    def pending_deliveries(self) -> list[tuple[bytes, dict[str, str]]]:
        """Signed ``workflow_run`` deliveries (and ``workflow_job`` ones when a
        job starts or ends) for every status change since the last call, as
        GitHub would send them: ``(body, headers)``, oldest first."""
        secret = str(self.options["webhook_secret"] or "")
        out: list[tuple[bytes, dict[str, str]]] = []
        with self._lock:
            for run in self.iter_runs():
                if not isinstance(run, WorkflowRun):
                    continue
                seen = self._webhook_seen.get(run.id, 0)
                for state, at in run.history[seen:]:
                    for event, payload in self._events_for(run, state, at):
                        body = json.dumps(payload, separators=(",", ":")).encode()
                        out.append((body, _delivery_headers(event, secret, body)))
                self._webhook_seen[run.id] = len(run.history)
        return out

    def deliver_webhooks(
        self, send: Callable[[str, bytes, dict[str, str]], Any] | None = None
    ) -> int:
        """Send the pending deliveries to ``webhook_url`` (``send`` replaces the
        HTTP POST, e.g. a test client), with the configured faults: every Nth
        dropped or sent twice (same delivery id), batches shuffled. Returns how
        many requests were sent."""
        url = self.options["webhook_url"]
        deliveries = self.pending_deliveries()
        if not url and send is None:
            return 0
        if self.options["webhook_shuffle"]:
            random.shuffle(deliveries)
        drop = int(self.options["webhook_drop_every"] or 0)
        twice = int(self.options["webhook_duplicate_every"] or 0)
        sender = send or _post
        sent = 0
        for body, headers in deliveries:
            self._webhook_count += 1
            if drop and self._webhook_count % drop == 0:
                continue
            for _ in range(2 if twice and self._webhook_count % twice == 0 else 1):
                sender(str(url or ""), body, headers)
                sent += 1
        return sent

    def _events_for(
        self, run: WorkflowRun, state: str, at: float
    ) -> list[tuple[str, dict[str, Any]]]:
        status = "completed" if state in CONCLUSIONS else state
        action = {"queued": "requested", "in_progress": "in_progress"}.get(status, status)
        data = {
            **self._run_json(run),
            "status": status,
            "conclusion": state if state in CONCLUSIONS else None,
            "updated_at": iso(at),
        }
        repository = {"full_name": f"{run.owner}/{run.repo}", "name": run.repo}
        events = [
            (
                "workflow_run",
                {"action": action, "workflow_run": data, "repository": repository},
            )
        ]
        if status in ("in_progress", "completed"):
            for job_id in run.job_ids(int(self.options["jobs_per_run"])):
                job = {
                    **self._job_json(run, job_id),
                    "status": status,
                    "conclusion": data["conclusion"],
                }
                payload = {"action": action, "workflow_job": job, "repository": repository}
                events.append(("workflow_job", payload))
        return events

    def _http_deliver(self, request: SimRequest) -> Response:
        return Response.json(200, {"sent": self.deliver_webhooks()})

    # -- control ----------------------------------------------------------------------------

    def _http_workflows(self, request: SimRequest) -> Response:
        return Response.json(200, {"workflows": [asdict(w) for w in self._workflows.values()]})

    def _http_configure_workflow(self, request: SimRequest) -> Response:
        body = request.json_object()
        file = body.pop("file", None)
        if not isinstance(file, str) or not file:
            raise SimError(400, "bad_request", 'body must include "file" (e.g. "agent.yml")')
        try:
            workflow = self.configure_workflow(file, **body)
        except TypeError as error:
            raise SimError(400, "bad_request", str(error)) from None
        return Response.json(200, asdict(workflow))


SIMULATOR = GitHubActionsSimulator
