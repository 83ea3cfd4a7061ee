"""Every parser, fed generated and mutated inputs, returns or raises an EmbedstackError, and never hangs.

A few hundred cases per parser here (derandomized, so the default run is repeatable);
``python benchmarks/fuzz.py`` runs 10,000 per parser with a fresh seed and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_targets import TARGETS, Workspace, case_strategy, mutate, run_case  # noqa: E402

CASES = 200


@pytest.mark.parametrize("name", list(TARGETS))
def test_parser_raises_only_typed_errors(name: str) -> None:
    target = TARGETS[name]
    if not target.available():
        pytest.skip(f"{name} needs {target.needs}")
    ws = Workspace(target)
    seen: dict[str, int] = {}

    @settings(max_examples=CASES, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case_strategy(target))
    def check(case):
        outcome, detail = run_case(ws, case, limit_s=10.0)
        seen[outcome] = seen.get(outcome, 0) + 1
        assert outcome not in ("other", "hang"), detail

    try:
        check()
    finally:
        ws.close()
    assert seen.get("typed", 0) > 0  # the inputs do reach the error paths


def test_the_seed_files_parse() -> None:
    """Each fuzz target starts from a valid file: the untouched seed parses without error."""
    for name, target in TARGETS.items():
        if not target.available():
            continue
        ws = Workspace(target)
        try:
            assert target.parse(ws.root) is not None, name
        finally:
            ws.close()


def test_mutate_edits() -> None:
    assert mutate(b"abc", [("flip", 0, 0)]) == b"`bc"
    assert mutate(b"abc", [("insert", 1, b"XY")]) == b"aXYbc"
    assert mutate(b"abcdef", [("delete", 2, 2)]) == b"abef"
    assert mutate(b"abcdef", [("truncate", 4, 0)]) == b"abcd"
    assert mutate(b"abcdef", [("dup", 1, 2)]) == b"abcbcdef"
    assert mutate(b"abc", [("set", 5, 0x41)]) == b"aAc"  # positions wrap around the length (5 % 4 = 1)
    assert mutate(b"", [("flip", 3, 1), ("truncate", 9, 0)]) == b""
