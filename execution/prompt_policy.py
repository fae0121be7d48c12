"""Policy for prompt runs: instructions for a coding agent, not command lines.

Pure Python (no Django), beside the command policy in ``execution.policy`` and
returning the same :class:`~execution.policy.PolicyDecision`, so runs, approvals
and the API treat both kinds alike. A prompt is prose: it is never parsed or
judged by the shell rules ("Add a README section; then update the changelog" is
not a compound command).

The rules, in order:

* :func:`validate_prompt` rejects what is not a prompt at all, with a stable
  code the API turns into a 400: empty or only whitespace (``prompt_empty``), a
  NUL character (``prompt_nul``), more than ``max_length`` characters
  (``prompt_too_long``);
* by default a prompt is ``allow``, risk ``medium``, code ``agent_prompt``;
* the project's ``require_approval`` makes it ``requires_approval``
  (``agent_runs_require_approval``);
* each project pattern that matches makes it ``requires_approval`` with that
  pattern's reason code, risk ``high`` (the project marked such prompts as
  sensitive).

Patterns are project data evaluated against text anyone with run access types,
so they run on RE2 (``google-re2``), whose matching time is linear in the text
whatever the pattern: no pattern can make a prompt take exponential time the
way ``(a+)+$`` does with a backtracking engine. The price is RE2's syntax: no
backreferences or lookaround; :func:`compile_patterns` rejects those with a
message naming the pattern. Patterns are also capped in number and length and
compiled once per process (:func:`_compiled`).

Matching is case-insensitive and runs on the prompt as typed and on its NFKC
form with invisible format characters removed, so "pro<zero-width space>duction"
or the full-width letters of "production" still match ``production``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import re2

from execution.policy import REASON_CODES as COMMAND_REASON_CODES
from execution.policy import Finding, PolicyDecision, decide

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "PROMPT_REASON_CODES",
    "PROMPT_REJECTION_CODES",
    "REASON_CODES",
    "InvalidPromptPattern",
    "PromptPattern",
    "PromptPolicy",
    "PromptRejected",
    "compile_patterns",
    "evaluate_prompt",
    "validate_prompt",
]

DEFAULT_MAX_LENGTH = 20_000
# Bounds on project configuration: enough for a list of sensitive topics, small
# enough that evaluating every pattern stays cheap on every run creation.
MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 500
# RE2 memory budget per compiled pattern; a pattern that needs more is refused
# at compile time rather than slowing every match.
_PATTERN_MAX_MEM = 2 * 1024 * 1024

# Stable machine codes: stored on runs and shown by the API, so never rename one.
AGENT_PROMPT = "agent_prompt"
AGENT_RUNS_REQUIRE_APPROVAL = "agent_runs_require_approval"
PROMPT_PATTERN_INVALID = "prompt_pattern_invalid"
PROMPT_EMPTY = "prompt_empty"
PROMPT_TOO_LONG = "prompt_too_long"
PROMPT_NUL = "prompt_nul"

PROMPT_REASON_CODES: Mapping[str, str] = MappingProxyType(
    {
        AGENT_PROMPT: "an instruction for a coding agent, which works in its own environment",
        AGENT_RUNS_REQUIRE_APPROVAL: "the project requires approval for every agent run",
        PROMPT_PATTERN_INVALID: "a project pattern cannot be evaluated, so the prompt waits",
    }
)
# The name the command policy uses; a pattern's own code is described by the project.
REASON_CODES = PROMPT_REASON_CODES
PROMPT_REJECTION_CODES: Mapping[str, str] = MappingProxyType(
    {
        PROMPT_EMPTY: "the prompt is empty or only whitespace",
        PROMPT_TOO_LONG: "the prompt is longer than the project allows",
        PROMPT_NUL: "the prompt contains a NUL character",
    }
)

# A pattern's reason code is shown and stored like the built-in ones.
_REASON_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_RESERVED_CODES = frozenset({*COMMAND_REASON_CODES, *PROMPT_REASON_CODES, *PROMPT_REJECTION_CODES})


class PromptRejected(ValueError):
    """The text is not an acceptable prompt; ``code`` is one of PROMPT_REJECTION_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidPromptPattern(ValueError):
    """A configured pattern is unusable. ``index`` is its position in the list and
    ``field`` the offending key (``pattern`` or ``reasonCode``), for the API's
    ``error.fields``."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"pattern {index + 1}: {message}")
        self.index = index
        self.field = field


@dataclass(frozen=True)
class PromptPattern:
    pattern: str  # case-insensitive regular expression (RE2 syntax)
    reason_code: str  # e.g. "production"


@dataclass(frozen=True)
class PromptPolicy:
    require_approval: bool = False  # the project's agentRunsRequireApproval
    patterns: tuple[PromptPattern, ...] = ()
    max_length: int = DEFAULT_MAX_LENGTH


# ------------------------------------------------------------------- validation


def validate_prompt(text: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
    """Raise :class:`PromptRejected` unless ``text`` is a prompt worth sending.

    Length counts characters (code points), as the API documents it.
    """
    if not isinstance(text, str):
        raise TypeError(f"a prompt is a string, not {type(text).__name__}")
    if max_length < 1:
        raise ValueError("max_length must be positive")
    if len(text) > max_length:
        message = f"the prompt has {len(text)} characters; the limit is {max_length}"
        raise PromptRejected(PROMPT_TOO_LONG, message)
    if "\0" in text:
        raise PromptRejected(PROMPT_NUL, "the prompt contains a NUL character")
    if not _without_format_characters(text).strip():
        raise PromptRejected(PROMPT_EMPTY, "the prompt is empty")


def _without_format_characters(text: str) -> str:
    """``text`` without invisible format characters (zero-width space, joiners, BOM)."""
    return "".join(char for char in text if unicodedata.category(char) != "Cf")


# -------------------------------------------------------------------- patterns


def compile_patterns(raw: Iterable[Mapping]) -> tuple[PromptPattern, ...]:
    """Validate a project's configured patterns and return them as PromptPatterns.

    Each item is ``{"pattern": str, "reasonCode": str}`` (``reason_code`` is
    accepted too). Raises :class:`InvalidPromptPattern` (a ValueError) naming the
    first bad item: unknown keys, a pattern that is empty, too long or not valid
    RE2 syntax, a reason code that is not snake_case or is a built-in code.
    """
    patterns: list[PromptPattern] = []
    for index, item in enumerate(raw):
        if len(patterns) >= MAX_PATTERNS:
            raise InvalidPromptPattern(index, "pattern", f"at most {MAX_PATTERNS} patterns")
        if not isinstance(item, Mapping):
            raise InvalidPromptPattern(index, "pattern", "expected an object")
        unknown = set(item) - {"pattern", "reasonCode", "reason_code"}
        if unknown:
            raise InvalidPromptPattern(index, sorted(unknown)[0], "unknown field")
        pattern = item.get("pattern")
        code = item.get("reasonCode", item.get("reason_code"))
        _check_reason_code(index, code)
        _check_pattern(index, pattern)
        patterns.append(PromptPattern(pattern=pattern, reason_code=code))  # type: ignore[arg-type]
    return tuple(patterns)


def _check_reason_code(index: int, code: object) -> None:
    if not isinstance(code, str) or not _REASON_CODE.fullmatch(code):
        message = "reasonCode must be snake_case (a-z, 0-9, _; up to 48), e.g. force_push"
        raise InvalidPromptPattern(index, "reasonCode", message)
    if code in _RESERVED_CODES:
        raise InvalidPromptPattern(index, "reasonCode", f"{code!r} is a built-in reason code")


def _check_pattern(index: int, pattern: object) -> None:
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidPromptPattern(index, "pattern", "pattern must be a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        message = f"pattern is longer than {MAX_PATTERN_LENGTH} characters"
        raise InvalidPromptPattern(index, "pattern", message)
    if "\0" in pattern:
        raise InvalidPromptPattern(index, "pattern", "pattern contains a NUL character")
    try:
        _compiled(pattern)
    except re2.error as exc:
        raise InvalidPromptPattern(index, "pattern", f"invalid pattern: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str):  # -> re2._Regexp (no public type)
    """Compile once per process; RE2 objects are safe to share between threads."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a bad pattern is the caller's ValueError, not a log line
    options.max_mem = _PATTERN_MAX_MEM
    return re2.compile(pattern, options=options)


