"""The GitHub Actions adapter passes the shared conformance suite against the
GitHub simulator over real HTTP (``live_http``)."""

from __future__ import annotations

import pytest

from connectors.base import RunRef, Secrets
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from tests.support.conformance import AdapterConformance

SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}
CONCLUSIONS = (
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "stale",
    "startup_failure",
)


class TestGitHubActionsConformance(AdapterConformance):
    adapter_class = GitHubActionsAdapter
    valid_settings = SETTINGS
    live_http = True
    known_native_statuses = (
        "requested",
        "queued",
        "pending",
        "waiting",
        "in_progress",
        *(f"completed/{conclusion}" for conclusion in CONCLUSIONS),
    )

    @pytest.fixture(autouse=True)
    def _simulator(self, github_sim):
        self.sim = github_sim
        (self.seeded_run,) = github_sim.seed(1, "in_progress")

    def make_secrets(self) -> dict[str, str]:
        return {"token": GitHubActionsSimulator.default_token}

    def make_adapter(self) -> GitHubActionsAdapter:
        settings = GitHubActionsAdapter.validate_config({**SETTINGS, "baseUrl": self.sim.url})
        return GitHubActionsAdapter(settings=settings, secrets=Secrets(self.make_secrets()))

    def run_ref(self, adapter) -> RunRef:
        return RunRef(run_id=424242, provider_run_id=self.seeded_run)

    def provoke_errors(self, adapter) -> list:
        ref = self.run_ref(adapter)

        def after(fault, call):
            def provoked():
                fault()
                return call()

            return provoked

        return [
            (
                "poll 503",
                after(lambda: self.sim.fail_next(1, 503), lambda: adapter.poll_status(ref)),
            ),
            ("poll revoked", after(self.sim.revoke_tokens, lambda: adapter.poll_status(ref))),
            ("logs revoked", lambda: adapter.fetch_logs(ref, {})),
            ("vanished", after(self._restore_and_vanish, lambda: adapter.poll_status(ref))),
            ("poll 429", after(self.sim.rate_limit_next, lambda: adapter.poll_status(ref))),
        ]

    def _restore_and_vanish(self) -> None:
        self.sim.clear_faults()
        self.sim.vanish(self.seeded_run)
