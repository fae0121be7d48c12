"""The settings and credential UI: provider configs with their credential inline.

Everything here is built from what the adapter declares: the provider choice
from the registry, settings checked by ``validate_config`` (errors shown on
the form), one password input per ``secret_fields`` entry. Secret inputs never
render a stored value: a blank input keeps it, a "clear" box removes it, and
all the page ever shows is a masked preview (``configs.mask``) and when and by
whom it was last changed. Writes go through ``connectors.services``, the same
code as the API, so the audit log and the project default agree.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils.html import format_html, format_html_join

from connectors import services
from connectors.configs import masked_credentials
from connectors.endpoints import origin_of
from connectors.errors import ConfigurationError
from connectors.models import HealthStatus, ProviderCircuit, ProviderConfig, ProviderCredential
from connectors.registry import LOCAL_PROVIDER_ID, REGISTRY
from connectors.webhooks import WEBHOOK_SOURCES, webhook_url

HEALTH_COLOURS = {
    HealthStatus.HEALTHY: "#2e7d32",
    HealthStatus.FAILING: "#c62828",
    HealthStatus.UNKNOWN: "#757575",
}


def provider_choices() -> list[tuple[str, str]]:
    return [(pid, f"{cls.label} ({pid})") for pid, cls in REGISTRY.items()]


def field_error_lines(exc: ConfigurationError) -> list[str]:
    return [f"{name}: {message}" for name, msgs in exc.field_errors.items() for message in msgs]


class ProviderConfigForm(forms.ModelForm):
    provider_id = forms.ChoiceField(choices=provider_choices, label="Provider")

    class Meta:
        model = ProviderConfig
        fields = (
            "project",
            "provider_id",
            "enabled",
            "is_default",
            "allow_fallback_to_local",
            "rollout_percent",
            "settings",
        )
        help_texts = {"settings": "JSON object; see the declared settings below."}

    def clean_rollout_percent(self) -> int:
        value = self.cleaned_data["rollout_percent"]
        if value > 100:
            raise forms.ValidationError("A percentage between 0 and 100.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        provider_id = cleaned.get("provider_id") or self.instance.provider_id
        cls = REGISTRY.get(provider_id or "")
        if cls is None:
            return cleaned
        if "settings" in cleaned:
            settings = cleaned.get("settings")
            if not isinstance(settings, dict):
                self.add_error("settings", "Settings must be a JSON object.")
            else:
                try:
                    cleaned["settings"] = cls.validate_config(settings)
                except ConfigurationError as exc:
                    self.add_error("settings", field_error_lines(exc))
        if provider_id == LOCAL_PROVIDER_ID:
            cleaned["enabled"] = True  # the local executor is always available
        return cleaned


class CredentialForm(forms.ModelForm):
    """Base of the per-provider credential forms (``credential_form_for``).

    No model field is edited directly: ``clean`` merges the inputs into the
    stored values with ``services.merge_credentials`` and keeps the result in
    ``merged``; ``updates`` holds what changed (``""`` = cleared).
    """

    provider_id: ClassVar[str] = ""

    class Meta:
        model = ProviderCredential
        fields: ClassVar[list[str]] = []

    @classmethod
    def secret_specs(cls):
        return REGISTRY[cls.provider_id].secret_fields if cls.provider_id in REGISTRY else ()

    def requested_updates(self) -> dict[str, str]:
        updates: dict[str, str] = {}
        data = getattr(self, "cleaned_data", {})
        for spec in self.secret_specs():
            if data.get(f"clear_{spec.name}"):
                updates[spec.name] = ""
            elif data.get(f"secret_{spec.name}"):
                updates[spec.name] = data[f"secret_{spec.name}"]
        return updates

    def has_changed(self) -> bool:
        # A blank password input is "keep", not a change.
        if not self.is_bound:
            return False
        prefix = self.add_prefix
        return any(
            self.data.get(prefix(f"secret_{s.name}")) or self.data.get(prefix(f"clear_{s.name}"))
            for s in self.secret_specs()
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.updates = self.requested_updates()
        current = self.instance.values if self.instance.pk else {}
        try:
            self.merged = services.merge_credentials(self.provider_id, current, self.updates)
        except ConfigurationError as exc:
            for name, errors in exc.field_errors.items():
                field = f"secret_{name}" if f"secret_{name}" in self.fields else None
                self.add_error(field, [f"{name}: {e}" for e in errors] if not field else errors)
        return cleaned


def credential_form_for(provider_id: str) -> type[CredentialForm]:
    """A credential form with a password input and a clear box per secret field."""
    attrs: dict[str, Any] = {"provider_id": provider_id}
    cls = REGISTRY.get(provider_id)
    for spec in cls.secret_fields if cls else ():
        help_text = " ".join(
            part for part in (spec.help_text, "Leave blank to keep the stored value.") if part
        )
        attrs[f"secret_{spec.name}"] = forms.CharField(
            label=spec.label,
            required=False,
            strip=True,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
            help_text=help_text,
        )
        attrs[f"clear_{spec.name}"] = forms.BooleanField(
            label=f"Clear {spec.label}", required=False
        )
    return type(f"CredentialForm_{provider_id}", (CredentialForm,), attrs)


class CredentialInline(admin.StackedInline):
    model = ProviderCredential
    verbose_name = "credentials"
    verbose_name_plural = "credentials"
    can_delete = False
    max_num = 1
    readonly_fields = ("masked_preview", "updated_at", "updated_by")

    def get_formset(self, request, obj: ProviderConfig | None = None, **kwargs):
        form = credential_form_for(obj.provider_id if obj else "")
        kwargs["form"] = form
        kwargs["fields"] = list(form.base_fields)
        return super().get_formset(request, obj, **kwargs)

    def get_fields(self, request, obj: ProviderConfig | None = None):
        form = credential_form_for(obj.provider_id if obj else "")
        return [*form.base_fields, *self.readonly_fields]

    @admin.display(description="Stored (masked)")
    def masked_preview(self, credential: ProviderCredential | None) -> str:
        if credential is None or credential.pk is None:
            return "not set"
        masked = masked_credentials(credential.config.provider_id, credential.config)
        return format_html_join(
            "",
            "<div>{}: {}</div>",
            ((f["label"], f["preview"] if f["set"] else "not set") for f in masked["fields"]),
        )


@admin.register(ProviderConfig)
class ProviderConfigAdmin(admin.ModelAdmin):
    form = ProviderConfigForm
    list_display = (
        "project",
        "provider_label",
        "enabled",
        "is_default",
        "rollout_percent",
        "health",
        "health_checked_at",
        "credential_status",
    )
    list_filter = ("provider_id", "enabled", "health_status", "project")
    list_select_related = ("project", "credential")
    actions = ["check_health"]
    inlines = [CredentialInline]

    def get_readonly_fields(self, request, obj: ProviderConfig | None = None):
        fields = ["declared_settings", "health_status", "health_checked_at", "health_message"]
        if obj is not None:
            # Another provider would need other settings and credentials: make a new config.
            fields = ["project", "provider_id", *fields]
            if obj.provider_id in WEBHOOK_SOURCES:
                fields += ["webhook_url", "last_webhook_at"]
        return fields

    @admin.display(description="Webhook URL")
    def webhook_url(self, config: ProviderConfig) -> str:
        """What to paste into the provider's webhook settings (with the
        webhook secret credential as its secret)."""
        return webhook_url(getattr(self, "_request", None), config) or "-"

    def get_form(self, request, obj=None, change=False, **kwargs):
        self._request = request  # the webhook URL is absolute: it needs the host
        return super().get_form(request, obj, change, **kwargs)

    def get_inline_instances(self, request, obj: ProviderConfig | None = None):
        # Which secret inputs to show depends on the provider: save the config first.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def save_model(self, request, obj: ProviderConfig, form, change: bool) -> None:
        cls = REGISTRY.get(obj.provider_id)
        stored = ProviderConfig.objects.filter(pk=obj.pk).values_list("settings", flat=True)
        old_settings = stored.first() if obj.pk else None
        super().save_model(request, obj, form, change)
        services.apply_default(obj)
        services.audit_config_change(obj, request.user.get_username())
        # Credentials belong to their endpoint: remember a move for save_formset,
        # which stores new credentials sent with it or clears the old ones.
        form.endpoint_move = None
        if cls is not None and old_settings is not None:
            old, new = cls.endpoint_of(old_settings), cls.endpoint_of(obj.settings)
            if origin_of(old) != origin_of(new):
                form.endpoint_move = (old, new)

    def save_formset(self, request, form, formset, change: bool) -> None:
        if formset.model is not ProviderCredential:
            super().save_formset(request, form, formset, change)
            return
        formset.save(commit=False)  # sets the lists the admin's change message reads
        changed = [f for f in formset.forms if f.has_changed()]
        move = getattr(form, "endpoint_move", None)
        if move is not None:
            updates = changed[0].updates if changed else {}
            services.rebind_credentials(
                form.instance, *move, updates, user=request.user, actor=request.user.get_username()
            )
            return
        for credential_form in changed:
            services.save_credential_values(
                form.instance,
                credential_form.merged,
                user=request.user,
                changed=credential_form.updates,
            )

    @admin.display(description="Provider", ordering="provider_id")
    def provider_label(self, config: ProviderConfig) -> str:
        cls = REGISTRY.get(config.provider_id)
        return f"{cls.label} ({config.provider_id})" if cls else f"{config.provider_id} (unknown)"

    @admin.display(description="Health", ordering="health_status")
    def health(self, config: ProviderConfig) -> str:
        return format_html(
            '<span style="color:{}" title="{}">● {}</span>',
            HEALTH_COLOURS.get(config.health_status, "#757575"),
            config.health_message,
            config.get_health_status_display(),
        )

    @admin.display(description="Credentials")
    def credential_status(self, config: ProviderConfig) -> str:
        if config.provider_id not in REGISTRY:
            return "-"
        masked = masked_credentials(config.provider_id, config)
        if not REGISTRY[config.provider_id].secret_fields:
            return "none needed"
        return "set" if masked["configured"] else "not set"

    @admin.display(description="Declared settings")
    def declared_settings(self, config: ProviderConfig) -> str:
        cls = REGISTRY.get(config.provider_id) if config.provider_id else None
        if cls is None:
            return "Pick a provider and save to see its settings."
        if not cls.config_fields:
            return "This provider has no settings."
        return format_html_join(
            "",
            "<div><code>{}</code> ({}{}{}) {}</div>",
            (
                (
                    spec.name,
                    spec.kind,
                    ", required" if spec.required else "",
                    f", default {spec.default}" if spec.default is not None else "",
                    spec.help_text,
                )
                for spec in cls.config_fields
            ),
        )

    # A check sends the stored credentials to the provider and records the
    # result: an act on the config, so view-only staff do not get it.
    @admin.action(description="Check health", permissions=["change"])
    def check_health(self, request, queryset: QuerySet[ProviderConfig]) -> None:
        actor = request.user.get_username()
        for config in queryset.select_related("project"):
            if config.provider_id not in REGISTRY:
                self.message_user(request, f"{config}: unknown provider", messages.ERROR)
                continue
            health = services.check_health(config, actor=actor)
            level = messages.SUCCESS if health["status"] == HealthStatus.HEALTHY else messages.ERROR
            detail = f" ({health['message']})" if health["message"] else ""
            self.message_user(request, f"{config}: {health['status']}{detail}", level)


@admin.register(ProviderCircuit)
class ProviderCircuitAdmin(admin.ModelAdmin):
    """Circuit breakers per provider endpoint; read-only but for a reset."""

    list_display = ("provider_id", "base_url", "consecutive_failures", "open_until", "updated_at")
    readonly_fields = (
        "provider_id",
        "base_url",
        "consecutive_failures",
        "open_until",
        "last_error",
        "updated_at",
    )
    actions = ["close_circuit"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Close the circuit (reset failures)", permissions=["change"])
    def close_circuit(self, request, queryset: QuerySet[ProviderCircuit]) -> None:
        count = queryset.update(consecutive_failures=0, open_until=None, last_error="")
        self.message_user(request, f"Closed {count} circuit(s).", messages.SUCCESS)
