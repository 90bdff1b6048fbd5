"""`dexh2r eval compare`: two closed-loop run folders, paired or as samples, and bad folders."""

from __future__ import annotations

import json

import pytest

from dexh2r_policy.eval_compare import main


def _run(folder, outcomes, delay=0.089, path="in-process"):
    folder.mkdir()
    rows = [{"scenario": f"s{i % 3}", "outcome": o} for i, o in enumerate(outcomes)]
    (folder / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({"path": path, "actuation_delay": delay}))
    return folder


def test_paired_runs_name_the_changed_episodes_and_test_them(tmp_path, capsys):
    base = ["success"] * 6 + ["timeout"] * 6
    new = ["hit-human"] * 6 + ["timeout"] * 6  # six successes lost, all one way
    a, b = _run(tmp_path / "a", base), _run(tmp_path / "b", new)
    assert main([str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "6 of 12 paired episodes changed outcome" in out
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["paired"] and result["transitions"] == {"success -> hit-human": 6}
    assert result["success"] == {"test": "mcnemar_exact", "gained": 0, "lost": 6, "p": pytest.approx(2 / 64)}
    assert result["a"]["success"]["rate"] == 0.5
    lo, hi = result["a"]["success"]["ci95"]
    assert lo < 0.5 < hi


def test_runs_that_do_not_repeat_are_compared_as_samples(tmp_path):
    a = _run(tmp_path / "a", ["success"] * 10, delay="measured")
    b = _run(tmp_path / "b", ["success"] * 5 + ["drop"] * 5, delay="measured")
    assert main([str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert not result["paired"] and result["changed"] == []
    assert result["success"]["test"] == "fisher_exact" and result["success"]["p"] < 0.05


def test_bad_folders_and_mismatched_runs_say_why(tmp_path, capsys):
    a = _run(tmp_path / "a", ["success"] * 4)
    assert main([str(a), str(tmp_path / "missing")]) == 2
    assert "no episodes.jsonl" in capsys.readouterr().err
    short = _run(tmp_path / "short", ["success"] * 3)
    assert main([str(a), str(short)]) == 2
    assert "same episodes: 4 against 3" in capsys.readouterr().err
    corrupt = _run(tmp_path / "corrupt", ["success"] * 4)
    with (corrupt / "episodes.jsonl").open("a") as f:
        f.write('{"scenario": "s0", "outc')
    assert main([str(a), str(corrupt)]) == 2
    assert "episodes.jsonl:5: not JSON" in capsys.readouterr().err
