"""`dexh2r eval compare RUN_A RUN_B`: did a change move a closed-loop result, or is it noise?

    dexh2r eval closed-loop --scenarios config/scenarios/hard.yaml --episodes 12 \\
        --actuation-delay 0.089 --out runs/base --json runs/base.json
    dexh2r eval closed-loop ... --set close_frames=8 --out runs/new --json runs/new.json
    dexh2r eval compare runs/base runs/new [--json OUT]

Reads two closed-loop run folders (`episodes.jsonl`, `summary.json`) whose episodes are the same
setups in the same order (the same scenario file and `--episodes`), and prints:
- each rate of both runs with its 95 % Wilson interval;
- the episodes whose outcome changed, and the outcome transition counts;
- a test of the success (and hit-human) difference. In-process runs at a fixed
  `--actuation-delay` are repeatable episode for episode, so the runs are paired and the test is
  McNemar's exact test on the episodes that changed. A measured delay or `--ros` is not
  repeatable; the two runs are then two samples and the test is Fisher's exact test on the counts.

A p-value above 0.05 means the runs do not show a difference, not that there is none: 12
episodes can only show large effects (McNemar needs at least 6 changes, all one way).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from scipy.stats import fisher_exact

from dexh2r_core.stats import mcnemar_exact
from dexh2r_policy.closed_loop import RATE_OUTCOMES, outcome_rates


class RunError(ValueError):
    """A run folder that cannot be read or two runs that cannot be compared (the message says why)."""


def load_run(folder: str | Path) -> tuple[list[dict], dict]:
    """(episode rows, summary) of a closed-loop run folder; RunError names what is missing or corrupt."""
    folder = Path(folder)
    episodes = folder / "episodes.jsonl"
    if not episodes.is_file():
        raise RunError(f"{folder}: no episodes.jsonl (give the --out folder of `dexh2r eval closed-loop`)")
    rows = []
    for i, line in enumerate(episodes.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RunError(f"{episodes}:{i}: not JSON ({e.msg}); was the run cut off?") from e
        if not isinstance(row, dict) or "outcome" not in row or "scenario" not in row:
            raise RunError(f"{episodes}:{i}: an episode row needs 'scenario' and 'outcome'")
        rows.append(row)
    if not rows:
        raise RunError(f"{episodes}: no episodes")
    summary_file = folder / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return rows, summary


def repeatable(summary: dict) -> bool:
    """True for a run whose episodes repeat exactly: in-process at a fixed actuation delay."""
    return summary.get("path") == "in-process" and summary.get("actuation_delay") not in (None, "measured")


def _difference_test(a: list[dict], b: list[dict], outcome: str, paired: bool) -> dict[str, Any]:
    if paired:
        gained = sum(x["outcome"] != outcome and y["outcome"] == outcome for x, y in zip(a, b, strict=True))
        lost = sum(x["outcome"] == outcome and y["outcome"] != outcome for x, y in zip(a, b, strict=True))
        return {"test": "mcnemar_exact", "gained": gained, "lost": lost, "p": mcnemar_exact(gained, lost)}
    ka, kb = (sum(r["outcome"] == outcome for r in rows) for rows in (a, b))
    _, p = fisher_exact([[ka, len(a) - ka], [kb, len(b) - kb]])
    return {"test": "fisher_exact", "a": ka, "b": kb, "p": float(p)}


def compare(a_rows: list[dict], b_rows: list[dict], paired: bool) -> dict[str, Any]:
    """The comparison of two runs of the same episodes (see the module doc). RunError when the
    runs have different episodes (paired runs must match episode for episode)."""
    if paired:
        if len(a_rows) != len(b_rows):
            raise RunError(f"paired runs need the same episodes: {len(a_rows)} against {len(b_rows)}")
        for i, (x, y) in enumerate(zip(a_rows, b_rows, strict=True)):
            if x["scenario"] != y["scenario"]:
                raise RunError(
                    f"episode {i}: scenario {x['scenario']!r} against {y['scenario']!r}; "
                    "run both with the same --scenarios and --episodes"
                )
    changed = (
        [
            {"episode": i, "scenario": x["scenario"], "a": x["outcome"], "b": y["outcome"]}
            for i, (x, y) in enumerate(zip(a_rows, b_rows, strict=True))
            if x["outcome"] != y["outcome"]
        ]
        if paired
        else []
    )
    transitions = Counter(f"{c['a']} -> {c['b']}" for c in changed)
    return {
        "paired": paired,
        "episodes": [len(a_rows), len(b_rows)],
        "a": outcome_rates(a_rows),
        "b": outcome_rates(b_rows),
        "changed": changed,
        "transitions": dict(transitions.most_common()),
        "success": _difference_test(a_rows, b_rows, "success", paired),
        "hit_human": _difference_test(a_rows, b_rows, "hit-human", paired),
    }


def format_report(result: dict[str, Any], names: tuple[str, str]) -> str:
    a, b = names
    lines = [f"A = {a}", f"B = {b}", ""]
    lines.append(f"{'outcome':<12} {'A':>22} {'B':>22}")
    for k in RATE_OUTCOMES:
        cells = []
        for side in ("a", "b"):
            r = result[side][k]
            lo, hi = r["ci95"]
            cells.append(f"{r['rate']:.2f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"{k:<12} {cells[0]:>22} {cells[1]:>22}")
    lines.append("(rate [95 % Wilson interval])")
    lines.append("")
    if result["paired"]:
        lines.append(f"{len(result['changed'])} of {result['episodes'][0]} paired episodes changed outcome")
        for c in result["changed"]:
            lines.append(f"  {c['episode']:>4}  {c['scenario']:<28} {c['a']} -> {c['b']}")
    else:
        lines.append("not repeatable episode for episode (a measured delay or --ros): two samples, not pairs")
    for key, label in (("success", "success"), ("hit_human", "hit-human")):
        t = result[key]
        paired = t["test"] == "mcnemar_exact"
        detail = f"gained {t['gained']}, lost {t['lost']}" if paired else f"{t['a']} vs {t['b']}"
        lines.append(f"{label}: {detail}; {t['test']} p = {t['p']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r eval compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", help="the baseline run folder (`dexh2r eval closed-loop --out`)")
    parser.add_argument("run_b", help="the changed run folder")
    parser.add_argument("--json", default=None, help="write the comparison here")
    args = parser.parse_args(argv)
    try:
        a_rows, a_sum = load_run(args.run_a)
        b_rows, b_sum = load_run(args.run_b)
        result = compare(a_rows, b_rows, paired=repeatable(a_sum) and repeatable(b_sum))
    except (RunError, OSError, json.JSONDecodeError) as e:
        print(f"dexh2r eval compare: {e}", file=sys.stderr)
        return 2
    print(format_report(result, (args.run_a, args.run_b)))
    if args.json:
        report = {"run_a": args.run_a, "run_b": args.run_b, **result}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
