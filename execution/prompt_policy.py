"""Prompt policy: what a coding-agent instruction needs before it is sent.

A minimal engine to the interface the policy engineer's module provides (its
version replaces this file): pure, table-driven, stable reason codes.

* By default a prompt is ``allow``, risk ``medium``, reason ``agent_prompt``.
* ``PromptPolicy.require_approval`` makes every prompt ``requires_approval``.
* A matching pattern (case-insensitive regular expression) raises the prompt to
  ``requires_approval`` with that pattern's reason code.
* ``validate_prompt`` refuses an empty, whitespace-only, too long or NUL-bearing
  prompt with ``PromptRejected``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from execution.policy import PolicyDecision

AGENT_PROMPT = "agent_prompt"
AGENT_APPROVAL_REQUIRED = "agent_approval_required"
DEFAULT_MAX_LENGTH = 20_000


@dataclass(frozen=True)
class PromptPattern:
    pattern: str
    reason_code: str


@dataclass(frozen=True)
class PromptPolicy:
    require_approval: bool = False
    patterns: tuple[PromptPattern, ...] = ()
    max_length: int = DEFAULT_MAX_LENGTH


class PromptRejected(ValueError):
    """The prompt cannot be a run at all (API: 400 with ``code``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def validate_prompt(text: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
    if "\x00" in text:
        raise PromptRejected("prompt_nul", "The prompt contains a NUL byte.")
    if not text.strip():
        raise PromptRejected("prompt_empty", "The prompt is empty.")
    if len(text) > max_length:
        raise PromptRejected(
            "prompt_too_long", f"The prompt is longer than {max_length} characters."
        )


def evaluate_prompt(text: str, policy: PromptPolicy) -> PolicyDecision:
    codes: list[str] = []
    messages: list[str] = []
    if policy.require_approval:
        codes.append(AGENT_APPROVAL_REQUIRED)
        messages.append("this project requires an approval for every agent run")
    for rule in policy.patterns:
        if re.search(rule.pattern, text, re.IGNORECASE):
            codes.append(rule.reason_code)
            messages.append(f"the prompt matches the pattern {rule.pattern!r}")
    if codes:
        verdict = "requires_approval"
    else:
        verdict, codes, messages = "allow", [AGENT_PROMPT], ["an instruction for a coding agent"]
    return PolicyDecision(
        verdict=verdict,
        risk="medium",
        reason_codes=tuple(dict.fromkeys(codes)),
        argv=(),
        resolved_cwd="",
        env_profile="default",
        messages=tuple(dict.fromkeys(messages)),
    )


def compile_patterns(raw: Iterable[Mapping]) -> tuple[PromptPattern, ...]:
    patterns = []
    for item in raw:
        pattern, code = str(item.get("pattern", "")), str(item.get("reasonCode", ""))
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"Invalid regular expression {pattern!r}: {exc}") from None
        if not pattern or not code:
            raise ValueError("Each pattern needs a pattern and a reasonCode.")
        patterns.append(PromptPattern(pattern, code))
    return tuple(patterns)
