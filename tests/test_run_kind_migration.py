"""The migration that introduced run kinds gives existing runs their
provider's kind and moves a prompt out of the command column."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("execution", "0004_run_list_indexes")]
AFTER = [("execution", "0005_run_kind")]


@pytest.mark.django_db(transaction=True)
def test_existing_runs_take_their_providers_kind(project):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE).apps
    Run = old_apps.get_model("execution", "Run")
    common = {"project_id": project.pk, "policy_verdict": "allow", "risk_level": "low"}
    ids = {
        provider: Run.objects.create(provider_id=provider, command=text, **common).pk
        for provider, text in [
            ("local", "echo hi"),
            ("github_actions", "make test"),
            ("cursor", "Add a README section"),
            ("devin", "Update the changelog"),
        ]
    }

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    Run = executor.loader.project_state(AFTER).apps.get_model("execution", "Run")

    migrated = {
        provider: Run.objects.values("kind", "command", "prompt").get(pk=pk)
        for provider, pk in ids.items()
    }
    assert migrated == {
        "local": {"kind": "command", "command": "echo hi", "prompt": ""},
        "github_actions": {"kind": "command", "command": "make test", "prompt": ""},
        "cursor": {"kind": "prompt", "command": "", "prompt": "Add a README section"},
        "devin": {"kind": "prompt", "command": "", "prompt": "Update the changelog"},
    }
    # Back to the latest schema for whatever runs next.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
