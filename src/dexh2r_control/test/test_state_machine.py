"""Handover state machine: the happy path, every state's timeout and abort path, re-plan, e-stop."""

from dataclasses import replace

import pytest

from dexh2r_control.state_machine import HandoverConfig, HandoverStateMachine, Observation, State

# Observations that satisfy each state's exit condition (cumulative: later ones keep earlier facts).
OFFER = {
    "object_valid": True,
    "object_age_s": 0.0,
    "hand_keypoints_seen": True,
    "giver_hand_to_object_m": 0.05,
}
NEAR = {**OFFER, "robot_hand_to_object_m": 0.05}
REACHED = {**NEAR, "target_reached": True}
CONTACT = {**NEAR, "contact": True}
HELD = {**CONTACT, "hold_confirmed": True}


def obs(now, **kw) -> Observation:
    return Observation(now=now, **kw)


def advance(sm, now, **kw):
    return sm.update(obs(now, **kw))


def to_state(sm, state: State) -> float:
    """Drive a fresh machine to `state` along the happy path; returns the time."""
    sm.start(0.0)
    path = [
        (State.APPROACH, OFFER),
        (State.ALIGN, NEAR),
        (State.CLOSE, REACHED),
        (State.CONFIRM_HOLD, CONTACT),
        (State.RETREAT, HELD),
        (State.PLACE, {**HELD, "target_reached": True}),
        (State.IDLE, {**HELD, "target_reached": True}),
    ]
    t = 0.0
    for nxt, kw in path:
        if sm.state == state:
            return t
        t += 0.1
        advance(sm, t, **kw)
        assert sm.state == nxt, sm.history
    assert sm.state == state
    return t


def test_happy_path_and_modes():
    sm = HandoverStateMachine()
    assert sm.output().mode == "manual"
    to_state(sm, State.IDLE)
    states = [s for _, s, _ in sm.history]
    assert states == [
        State.WAIT_FOR_OFFER,
        State.APPROACH,
        State.ALIGN,
        State.CLOSE,
        State.CONFIRM_HOLD,
        State.RETREAT,
        State.PLACE,
        State.IDLE,
    ]


@pytest.mark.parametrize(
    "state, mode, grasp",
    [
        (State.WAIT_FOR_OFFER, "hold", False),
        (State.APPROACH, "track", False),
        (State.ALIGN, "track", True),
        (State.CLOSE, "track", True),
        (State.CONFIRM_HOLD, "track", True),
        (State.RETREAT, "retreat", True),
        (State.PLACE, "place", False),
    ],
)
def test_outputs_per_state(state, mode, grasp):
    sm = HandoverStateMachine()
    to_state(sm, state)
    out = sm.output()
    assert (out.state, out.mode, out.grasp_phase) == (state, mode, grasp)


ABORT_TARGET = {
    State.WAIT_FOR_OFFER: State.IDLE,
    State.APPROACH: State.RETREAT,
    State.ALIGN: State.RETREAT,
    State.CLOSE: State.RETREAT,
    State.CONFIRM_HOLD: State.RETREAT,
    State.RETREAT: State.HOLD,
    State.PLACE: State.HOLD,
}


STAY = {
    State.WAIT_FOR_OFFER: {},
    State.APPROACH: OFFER,
    State.ALIGN: NEAR,
    State.CLOSE: NEAR,
    State.CONFIRM_HOLD: CONTACT,
    State.RETREAT: HELD,
    State.PLACE: HELD,
}


@pytest.mark.parametrize("state", list(ABORT_TARGET))
def test_every_state_times_out_into_its_abort_path(state):
    sm = HandoverStateMachine()
    t = to_state(sm, state)
    limit = sm.config.timeout(state)
    # Observations that keep the state where it is (nothing new happens) until the timeout.
    stay = STAY[state]
    advance(sm, t + limit - 0.01, **stay)
    assert sm.state == state
    advance(sm, t + limit + 0.01, **stay)
    assert sm.state == ABORT_TARGET[state]
    assert "timeout" in sm.reason


@pytest.mark.parametrize("state", list(ABORT_TARGET))
def test_every_state_has_an_abort_path(state):
    sm = HandoverStateMachine()
    t = to_state(sm, state)
    sm.abort(t + 0.05, "operator")
    assert sm.state == ABORT_TARGET[state]
    if sm.state == State.RETREAT:
        assert sm.output().aborting
        advance(sm, t + 0.1, target_reached=True)  # aborting retreat ends in hold, not place
        assert sm.state == State.HOLD


@pytest.mark.parametrize("state", [s for s in ABORT_TARGET if s != State.WAIT_FOR_OFFER])
def test_estop_goes_to_hold_from_every_active_state(state):
    sm = HandoverStateMachine()
    t = to_state(sm, state)
    advance(sm, t + 0.05, **HELD, estop=True)
    assert sm.state == State.HOLD and sm.output().mode == "hold"
    sm.start(t + 0.1)
    assert sm.state == State.WAIT_FOR_OFFER


