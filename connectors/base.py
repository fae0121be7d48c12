"""The adapter contract every provider implements.

The dispatch service and the reconciler own the pipeline (policy → approval →
route → adapter → transition; claim → poll → map → store); an adapter only
translates between our plain dataclasses and one provider's API. Adapters never
touch the ORM: they take ``RunSpec``/``RunRef`` and return results.

Each adapter declares, as class attributes, what the admin form, API validation
and masking are built from: ``config_fields``, ``secret_fields``, capabilities
and its native → canonical ``state_table``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from connectors.endpoints import check_base_url
from connectors.errors import ConfigurationError, ConnectorError, UnsupportedOperation
from connectors.http import HttpClient, client_for
from connectors.links import web_url

# Canonical statuses an adapter may report (execution.states.RunStatus values).
CANONICAL_STATUSES = frozenset(
    {"queued", "running", "waiting", "canceling", "succeeded", "failed", "canceled"}
)
TERMINAL = frozenset({"succeeded", "failed", "canceled"})

# What an adapter takes: a command line (run by a shell-less executor or a CI
# workflow) or a prompt (an instruction for a coding agent). Routing never
# hands one kind to an adapter of the other.
InputKind = Literal["command", "prompt"]
INPUT_KINDS: tuple[InputKind, ...] = ("command", "prompt")


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do. The first four are shown in the API; the others
    tell the reconciler which optional hooks to call (it never checks which
    methods an adapter overrides).

    ``supports_logs``: ``fetch_logs`` returns output. ``logs_with_status``:
    the status read already carries the output, so the reconciler calls
    ``poll_status_with_logs`` instead of ``poll_status`` + ``fetch_logs``.
    """

    supports_streaming: bool = False
    supports_cancel: bool = False
    supports_artifacts: bool = False
    supports_resume: bool = False
    # Answer a run that waits for its user, and start new work on the agent of a
    # finished run (``send_message`` / ``follow_up``).
    supports_follow_up: bool = False
    # ``poll_many`` reads many runs' status in few requests (a listing): the
    # reconciler hands it every due run of one adapter at once.
    supports_batch_poll: bool = False
    supports_logs: bool = False
    logs_with_status: bool = False

    def as_api(self) -> dict[str, bool]:
        return {
            "supportsStreaming": self.supports_streaming,
            "supportsCancel": self.supports_cancel,
            "supportsArtifacts": self.supports_artifacts,
            "supportsResume": self.supports_resume,
            "supportsFollowUp": self.supports_follow_up,
        }


FieldKind = Literal["string", "url", "integer", "boolean", "object"]


@dataclass(frozen=True)
class ConfigField:
    """One setting or secret an adapter needs (camelCase ``name``, as the API)."""

    name: str
    label: str
    kind: FieldKind = "string"
    required: bool = False
    default: Any = None
    help_text: str = ""
    pattern: str | None = None


class Secrets(Mapping[str, str]):
    """Credential values. Never shows them in ``repr``/``str`` (logs, tracebacks)."""

    def __init__(self, values: Mapping[str, str] | None = None):
        self._values = {k: v for k, v in (values or {}).items() if v}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in self._values)})"

    __str__ = __repr__

    def secret_values(self) -> list[str]:
        return list(self._values.values())


@dataclass(frozen=True)
class RunSpec:
    """What to dispatch. ``dispatch_key`` is stable across retried dispatches and
    is sent to the provider as a correlation value where the API allows.

    ``command`` holds the run's text whatever its ``kind``: a command line for
    a ``command`` run, the instruction for a ``prompt`` run (read it as
    ``text``). Dispatch only hands a spec to an adapter whose ``input_kind``
    is the spec's ``kind``."""

    run_id: int
    dispatch_key: str
    command: str
    project_id: int
    project_name: str = ""
    workspace_root: str = ""
    cwd: str = ""
    env_profile: str = "default"
    feature_id: str = ""
    kind: InputKind = "command"
    # When the dispatch key was stored (epoch seconds): nothing the provider
    # created for this run can be older, which bounds a lost-create lookup.
    created_at: float | None = None

    @property
    def text(self) -> str:
        return self.command

    @property
    def title(self) -> str:
        return f"CCDash run {self.run_id}" + (f" ({self.feature_id})" if self.feature_id else "")


@dataclass(frozen=True)
class RunRef:
    """An external run as the adapter left it: id, correlation key, own state."""

    run_id: int
    provider_run_id: str
    dispatch_key: str = ""
    provider_state: Mapping[str, Any] = field(default_factory=dict)
    # When CCDash created the run (epoch seconds; the provider's run is not
    # older) and the native status last stored: what a batch listing filters on.
    created_at: float | None = None
    provider_status_raw: str = ""


@dataclass(frozen=True)
class DispatchResult:
    provider_run_id: str
    provider_url: str = ""
    provider_status_raw: str = ""
    # Adapter-owned data to keep with the run (e.g. Cursor's agent id).
    provider_state: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Shown as a link: only http(s) survives, whatever the provider sent.
        object.__setattr__(self, "provider_url", web_url(self.provider_url))


