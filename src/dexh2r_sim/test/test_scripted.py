"""The scripted privileged expert: it takes every Easy object, and its failure modes fail as named."""

from __future__ import annotations

import pytest

from dexh2r_sim.cell import CellConfig, EpisodeOutcome, HandoverCell
from dexh2r_sim.scenario import Scenario, load_scenarios
from dexh2r_sim.scripted import Mode, ScriptedHandover

EASY: list[Scenario] = load_scenarios("config/scenarios/easy.yaml")
CONTROL_PERIOD_S = 0.01  # the expert is called at 100 Hz of sim time, like the CLI does


@pytest.fixture(scope="module")
def cell() -> HandoverCell:
    # One cell for the module: load_scenario rebuilds the model only when the object changes.
    return HandoverCell(CellConfig(cameras=False))


def _episode(cell: HandoverCell, scenario: Scenario, mode: Mode) -> EpisodeOutcome:
    cell.load_scenario(scenario)
    controller = ScriptedHandover(cell, mode)
    while cell.outcome is None:
        controller.update()
        cell.step_until(cell.time + CONTROL_PERIOD_S)
    return cell.outcome


@pytest.mark.parametrize("scenario", EASY, ids=[s.name for s in EASY])
def test_grasp_takes_the_object(cell: HandoverCell, scenario: Scenario) -> None:
    outcome = _episode(cell, scenario, "grasp")
    assert outcome.outcome == "success", outcome
    assert outcome.released_at_s is not None
    assert outcome.time_to_handover_s is not None
    # Released after the reach ended, well before the giver's own give-up time.
    assert 0.0 < outcome.time_to_handover_s < scenario.release.timeout_s - scenario.motion.reach_s


def test_ram_hits_the_giver(cell: HandoverCell) -> None:
    outcome = _episode(cell, EASY[0], "ram")
    assert outcome.outcome == "hit-human", outcome
    assert outcome.released_at_s is None


def test_drop_drops_the_object_after_the_release(cell: HandoverCell) -> None:
    outcome = _episode(cell, EASY[0], "drop")
    assert outcome.outcome == "drop", outcome
    assert outcome.released_at_s is not None
    assert outcome.time_to_handover_s is not None