def test_object_stale_holds_then_lost_aborts():
    sm = HandoverStateMachine()
    t = to_state(sm, State.APPROACH)
    out = advance(sm, t + 0.1, **{**OFFER, "object_age_s": 0.5})  # stale, not lost
    assert out.state == State.APPROACH and out.mode == "hold"
    out = advance(sm, t + 0.2, **{**OFFER, "object_age_s": 1.5})  # lost
    assert out.state == State.RETREAT and "object lost" in out.reason


def test_object_pulled_away_replans_without_abort():
    sm = HandoverStateMachine()
    t = to_state(sm, State.CLOSE)
    out = advance(sm, t + 0.1, **{**OFFER, "robot_hand_to_object_m": 0.3})
    assert out.state == State.APPROACH and "re-plan" in out.reason and not out.aborting


def test_dropped_object_during_retreat_aborts_to_hold():
    sm = HandoverStateMachine()
    t = to_state(sm, State.RETREAT)
    advance(sm, t + 0.1, **OFFER)  # no contact any more
    assert sm.state == State.HOLD and "dropped" in sm.reason


def test_stop_from_any_state_and_config_checks():
    sm = HandoverStateMachine()
    to_state(sm, State.CLOSE)
    sm.stop(1.0)
    assert sm.state == State.IDLE and sm.output().mode == "manual"
    with pytest.raises(ValueError, match="unknown state"):
        HandoverConfig(timeouts_s={"aproach": 1.0})
    with pytest.raises(ValueError, match="realign"):
        replace(HandoverConfig(), realign_distance_m=0.05)


def test_approach_near_the_offered_object_is_the_grasp_phase():
    """The object sits in the giver's fingers: the palm passes the safety filter's protective
    stop distance (10 cm from any keypoint) before it is within align_distance_m (10 cm) of the
    object. Without the grasp zone the approach deadlocks in a protective stop (closed loop)."""
    sm = HandoverStateMachine()
    t = to_state(sm, State.APPROACH)
    far = advance(sm, t + 0.1, **{**OFFER, "robot_hand_to_object_m": 0.40})
    near = advance(sm, t + 0.2, **{**OFFER, "robot_hand_to_object_m": 0.20})
    assert (far.state, far.grasp_phase) == (State.APPROACH, False)
    assert (near.state, near.grasp_phase) == (State.APPROACH, True)
    stale = advance(sm, t + 0.3, **{**OFFER, "robot_hand_to_object_m": 0.20, "object_age_s": 0.5})
    assert not stale.grasp_phase  # no fresh object: no grasp phase
    off = HandoverStateMachine(replace(HandoverConfig(), grasp_zone_m=0.0))
    t = to_state(off, State.APPROACH)
    assert not advance(off, t + 0.1, **{**OFFER, "robot_hand_to_object_m": 0.20}).grasp_phase


def test_policy_handover_tracks_holds_and_retreats_when_the_object_is_lost():
    """PolicyHandover (the closed loop's rule): track the policy; the object lost for
    object_lost_s while approaching or aligning: retreat straight up from where the retreat began
    (latched pose) until it is seen again; never once the policy closes or pulls; e-stop: hold."""
    import numpy as np

    from dexh2r_control.state_machine import HandoverConfig, PolicyHandover

    cfg = HandoverConfig()
    ph = PolicyHandover(cfg, retreat_up_m=0.15)
    out = ph.update(1.0, "approach", 0.98, 0.20, estop=False)
    assert out.mode == "track" and out.grasp_phase  # within the 0.25 m grasp zone
    assert not ph.update(1.0, "approach", 0.98, 0.40, estop=False).grasp_phase
    assert ph.update(1.0, "approach", 1.0 - cfg.object_lost_s + 0.01, 0.2, estop=False).mode == "track"
    lost = ph.update(2.5, "align", 1.0, np.inf, estop=False)
    assert lost.mode == "retreat" and not lost.grasp_phase and "object lost" in lost.reason
    palm = np.eye(4)
    palm[:3, 3] = [0.4, 0.0, 0.3]
    first = ph.retreat_pose(palm)
    moved = palm.copy()
    moved[2, 3] += 0.05  # the hand on its way up: the target stays where the retreat began + 0.15
    assert np.allclose(ph.retreat_pose(moved)[:3, 3], [0.4, 0.0, 0.45]) and np.allclose(
        first, ph.retreat_pose(moved)
    )
    for phase in ("close", "lift", "done", None):
        assert (
            ph.update(2.5, phase, 1.0, np.inf, estop=False).mode == "track"
        )  # never with the object in hand
    assert ph.update(2.6, "approach", 2.59, 0.3, estop=False).mode == "track"  # seen again
    assert ph.retreat_from is None
    assert ph.update(2.6, "approach", 2.59, 0.3, estop=True).mode == "hold"