@dataclass(frozen=True)
class LogEntry:
    """One line (or chunk) of output. ``text`` keeps its line ending: the
    concatenated texts of a stream are the output as the provider gave it."""

    stream: Literal["stdout", "stderr", "provider"]
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogBatch:
    """New output since ``cursor``; store ``entries`` then keep ``cursor``."""

    entries: tuple[LogEntry, ...]
    cursor: Mapping[str, Any]


@dataclass(frozen=True)
class RunState:
    """One poll. ``status`` is canonical, or None when ``provider_status_raw`` is
    not in the state table (the run keeps its status; sync becomes ``error``)."""

    provider_status_raw: str
    status: str | None
    provider_url: str = ""
    exit_code: int | None = None
    message: str = ""
    # Output that came with the poll at no extra request (Devin's messages):
    # a batch, even an empty one, means "the output was read with this poll".
    logs: LogBatch | None = None

    def __post_init__(self) -> None:
        # Shown as a link: only http(s) survives, whatever the provider sent.
        object.__setattr__(self, "provider_url", web_url(self.provider_url))


@dataclass(frozen=True)
class CancelResult:
    """``confirmed``: the provider says the run is already over (no need to wait
    for a poll); ``provider_status_raw`` what it said, when it said it.
    ``accepted``: the provider took the cancel (False when it answered that
    the run had already ended on its own: its status is then its own outcome,
    not the cancel's)."""

    confirmed: bool = False
    provider_status_raw: str = ""
    accepted: bool = True


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    message: str = ""


