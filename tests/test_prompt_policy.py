"""The prompt policy: verdicts for instructions to coding agents, never shell rules."""

from __future__ import annotations

import pytest

from execution.policy import REASON_CODES as COMMAND_REASON_CODES
from execution.policy import PolicyDecision
from execution.prompt_policy import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    PROMPT_REASON_CODES,
    PROMPT_REJECTION_CODES,
    InvalidPromptPattern,
    PromptPattern,
    PromptPolicy,
    PromptRejected,
    compile_patterns,
    evaluate_prompt,
    validate_prompt,
)

SENSITIVE = compile_patterns(
    [
        {"pattern": r"\bprod(uction)?\b", "reasonCode": "production"},
        {"pattern": r"secret|api[ _-]?key", "reasonCode": "secret"},
        {"pattern": r"force[ -]push|push\s+--force", "reasonCode": "force_push"},
        {"pattern": r"password", "reasonCode": "secret"},
    ]
)

# --------------------------------------------------------------------- default


def test_a_plain_prompt_is_allowed_with_medium_risk():
    decision = evaluate_prompt("Add a README section on setup", PromptPolicy())

    assert isinstance(decision, PolicyDecision)
    assert decision.verdict == "allow"
    assert decision.risk == "medium"
    assert decision.reason_codes == ("agent_prompt",)
    assert (decision.argv, decision.resolved_cwd, decision.env_profile) == ((), "", "")


@pytest.mark.parametrize(
    "prompt",
    [
        "Add a README section on setup; then update the changelog",
        "Update the changelog",
        "Run `make test && make lint` and fix what fails",
        "rm -rf / is what the old script did; remove that line",
        "python3 -c 'print(1)' should become a proper script",
        "Rename $(HOME) handling | cleanup > notes",
    ],
)
def test_prompts_are_never_judged_by_the_shell_rules(prompt):
    decision = evaluate_prompt(prompt, PromptPolicy())

    assert decision.verdict == "allow"
    assert decision.reason_codes == ("agent_prompt",)
    assert not set(decision.reason_codes) & set(COMMAND_REASON_CODES)


# ------------------------------------------------------------ project settings


def test_require_approval_makes_every_prompt_wait():
    decision = evaluate_prompt("Add a README section", PromptPolicy(require_approval=True))

    assert decision.verdict == "requires_approval"
    assert decision.risk == "medium"
    assert decision.reason_codes == ("agent_runs_require_approval",)


def test_a_matching_pattern_requires_approval_with_its_reason_code():
    decision = evaluate_prompt("Deploy the fix to Production", PromptPolicy(patterns=SENSITIVE))

    assert decision.verdict == "requires_approval"
    assert decision.risk == "high"
    assert decision.reason_codes == ("production",)


def test_every_matching_pattern_is_listed_once():
    prompt = "Rotate the API key and the password on prod, then force-push"

    decision = evaluate_prompt(prompt, PromptPolicy(require_approval=True, patterns=SENSITIVE))

    assert decision.reason_codes == (
        "agent_runs_require_approval",
        "production",
        "secret",
        "force_push",
    )
    assert len(decision.messages) == 4


def test_a_prompt_matching_no_pattern_stays_allowed():
    decision = evaluate_prompt("Improve the docs of the parser", PromptPolicy(patterns=SENSITIVE))

    assert decision.verdict == "allow"
    assert decision.reason_codes == ("agent_prompt",)


def test_patterns_are_case_insensitive():
    patterns = (PromptPattern(pattern="Production", reason_code="production"),)

    assert evaluate_prompt("PRODUCTION", PromptPolicy(patterns=patterns)).verdict != "allow"


@pytest.mark.parametrize(
    "prompt",
    [
        "deploy to pro\u200bduction",  # zero-width space
        "deploy to \uff50\uff52\uff4f\uff44",  # full-width "prod"
        "\ufeffsecret",  # byte order mark
    ],
)
def test_invisible_or_look_alike_characters_do_not_hide_a_match(prompt):
    assert evaluate_prompt(prompt, PromptPolicy(patterns=SENSITIVE)).verdict == "requires_approval"


def test_a_stored_pattern_that_does_not_compile_makes_the_prompt_wait():
    broken = (PromptPattern(pattern="(unclosed", reason_code="production"),)

    decision = evaluate_prompt("anything", PromptPolicy(patterns=broken))

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("prompt_pattern_invalid",)


def test_a_pattern_that_backtracks_exponentially_elsewhere_matches_in_linear_time():
    # With a backtracking engine this takes 2**40 steps; RE2 answers at once.
    patterns = compile_patterns([{"pattern": r"(a+)+$", "reasonCode": "slow"}])
    prompt = "a" * 40 + "!"

    decision = evaluate_prompt(prompt, PromptPolicy(patterns=patterns))

    assert decision.verdict == "allow"


