"""Writing provider configuration and credentials, and checking provider health.

The provider API and the Django admin both go through these functions, so the
rules live in one place:

- settings are cleaned by the adapter (``validate_config``) before they are
  stored; an invalid body raises ``ConfigurationError`` with the adapter's
  per-field messages;
- one default provider per project: marking a config default unmarks the
  others and sets ``Project.default_provider_id``;
- credentials are merged (a key present replaces, an empty value clears),
  checked by the adapter (``validate_secrets``), encrypted by the model field,
  and only ever answered masked;
- a health check stores its result on the config with the message scrubbed of
  every credential value of the project.

Every change is written to the project's audit log with field *names* only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from ccdash.models import Project, record_audit
from connectors.base import HealthResult
from connectors.configs import build_adapter, masked_credentials, project_redactor
from connectors.endpoints import origin_of
from connectors.errors import ConfigurationError, ConnectorError, InvalidCredentials
from connectors.models import HealthStatus, ProviderConfig, ProviderCredential
from connectors.redaction import Redactor
from connectors.registry import LOCAL_PROVIDER_ID, adapter_class

logger = logging.getLogger(__name__)

_UNSET: Any = object()


def effective_default_provider_id(project: Project) -> str:
    """The provider runs go to when none is named: an enabled config marked
    default, else ``Project.default_provider_id``, else local."""
    configured = (
        project.provider_configs.filter(is_default=True, enabled=True)
        .values_list("provider_id", flat=True)
        .first()
    )
    return configured or project.default_provider_id or LOCAL_PROVIDER_ID


def get_or_create_config(project: Project, provider_id: str) -> ProviderConfig:
    """The project's config row for ``provider_id`` (created disabled; local enabled).

    Raises ``UnknownProvider`` for an unregistered id.
    """
    adapter_class(provider_id)
    config, _ = ProviderConfig.objects.get_or_create(
        project=project,
        provider_id=provider_id,
        defaults={"enabled": provider_id == LOCAL_PROVIDER_ID},
    )
    return config


def apply_default(config: ProviderConfig) -> None:
    """Make the project's default provider agree with ``config.is_default``.

    Marked default: every other config of the project is unmarked and
    ``Project.default_provider_id`` points here. Unmarked while it was the
    project default: the project falls back to local.
    """
    project = config.project
    if config.is_default:
        ProviderConfig.objects.filter(project=project, is_default=True).exclude(
            pk=config.pk
        ).update(is_default=False)
        if project.default_provider_id != config.provider_id:
            project.default_provider_id = config.provider_id
            project.save(update_fields=["default_provider_id"])
    elif project.default_provider_id == config.provider_id:
        project.default_provider_id = LOCAL_PROVIDER_ID
        project.save(update_fields=["default_provider_id"])


def update_config(
    project: Project,
    provider_id: str,
    *,
    actor: str,
    enabled: bool | None = None,
    is_default: bool | None = None,
    allow_fallback_to_local: bool | None = None,
    rollout_percent: int | None = None,
    settings: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    user=None,
) -> ProviderConfig:
    """Create or update the project's config of ``provider_id``.

    An argument left ``None`` keeps the stored value (or the model default for
    a new row). ``settings`` (given, or the stored ones) are cleaned by the
    adapter and stored cleaned, defaults filled. The local executor is always
    enabled: ``enabled`` is ignored for it.

    Credentials belong to an endpoint: when the new settings move ``baseUrl``
    to another scheme, host or port, the stored credentials are cleared —
    unless ``credentials`` come with the change, which then replace them
    entirely (``rebind_credentials``). ``credentials`` without an endpoint
    change are merged as ``write_credentials`` does.

    Raises ``UnknownProvider`` for an unregistered id and ``ConfigurationError``
    (``field_errors`` keyed by setting name) when the adapter rejects the
    settings (``EndpointNotAllowed`` when credentials may not go to
    ``baseUrl``) or the credentials; nothing is stored then.
    """
    cls = adapter_class(provider_id)
    with transaction.atomic():
        config = get_or_create_config(project, provider_id)
        old_endpoint = cls.endpoint_of(config.settings)
        cleaned = cls.validate_config(dict(settings if settings is not None else config.settings))
        new_endpoint = cls.endpoint_of(cleaned)
        config.settings = cleaned
        if provider_id == LOCAL_PROVIDER_ID:
            config.enabled = True
        elif enabled is not None:
            config.enabled = enabled
        if is_default is not None:
            config.is_default = is_default
        if allow_fallback_to_local is not None:
            config.allow_fallback_to_local = allow_fallback_to_local
        if rollout_percent is not None:
            config.rollout_percent = rollout_percent
        config.save()
        apply_default(config)
        audit_config_change(config, actor)
        if origin_of(old_endpoint) != origin_of(new_endpoint):
            rebind_credentials(
                config, old_endpoint, new_endpoint, credentials or {}, user=user, actor=actor
            )
        elif credentials:
            _merge_and_save(config, credentials, user=user)
    return config


def rebind_credentials(
    config: ProviderConfig,
    old_endpoint: str,
    new_endpoint: str,
    new_values: Mapping[str, Any],
    *,
    user,
    actor: str,
) -> None:
    """The provider's endpoint moved: nothing stored for the old endpoint may
    be sent to the new one. Store exactly ``new_values`` (checked by the
    adapter) or, when none came, clear the stored credentials. The audit event
    says which, with both endpoints (never a value)."""
    credential = ProviderCredential.objects.filter(config=config).first()
    stored = credential.values if credential else {}
    given = {k: v for k, v in new_values.items() if v not in (None, "")}
    if not stored and not given:
        return
    merged = merge_credentials(config.provider_id, {}, given) if given else {}
    changed = {**dict.fromkeys(stored, ""), **given}
    save_credential_values(config, merged, user=user, changed=changed, audit=False)
    label = adapter_class(config.provider_id).label
    moved = f"{origin_of(old_endpoint)} to {origin_of(new_endpoint)}"
    if given:
        action, outcome = "provider_credentials_rebound", "replaced by the ones sent with it"
    else:
        action, outcome = "provider_credentials_cleared", "cleared; set them again"
    record_audit(
        config.project,
        actor,
        action,
        f"{label} endpoint changed from {moved} by {actor}: stored credentials {outcome}.",
        providerId=config.provider_id,
        fromEndpoint=str(origin_of(old_endpoint)),
        toEndpoint=str(origin_of(new_endpoint)),
        clearedFields=sorted(stored),
        setFields=sorted(given),
    )


def audit_config_change(config: ProviderConfig, actor: str) -> None:
    record_audit(
        config.project,
        actor,
        "provider_config_updated",
        f"{adapter_class(config.provider_id).label} configuration updated by {actor}.",
        providerId=config.provider_id,
        enabled=config.enabled,
        isDefault=config.is_default,
        allowFallbackToLocal=config.allow_fallback_to_local,
        rolloutPercent=config.rollout_percent,
        settings=config.settings,
    )


def merge_credentials(
    provider_id: str, current: Mapping[str, str], updates: Mapping[str, Any]
) -> dict[str, str]:
    """``current`` with ``updates`` applied: a non-empty value replaces, an empty
    string (or null) clears. The result is checked by the adapter's
    ``validate_secrets``.

    Clearing a required credential is allowed (the provider then reports
    ``configured: false``): a "required" error on a field that has no value in
    the result is not an error of this write. Raises ``ConfigurationError``
    (keyed by credential field name, never echoing a value) otherwise.
    """
    cls = adapter_class(provider_id)
    names = {f.name for f in cls.secret_fields}
    merged: dict[str, Any] = dict(current)
    for key, value in updates.items():
        if value in (None, "") and key in names:
            merged.pop(key, None)
        else:
            merged[key] = value  # unknown keys too: the adapter reports them
    try:
        return cls.validate_secrets(merged)
    except ConfigurationError as exc:
        errors = {
            name: messages
            for name, messages in exc.field_errors.items()
            if name not in names or merged.get(name) not in (None, "")
        }
        if errors:
            raise InvalidCredentials(exc.message, errors) from None
    # Only "required" complaints about fields this write leaves empty: every
    # value present passed the adapter's checks.
    return {k: v.strip() for k, v in merged.items() if isinstance(v, str) and v.strip()}


def save_credential_values(
    config: ProviderConfig,
    values: Mapping[str, str],
    *,
    user,
    changed: Mapping[str, Any],
    audit: bool = True,
) -> ProviderCredential:
    """Store ``values`` (already merged and checked) encrypted, and audit the
    names of the fields ``changed`` set or cleared (unless the caller writes
    its own audit event)."""
    credential = ProviderCredential.objects.filter(config=config).first() or ProviderCredential(
        config=config
    )
    credential.values = dict(values)
    credential.updated_by = user if getattr(user, "is_authenticated", False) else None
    credential.save()
    # The cached relation would hand out the old values to the next reader.
    config.credential = credential
    if not audit:
        return credential
    set_fields = sorted(k for k, v in changed.items() if v not in (None, ""))
    cleared = sorted(k for k, v in changed.items() if v in (None, ""))
    actor = getattr(user, "username", "") or "system"
    record_audit(
        config.project,
        actor,
        "provider_credentials_updated",
        f"{adapter_class(config.provider_id).label} credentials changed by {actor}"
        + (f"; set: {', '.join(set_fields)}" if set_fields else "")
        + (f"; cleared: {', '.join(cleared)}" if cleared else "")
        + ".",
        providerId=config.provider_id,
        setFields=set_fields,
        clearedFields=cleared,
    )
    return credential


def write_credentials(
    project: Project, provider_id: str, updates: Mapping[str, Any], *, user
) -> dict[str, Any]:
    """Merge ``updates`` into the project's credentials of ``provider_id``,
    encrypt them, audit the field names and answer the masked metadata
    (``configs.masked_credentials``), never the values.

    Raises ``UnknownProvider`` / ``ConfigurationError`` (nothing stored).
    """
    with transaction.atomic():
        config = get_or_create_config(project, provider_id)
        _merge_and_save(config, updates, user=user)
    return masked_credentials(provider_id, config)


def _merge_and_save(config: ProviderConfig, updates: Mapping[str, Any], *, user) -> None:
    credential = ProviderCredential.objects.filter(config=config).first()
    current = credential.values if credential else {}
    merged = merge_credentials(config.provider_id, current, updates)
    save_credential_values(config, merged, user=user, changed=updates)


def health_view(config: ProviderConfig | None) -> dict[str, Any]:
    """``{"status", "checkedAt", "message"}`` as the API shows it."""
    if config is None:
        return {"status": HealthStatus.UNKNOWN.value, "checkedAt": None, "message": ""}
    return {
        "status": config.health_status,
        "checkedAt": config.health_checked_at,
        "message": config.health_message,
    }


def check_health(config: ProviderConfig, *, actor: str) -> dict[str, Any]:
    """Ask the provider whether the stored settings and credentials work, store
    the outcome on ``config`` and answer it (``health_view``).

    Invalid settings fail the check without calling the provider. An adapter
    that raises (it should return a ``HealthResult``) fails the check with the
    error's message; nothing propagates. The message is scrubbed of every
    credential value of the project before it is stored.
    """
    cls = adapter_class(config.provider_id)
    try:
        cls.validate_config(config.settings)
    except ConfigurationError as exc:
        result = HealthResult(ok=False, message=_config_problem(exc))
    else:
        result = _call_check(config)
    redactor = project_redactor(config.project_id)
    message = redactor.scrub(result.message or "")
    config.health_status = HealthStatus.HEALTHY if result.ok else HealthStatus.FAILING
    config.health_checked_at = timezone.now()
    config.health_message = message[:2000]
    config.save(update_fields=["health_status", "health_checked_at", "health_message"])
    record_audit(
        config.project,
        actor,
        "provider_health_checked",
        f"{cls.label} health check: {config.health_status}.",
        providerId=config.provider_id,
        status=config.health_status,
    )
    return health_view(config)


def _call_check(config: ProviderConfig) -> HealthResult:
    adapter = build_adapter(config.provider_id, config)
    scrub = Redactor(adapter.secrets.secret_values()).scrub
    try:
        return adapter.check_health()
    except (ConnectorError, ConfigurationError) as exc:
        return HealthResult(ok=False, message=scrub(getattr(exc, "message", "") or str(exc)))
    except Exception as exc:
        # A contract violation; its text may hold anything, so only the type is kept.
        logger.warning(
            "health check of %s for project %s raised %s",
            config.provider_id,
            config.project_id,
            type(exc).__name__,
        )
        return HealthResult(ok=False, message=f"health check failed ({type(exc).__name__})")


def _config_problem(exc: ConfigurationError) -> str:
    details = "; ".join(
        f"{name}: {' '.join(messages)}" for name, messages in exc.field_errors.items()
    )
    return f"{exc.message} {details}".strip()