class ProviderAdapter(ABC):
    """Base class: subclasses set the class attributes and the five hooks.

    Hooks raise the ``connectors.errors`` family: ``TransientError`` (retry,
    with ``retry_after``), ``AuthError``/``PermanentError`` (stop and surface),
    ``RunNotFound``, ``UnsupportedOperation``; configuration problems raise
    ``ConfigurationError``. They never raise anything else for provider
    behaviour, and never put a secret in a message.
    """

    provider_id: ClassVar[str]
    label: ClassVar[str]
    kind: ClassVar[Literal["local", "external"]] = "external"
    # Every adapter declares what it takes (no default: the conformance suite
    # fails an adapter that does not say).
    input_kind: ClassVar[InputKind]
    CAPABILITIES: ClassVar[Capabilities] = Capabilities()
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    secret_fields: ClassVar[tuple[ConfigField, ...]] = ()
    # Native status → canonical status. Adapters with compound native states
    # (GitHub's status + conclusion) key them as "status/conclusion".
    state_table: ClassVar[Mapping[str, str]] = {}
    default_base_url: ClassVar[str] = ""
    # The hosts of the provider's public API: credentials may go there; any
    # other host must be allowlisted by the operator (connectors.endpoints).
    default_hosts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Mapping[str, Any] | None = None, secrets: Secrets | None = None):
        self.settings = dict(settings or {})
        self.secrets = secrets if secrets is not None else Secrets()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} settings={self.settings!r} secrets={self.secrets!r}>"

    # --- declared metadata ---------------------------------------------------

    @classmethod
    def capabilities(cls) -> Capabilities:
        return cls.CAPABILITIES

    @classmethod
    def map_status(cls, native: str) -> str | None:
        """Canonical status for a native value; None when unknown (never raises)."""
        return cls.state_table.get(native)

    @classmethod
    def validate_config(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Clean ``settings`` against ``config_fields``: defaults filled, types and
        patterns checked, unknown keys rejected. Raises ``ConfigurationError``
        with per-field messages. Subclasses add cross-field rules in
        ``clean_settings``."""
        errors: dict[str, list[str]] = {}
        known = {f.name for f in cls.config_fields}
        for key in settings:
            if key not in known:
                errors.setdefault(key, []).append("Unknown setting.")
        cleaned: dict[str, Any] = {}
        for spec in cls.config_fields:
            value = settings.get(spec.name)
            if value in (None, ""):
                if spec.default is not None:
                    cleaned[spec.name] = spec.default
                elif spec.required:
                    errors.setdefault(spec.name, []).append("This setting is required.")
                continue
            message = _check_value(spec, value)
            if message:
                errors.setdefault(spec.name, []).append(message)
            else:
                cleaned[spec.name] = value
        if not errors:
            try:
                cleaned = cls.clean_settings(cleaned)
            except ConfigurationError as exc:
                errors.update(exc.field_errors or {"nonField": [exc.message]})
        if errors:
            raise ConfigurationError(f"Invalid {cls.label} settings.", errors)
        if any(f.name == "baseUrl" for f in cls.config_fields):
            check_base_url(cls.endpoint_of(cleaned), cls.default_hosts, label=cls.label)
        return cleaned

    @classmethod
    def endpoint_of(cls, settings: Mapping[str, Any]) -> str:
        """The API base URL that ``settings`` send credentials to."""
        return str(settings.get("baseUrl") or cls.default_base_url).rstrip("/")

    @classmethod
    def clean_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Cross-field validation hook; raise ``ConfigurationError``."""
        return settings

    @classmethod
    def validate_secrets(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Check a credentials body against ``secret_fields``."""
        errors: dict[str, list[str]] = {}
        known = {f.name for f in cls.secret_fields}
        for key in values:
            if key not in known:
                errors.setdefault(key, []).append("Unknown credential field.")
        cleaned: dict[str, str] = {}
        for spec in cls.secret_fields:
            value = values.get(spec.name)
            if value in (None, ""):
                if spec.required:
                    errors.setdefault(spec.name, []).append("This credential is required.")
                continue
            if not isinstance(value, str):
                errors.setdefault(spec.name, []).append("Must be a string.")
                continue
            cleaned[spec.name] = value.strip()
        if errors:
            raise ConfigurationError(f"Invalid {cls.label} credentials.", errors)
        return cleaned

    # --- runtime helpers -----------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.endpoint_of(self.settings)

    @property
    def http(self) -> HttpClient:
        """The shared client of this provider endpoint (the one HTTP seam)."""
        return client_for(
            self.provider_id, self.base_url, default_hosts=self.default_hosts, label=self.label
        )

    # --- the contract ----------------------------------------------------------

    @abstractmethod
    def dispatch(self, spec: RunSpec) -> DispatchResult:
        """Start the run on the provider. Must not be called twice for one
        ``dispatch_key`` without ``recover_dispatch`` first."""

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        """Find a run an earlier, interrupted ``dispatch`` already created for
        ``spec.dispatch_key``; None when there is none."""
        return None

    @abstractmethod
    def poll_status(self, ref: RunRef) -> RunState:
        """Read the run's native status and map it."""

    def poll_many(self, refs: Sequence[RunRef]) -> dict[int, RunState | ConnectorError]:
        """Read the status of many runs, keyed by ``RunRef.run_id``: a
        ``RunState``, or the ``ConnectorError`` polling that run raised. A run
        the listing does not hold may be left out: the reconciler then reads it
        alone with ``poll_status`` (at its own concurrency, not inside this
        call). Only called when ``capabilities().supports_batch_poll``; the
        default polls one by one. Raises (for the whole batch) only when the
        listing itself fails."""
        states: dict[int, RunState | ConnectorError] = {}
        for ref in refs:
            try:
                states[ref.run_id] = self.poll_status(ref)
            except ConnectorError as exc:
                states[ref.run_id] = exc
        return states

    def poll_status_with_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> RunState:
        """``poll_status`` whose ``RunState.logs`` holds the output produced
        since ``cursor`` (the cursor the reconciler keeps for the run, ``{}`` the
        first time). Called instead of ``poll_status`` when the adapter declares
        ``logs_with_status``."""
        state = self.poll_status(ref)
        return replace(state, logs=self.fetch_logs(ref, cursor))

    def cancel(self, ref: RunRef) -> CancelResult:
        """Ask the provider to stop the run. A run that already ended is not an
        error (re-read it instead)."""
        raise UnsupportedOperation(f"{self.label} does not support cancel")

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        """Output produced since ``cursor`` (``{}`` the first time); never
        returns a line twice for the cursor it hands back."""
        return LogBatch(entries=(), cursor=dict(cursor))

    def send_message(self, ref: RunRef, text: str) -> None:
        """Answer a run that waits for its user (canonical ``waiting``); the
        run goes back to work, which the next poll shows. Raises
        ``ProviderConflict`` when the provider refuses in the run's state,
        ``UnsupportedOperation`` when the provider has no such thing."""
        raise UnsupportedOperation(f"{self.label} does not take messages")

    def follow_up(self, parent: RunRef, text: str) -> DispatchResult:
        """Start new work on the agent (or session) that ran ``parent``, which
        has finished; the result describes that new unit of work, which
        becomes a new canonical run. Raises ``ProviderConflict`` when the
        agent is busy or no longer accepts work, ``UnsupportedOperation``
        when the provider has no follow-ups."""
        raise UnsupportedOperation(f"{self.label} does not take follow-ups")

    @abstractmethod
    def check_health(self) -> HealthResult:
        """Call the provider with the configured credentials: reachable, accepted,
        configured target exists. Returns a result; raises nothing for provider
        answers."""


def _check_value(spec: ConfigField, value: Any) -> str | None:
    if spec.kind == "boolean":
        return None if isinstance(value, bool) else "Must be true or false."
    if spec.kind == "integer":
        return (
            None
            if isinstance(value, int) and not isinstance(value, bool)
            else "Must be an integer."
        )
    if spec.kind == "object":
        return None if isinstance(value, dict) else "Must be an object."
    if not isinstance(value, str):
        return "Must be a string."
    if spec.kind == "url":
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            return "Must be an http(s) URL."
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        return f"Does not match the expected format ({spec.pattern})."
    return None
