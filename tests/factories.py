"""factory-boy factories shared by the test suite."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from ccdash.models import Membership, Project
from connectors import registry
from execution.models import Run


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or "pw-for-tests")
        if create:
            self.save(update_fields=["password"])


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    workspace_root = "/tmp"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = "operator"


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    project = factory.SubFactory(ProjectFactory)
    command = "echo hi"
    provider_id = "local"
    # A run takes its provider's kind; the text lives in the field of that kind.
    kind = factory.LazyAttribute(lambda run: _input_kind(run.provider_id))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        if kwargs.get("kind") == "prompt" and not kwargs.get("prompt"):
            kwargs["prompt"], kwargs["command"] = kwargs.get("command", ""), ""
        return super()._create(model_class, *args, **kwargs)

    policy_verdict = "allow"
    risk_level = "low"
    status = "queued"
    dispatch_key = factory.Sequence(lambda n: f"dispatch-key-{n}")


def _input_kind(provider_id: str) -> str:
    """The registered provider's kind; ``command`` for ids tests make up."""
    cls = registry.REGISTRY.get(provider_id)
    return getattr(cls, "input_kind", "command")
