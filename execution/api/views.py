"""Execution API: policy check, runs, their events and the actions on them (spec §5).

Every view is scoped to the caller's projects (``ccdash.api.permissions``):

* a run or project outside them answers **404**, never 403, including a
  ``projectId`` in a request body, so nobody learns that another project's
  ids exist;
* inside them, a role below the action's minimum answers **403**
  ``permission_denied`` (viewer: read; operator: create, cancel, retry,
  reconcile; approver: approve, reject);
* an action the run's state forbids answers **409** with the service's code
  (``execution.services.ActionNotAllowed``);
* an unknown ``providerId`` answers **400** (``invalid_config``, field
  ``providerId``); a prompt to a command provider **400** naming ``prompt``;
  an empty, whitespace-only, NUL-bearing or too long prompt **400** with
  ``prompt_empty``, ``prompt_nul`` or ``prompt_too_long``;
* a provider that fails a message or follow-up answers **502**
  ``provider_error``.

The views only translate HTTP to ``execution.services`` calls; the services
own the state machine and the audit events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ccdash.api.errors import ApiError, Conflict
from ccdash.api.permissions import (
    NotFound,
    caller_role,
    get_project_for,
    member_project_ids,
    require_role,
)
from ccdash.api.schema import ERROR_RESPONSES, ErrorSerializer
from ccdash.roles import Action
from execution import follow_ups, policy_gate, reconciler, services
from execution.api import stream as live
from execution.api.filters import RunFilter
from execution.api.pagination import RunPagination
from execution.api.serializers import (
    ApproveSerializer,
    EventPageQuerySerializer,
    EventPageSerializer,
    FollowUpSerializer,
    MessageSerializer,
    PolicyCheckRequestSerializer,
    PolicyCheckSerializer,
    RejectSerializer,
    RunCreateSerializer,
    RunEventSerializer,
    RunSerializer,
)
from execution.events import audit
from execution.models import Run, RunEvent, RunKind
from execution.prompt_policy import PromptRejected
from execution.transitions import InvalidTransition

# The relations RunSerializer follows; every run read for an answer joins them.
RUN_RELATED = ("approved_by",)

# One Server-Sent Event as SSE clients (and schemathesis) parse it: the schema
# of a text/event-stream response describes each event, not the raw text.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["log", "run", "end"]},
        "data": {"type": "string", "description": "JSON: the event, the run's fields, or why."},
        "id": {"type": "string", "description": "log events: the sequenceNo."},
        "retry": {"type": "integer", "description": "Reconnect delay in ms."},
    },
}

RUN_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Run id.")


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERROR_RESPONSES[code] for code in codes}


@contextmanager
def service_conflicts() -> Iterator[None]:
    """Turn "the run's state does not allow this" into 409 with the service's
    code, and "not you" (four eyes) into 403 with its code."""
    try:
        yield
    except services.ActionNotAllowed as exc:
        raise Conflict(exc.message, exc.code) from exc
    except services.ActionForbidden as exc:
        raise ApiError(status.HTTP_403_FORBIDDEN, exc.code, exc.message) from exc
    except InvalidTransition as exc:
        # Services check the state first; this is a race with a worker.
        raise Conflict(f"{exc}; reload the run.") from exc
    except follow_ups.ProviderCallFailed as exc:
        raise ApiError(status.HTTP_502_BAD_GATEWAY, "provider_error", exc.message) from exc


@contextmanager
def input_errors(text_field: str = "prompt") -> Iterator[None]:
    """Turn a request that does not fit the provider, or a prompt the prompt
    policy refuses outright, into 400 naming the field (``text_field`` for
    the prompt)."""
    try:
        yield
    except services.InvalidRunRequest as exc:
        raise ApiError(status.HTTP_400_BAD_REQUEST, exc.code, exc.message, exc.fields) from exc
    except PromptRejected as exc:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST, exc.code, exc.message, {text_field: [exc.message]}
        ) from exc


class PolicyCheckView(APIView):
    """``POST policy-check``: the decision a run with this command or prompt
    would get now, without creating anything. Any member (viewer and up) may
    ask. ``providerId`` (else the project's default) picks the policy, as for
    ``POST runs``; ``kind`` in the answer says which one answered.

    An unknown ``projectId`` (or one of another project) answers 404.
    """

    @extend_schema(
        request=PolicyCheckRequestSerializer,
        responses={200: PolicyCheckSerializer, **_errors(400, 401, 404)},
        summary="Evaluate the policy for a command without creating a run",
    )
    def post(self, request: Request) -> Response:
        body = PolicyCheckRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = get_project_for(request.user, data["projectId"], Action.READ)
        provider_id = data.get("providerId") or services.effective_default_provider_id(project)
        with input_errors():
            kind, text = services.run_input(
                provider_id, data.get("command", ""), data.get("prompt", "")
            )
            if kind == RunKind.PROMPT:
                policy_gate.check_prompt(project, text)
        decision = policy_gate.evaluate_text(
            project, kind, text, data.get("cwd", ""), data.get("envProfile", "")
        )
        answer = SimpleNamespace(
            kind=kind,
            verdict=decision.verdict,
            risk=decision.risk,
            reason_codes=decision.reason_codes,
            messages=decision.messages,
        )
        return Response(PolicyCheckSerializer(answer).data)


class RunViewSet(viewsets.GenericViewSet):
    """Runs of the caller's projects: ``runs`` and ``runs/{id}`` plus actions."""

    serializer_class = RunSerializer
    pagination_class = RunPagination
    filterset_class = RunFilter
    lookup_value_regex = r"\d+"
    queryset = Run.objects.none()  # the model, for the schema; get_queryset scopes

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        # The caller's project ids, read once: as a subquery, PostgreSQL
        # re-checked membership for every index entry a deep page skipped.
        scope = list(member_project_ids(self.request.user).values_list("project_id", flat=True))
        return Run.objects.filter(project_id__in=scope)

    def page_related(self) -> tuple[str, ...]:
        """Relations the page's rows are read with (``RunPagination``): the
        JSON follows only these."""
        return RUN_RELATED

    def run_for(self, action_: Action) -> Run:
        """The run of the URL, scoped to the caller's projects and checked for
        ``action_``: 404 outside them, 403 below the role. One query (the
        caller's role comes as a subquery)."""
        run = (
            Run.objects.annotate(caller_role=caller_role(self.request.user, "project_id"))
            .filter(pk=self.kwargs["pk"], caller_role__isnull=False)
            .select_related("project", "approved_by")
            .first()
        )
        if run is None:
            raise NotFound("Run not found.")
        require_role(run.caller_role, action_)
        return run

    def answer(self, run: Run, code: int = status.HTTP_200_OK) -> Response:
        return Response(RunSerializer(run).data, status=code)

    @extend_schema(summary="List runs of my projects (newest first)")
    def list(self, request: Request) -> Response:
        """Any member. Filters: ``projectId``, ``featureId``, ``providerId``,
        ``status`` and ``syncStatus`` (both repeatable). Paged with
        ``limit`` (default 50, at most 500) and ``offset``; ``count`` is the
        total. See ``execution.api.pagination`` for why not a cursor."""
        runs = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        request=RunCreateSerializer,
        responses={
            201: OpenApiResponse(RunSerializer, description="Created."),
            200: OpenApiResponse(
                RunSerializer, description="The run an earlier request with this key created."
            ),
            **_errors(400, 401, 403, 404),
            409: OpenApiResponse(
                ErrorSerializer,
                description="idempotencyKey already used in this project for another "
                "command (idempotency_key_reused).",
            ),
        },
        summary="Create a run",
    )
    def create(self, request: Request) -> Response:
        """Evaluate policy and record the run (``queued``, ``awaiting_approval``
        or ``blocked``); a queued run is dispatched once the request commits.

        Operator role. ``projectId`` not among the caller's projects → 404 (as
        for every other id outside them). A repeated ``idempotencyKey`` answers
        200 with the run the first request created.
        """
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = get_project_for(request.user, data["projectId"], Action.CREATE_RUN)
        with service_conflicts(), input_errors():
            run, created = services.create_run(
                project,
                request.user,
                services.RunRequest(
                    command=data.get("command", ""),
                    prompt=data.get("prompt", ""),
                    provider_id=data.get("providerId", ""),
                    feature_id=data.get("featureId", ""),
                    recommendation_rule_id=data.get("recommendationRuleId", ""),
                    cwd=data.get("cwd", ""),
                    env_profile=data.get("envProfile", ""),
                    idempotency_key=data.get("idempotencyKey") or None,
                ),
            )
        return self.answer(run, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        responses={200: RunSerializer, **_errors(401, 404)},
        parameters=[RUN_ID],
        summary="Get a run",
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        """Any member of the run's project; 404 for everyone else."""
        return self.answer(self.run_for(Action.READ))

    @extend_schema(
        parameters=[
            RUN_ID,
            OpenApiParameter(
                "afterSequence",
                OpenApiTypes.INT,
                description="Return events with a sequenceNo above this (default 0).",
            ),
            OpenApiParameter(
                "limit", OpenApiTypes.INT, description="Page size: default 200, at most 1000."
            ),
        ],
        responses={200: EventPageSerializer, **_errors(400, 401, 404)},
        summary="Page through a run's events",
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def events(self, request: Request, pk: str) -> Response:
        """Any member. Events in ``sequenceNo`` order after ``afterSequence``;
        poll with the answer's ``nextSequence`` to get only new ones."""
        run = self.run_for(Action.READ)
        query = EventPageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["afterSequence"]
        events = list(
            RunEvent.objects.filter(run_id=run.pk, sequence_no__gt=after).order_by("sequence_no")[
                : query.validated_data["limit"]
            ]
        )
        return Response(
            {
                "items": RunEventSerializer(events, many=True).data,
                "nextSequence": events[-1].sequence_no if events else after,
            }
        )

    @extend_schema(
        parameters=[
            RUN_ID,
            OpenApiParameter(
                "afterSequence",
                OpenApiTypes.INT,
                description="Start after this sequenceNo (the Last-Event-ID header wins).",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT_SCHEMA,
                description="Server-Sent Events: `log` (id = sequenceNo, data = the event), "
                "`run` (the run's live fields), `end`.",
            ),
            **_errors(400, 401, 404),
        },
        summary="Follow a run live (Server-Sent Events, resumable by Last-Event-ID)",
    )
    @action(
        detail=True,
        methods=["get"],
        pagination_class=None,
        filterset_class=None,
        renderer_classes=[JSONRenderer, live.EventStreamRenderer],
    )
    def stream(self, request: Request, pk: str) -> StreamingHttpResponse:
        """Any member. See ``execution.api.stream`` for the messages; each
        event arrives once, in order, and a reconnect resumes after the
        ``Last-Event-ID`` the browser sends."""
        run = self.run_for(Action.READ)
        raw = request.headers.get("Last-Event-ID") or request.query_params.get("afterSequence")
        try:
            after = int(raw or 0)
            if after < 0:
                raise ValueError
        except ValueError:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid",
                "Last-Event-ID / afterSequence must be a sequence number (an integer ≥ 0).",
                {"afterSequence": ["A non-negative integer is required."]},
            ) from None
        response = StreamingHttpResponse(
            live.run_stream(run.pk, after), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a buffering proxy would hold events back
        return response

    @extend_schema(
        request=ApproveSerializer,
        responses={200: RunSerializer, **_errors(400, 401, 403, 404, 409)},
        parameters=[RUN_ID],
        summary="Approve (or, with decision=reject, reject) a run awaiting approval",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """Approver role. The body is optional; ``{"decision": "reject"}`` does
        what ``reject`` does. A ``comment`` is recorded as an event.

        Four eyes: the run's creator gets 403 ``self_approval`` unless the
        project sets ``allowSelfApproval``; they may still reject it."""
        run = self.run_for(Action.APPROVE)
        body = ApproveSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        comment = body.validated_data["comment"]
        if body.validated_data["decision"] == "reject":
            with service_conflicts():
                return self.answer(services.reject(run, request.user, comment))
        with service_conflicts():
            services.approve(run, request.user)
        if comment:
            # services.approve takes no comment; keep the approver's words anyway.
            actor = services.actor_name(request.user)
            audit(run.pk, "approval_comment", comment, actor=actor)
        return self.answer(run)

    @extend_schema(
        request=RejectSerializer,
        responses={200: RunSerializer, **_errors(400, 401, 403, 404, 409)},
        parameters=[RUN_ID],
        summary="Reject a run awaiting approval (it becomes blocked)",
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        run = self.run_for(Action.APPROVE)
        body = RejectSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        with service_conflicts():
            return self.answer(services.reject(run, request.user, body.validated_data["comment"]))

    @extend_schema(
        request=None,
        responses={200: RunSerializer, **_errors(401, 403, 404, 409)},
        parameters=[RUN_ID],
        summary="Cancel a run",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Operator role. A run that has not started ends ``canceled`` at once;
        a started one becomes ``canceling`` until its worker or provider
        confirms. A finished run answers 409."""
        run = self.run_for(Action.CANCEL)
        with service_conflicts():
            return self.answer(services.cancel(run, request.user))

    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(RunSerializer, description="The new run."),
            200: OpenApiResponse(
                RunSerializer, description="The run was retried before: its existing retry."
            ),
            **_errors(401, 403, 404, 409),
        },
        parameters=[RUN_ID],
        summary="Retry a failed or canceled run as a new run",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        """Operator role. Answers 201 with the *new* run (``retryOfRunId`` =
        this run); a run already retried answers 200 with that retry (a run is
        retried once; retry the retry to go again); any other status than
        failed/canceled answers 409."""
        run = self.run_for(Action.RETRY)
        with service_conflicts():
            new_run, created = services.retry_once(run, request.user)
        return self.answer(new_run, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        request=MessageSerializer,
        responses={200: RunSerializer, **_errors(400, 401, 403, 404, 409, 502)},
        parameters=[RUN_ID],
        summary="Answer a run that waits for its user",
    )
    @action(detail=True, methods=["post"])
    def messages(self, request: Request, pk: str) -> Response:
        """Operator role. Sends ``text`` to the agent of a ``waiting`` run
        (Devin: a message to the session); the run shows ``running`` once the
        next poll sees the agent working. 409 when the run is not waiting, its
        provider takes no messages (``supportsFollowUp``), the provider
        refuses (its reason as the code), or the text matches a prompt pattern
        (``approval_required``). 400 for a text the prompt policy refuses."""
        run = self.run_for(Action.CREATE_RUN)
        body = MessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with service_conflicts(), input_errors("text"):
            follow_ups.send_message(run, request.user, body.validated_data["text"])
        return self.answer(self.run_for(Action.READ))

    @extend_schema(
        request=FollowUpSerializer,
        responses={
            201: OpenApiResponse(RunSerializer, description="The new, linked run."),
            **_errors(400, 401, 403, 404, 409, 502),
        },
        parameters=[RUN_ID],
        summary="Follow up a finished agent run with a new prompt on the same agent",
    )
    @action(detail=True, methods=["post"], url_path="follow-up")
    def follow_up(self, request: Request, pk: str) -> Response:
        """Operator role. Creates a new run (``followUpOfRunId`` = this run)
        on the same agent: Cursor starts a run on the existing agent, Devin
        gets a message in the same session. The finished run stays finished.
        The prompt goes through the prompt policy: allowed, it is sent now;
        needing approval, the new run waits for an approver. 409 when this
        run has not finished, its provider takes no follow-ups, or the
        provider refuses (``agent_busy``, ``session_ended``)."""
        run = self.run_for(Action.CREATE_RUN)
        body = FollowUpSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with service_conflicts(), input_errors():
            new_run = follow_ups.follow_up(run, request.user, body.validated_data["prompt"])
        return self.answer(new_run, status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={200: RunSerializer, **_errors(401, 403, 404, 409)},
        parameters=[RUN_ID],
        summary="Reconcile a run with its provider now",
    )
    @action(detail=True, methods=["post"])
    def reconcile(self, request: Request, pk: str) -> Response:
        """Operator role. Polls the provider now and answers the updated run."""
        run = self.run_for(Action.RECONCILE)
        with service_conflicts():
            reconciler.reconcile_run(run.pk, actor=services.actor_name(request.user))
        return self.answer(self.run_for(Action.READ))
