"""Interleaved timing: every peer once per round, the order reversed every other timed round."""

from __future__ import annotations

import pytest

from bnlab.bench.timing import interleave, medians, ratio_of_medians, report, timed


def _recording(calls: list[tuple[str, int]], name: str, seconds: float):
    def run(number: int) -> float:
        calls.append((name, number))
        return seconds

    return run


def test_rounds_alternate_and_every_peer_gets_the_same_round_numbers():
    calls: list[tuple[str, int]] = []
    runners = {"a": _recording(calls, "a", 2.0), "b": _recording(calls, "b", 1.0)}
    times = interleave(runners, rounds=3)
    assert times == {"a": [2.0] * 3, "b": [1.0] * 3}
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert ratio_of_medians(times["a"], times["b"]) == 2.0
    assert medians({"a": [3.0, 1.0, 2.0]}) == {"a": 2.0}


def test_warmup_rounds_are_not_timed_and_three_peers_reverse_too():
    calls: list[tuple[str, int]] = []
    runners = {k: _recording(calls, k, 1.0) for k in "xyz"}
    times = interleave(runners, rounds=2, warmup=2)
    assert {k: len(v) for k, v in times.items()} == {"x": 2, "y": 2, "z": 2}
    assert [c[0] for c in calls] == list("xyz" * 3 + "zyx")
    assert [c[1] for c in calls] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_no_warmup_and_bad_counts():
    assert interleave({"a": lambda n: float(n)}, rounds=2, warmup=0) == {"a": [0.0, 1.0]}
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        interleave({"a": lambda n: 1.0}, rounds=0)
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        interleave({"a": lambda n: 1.0}, rounds=1, warmup=-1)


def test_timed_measures_the_call():
    calls = []
    seconds = timed(lambda: calls.append(1))(0)
    assert calls == [1] and 0 <= seconds < 1


def test_report_prints_the_header_one_line_per_peer_and_the_verdict(capsys):
    report("mlp, 3 epochs each:", {"a epoch": [0.5, 0.25], "b epoch": [1.0]}, "a / b = 0.375")
    assert capsys.readouterr().out == (
        "mlp, 3 epochs each:\n"
        "  a epoch median 0.375 s  [0.5, 0.25]\n"
        "  b epoch median 1.000 s  [1.0]\n"
        "  a / b = 0.375\n"
    )
    report("h", {"x": [0.12345]}, "v", digits=4)
    assert capsys.readouterr().out == "h\n  x median 0.1235 s  [0.1235]\n  v\n"