def test_the_longest_prompt_against_the_most_patterns_is_evaluated():
    patterns = compile_patterns(
        [{"pattern": rf"(x+x+)+y{i}", "reasonCode": f"p{i}"} for i in range(MAX_PATTERNS)]
    )

    decision = evaluate_prompt("x" * 20_000, PromptPolicy(patterns=patterns))

    assert decision.verdict == "allow"


# ------------------------------------------------------------------ rejection


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t\n", "\u200b\u200b", "\u3000"])
def test_an_empty_or_blank_prompt_is_rejected(prompt):
    with pytest.raises(PromptRejected) as raised:
        evaluate_prompt(prompt, PromptPolicy())

    assert raised.value.code == "prompt_empty"
    assert isinstance(raised.value, ValueError)


def test_a_prompt_with_a_nul_character_is_rejected():
    with pytest.raises(PromptRejected) as raised:
        evaluate_prompt("Update the changelog\0", PromptPolicy())

    assert raised.value.code == "prompt_nul"


def test_a_prompt_longer_than_the_limit_is_rejected():
    validate_prompt("x" * 20_000)

    with pytest.raises(PromptRejected) as raised:
        evaluate_prompt("x" * 20_001, PromptPolicy())

    assert raised.value.code == "prompt_too_long"
    assert "20000" in raised.value.message


def test_the_project_limit_applies():
    with pytest.raises(PromptRejected) as raised:
        evaluate_prompt("Update the changelog", PromptPolicy(max_length=10))

    assert raised.value.code == "prompt_too_long"


def test_the_limit_counts_characters_not_bytes():
    validate_prompt("é" * 20_000)


def test_rejection_codes_are_documented():
    for prompt, policy in [
        ("", PromptPolicy()),
        ("\0", PromptPolicy()),
        ("xx", PromptPolicy(max_length=1)),
    ]:
        with pytest.raises(PromptRejected) as raised:
            evaluate_prompt(prompt, policy)
        assert raised.value.code in PROMPT_REJECTION_CODES


# -------------------------------------------------------------- configuration


def test_compile_patterns_returns_prompt_patterns():
    patterns = compile_patterns(
        [{"pattern": "deploy", "reasonCode": "deploy"}, {"pattern": "drop", "reason_code": "db"}]
    )

    assert patterns == (
        PromptPattern(pattern="deploy", reason_code="deploy"),
        PromptPattern(pattern="drop", reason_code="db"),
    )


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ({"pattern": "(unclosed", "reasonCode": "x"}, "pattern", "invalid pattern"),
        ({"pattern": r"(a)\1", "reasonCode": "x"}, "pattern", "invalid pattern"),
        ({"pattern": r"(?<=a)b", "reasonCode": "x"}, "pattern", "invalid pattern"),
        ({"pattern": "", "reasonCode": "x"}, "pattern", "non-empty"),
        ({"pattern": "   ", "reasonCode": "x"}, "pattern", "non-empty"),
        ({"pattern": 3, "reasonCode": "x"}, "pattern", "non-empty"),
        ({"pattern": "a" * (MAX_PATTERN_LENGTH + 1), "reasonCode": "x"}, "pattern", "longer"),
        ({"pattern": "a\0", "reasonCode": "x"}, "pattern", "NUL"),
        ({"pattern": "x"}, "reasonCode", "snake_case"),
        ({"pattern": "x", "reasonCode": "Force Push"}, "reasonCode", "snake_case"),
        ({"pattern": "x", "reasonCode": "agent_prompt"}, "reasonCode", "built-in"),
        ({"pattern": "x", "reasonCode": "network_command"}, "reasonCode", "built-in"),
        ({"pattern": "x", "reasonCode": "x", "flags": "i"}, "flags", "unknown field"),
    ],
)
def test_a_bad_pattern_is_refused_with_its_position_and_field(item, field, words):
    with pytest.raises(InvalidPromptPattern) as raised:
        compile_patterns([{"pattern": "fine", "reasonCode": "fine"}, item])

    assert isinstance(raised.value, ValueError)
    assert raised.value.index == 1
    assert raised.value.field == field
    assert str(raised.value).startswith("pattern 2: ")
    assert words in str(raised.value)


def test_the_number_of_patterns_is_capped():
    items = [{"pattern": f"w{i}", "reasonCode": "w"} for i in range(MAX_PATTERNS + 1)]

    with pytest.raises(InvalidPromptPattern, match=f"at most {MAX_PATTERNS}"):
        compile_patterns(items)


def test_reason_codes_are_documented_and_distinct_from_the_command_policy():
    assert {"agent_prompt", "agent_runs_require_approval"} <= set(PROMPT_REASON_CODES)
    assert not set(PROMPT_REASON_CODES) & set(COMMAND_REASON_CODES)
    assert set(PROMPT_REJECTION_CODES) == {"prompt_empty", "prompt_too_long", "prompt_nul"}