# ------------------------------------------------------------------ evaluation


def evaluate_prompt(text: str, policy: PromptPolicy) -> PolicyDecision:
    """Decide whether a prompt may be sent to its agent without an approver.

    Raises :class:`PromptRejected` for text that is not a prompt (see
    :func:`validate_prompt`). A pattern that no longer compiles (configured
    before a syntax change, or written around :func:`compile_patterns`) does not
    let the prompt through: it needs approval with ``prompt_pattern_invalid``.
    """
    validate_prompt(text, max_length=policy.max_length)
    findings = [Finding("allow", "medium", AGENT_PROMPT, "a prompt for a coding agent")]
    if policy.require_approval:
        message = "the project requires approval for every agent run"
        findings.append(
            Finding("requires_approval", "medium", AGENT_RUNS_REQUIRE_APPROVAL, message)
        )
    findings += _pattern_findings(text, policy.patterns)
    return decide(findings, argv=(), resolved_cwd="", env_profile="")


def _pattern_findings(text: str, patterns: Iterable[PromptPattern]) -> list[Finding]:
    patterns = tuple(patterns)
    if not patterns:
        return []
    # Matched as typed and as normalized, so look-alike characters and invisible
    # separators do not slip a sensitive word past a pattern.
    normalized = unicodedata.normalize("NFKC", _without_format_characters(text))
    variants = (text,) if normalized == text else (text, normalized)
    findings: list[Finding] = []
    for pattern in patterns:
        try:
            regex = _compiled(pattern.pattern)
        except re2.error:
            message = f"the project pattern for {pattern.reason_code!r} cannot be evaluated"
            findings.append(Finding("requires_approval", "high", PROMPT_PATTERN_INVALID, message))
            continue
        if any(regex.search(variant) for variant in variants):
            message = f"the prompt matches the project's pattern {pattern.reason_code!r}"
            findings.append(Finding("requires_approval", "high", pattern.reason_code, message))
    return findings
