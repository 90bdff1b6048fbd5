"""Handover state machine (ROS-free), driven only by explicit observations.

```
            start()                    offer seen                    hand near object
  idle ───────────────► wait_for_offer ──────────► approach ─────────────────────► align
   ▲                          │                       ▲  ▲                           │
   │ stop() (any state)       │ timeout/abort         │  └── object moved away ──────┤ grasp target reached
   │                          ▼                       │      (re-plan)               ▼
   │                        idle                      └──── object moved away ──── close
   │                                                                                 │ contact
   │                                                                                 ▼
   │ target reached        target reached            hold confirmed
  idle ◄────────── place ◄──────────────── retreat ◄─────────────────────── confirm_hold

  abort (timeout, object lost, e-stop, abort()):
    wait_for_offer                    -> idle   (nothing to undo)
    approach, align, close,
    confirm_hold                      -> retreat (aborting: retreat then hold, no place)
    retreat, place                    -> hold
  e-stop from any active state        -> hold    (the safety filter has already stopped the robot)
  hold: stays until stop() (-> idle) or start() (-> wait_for_offer)
```

Details:
- *offer seen*: a fresh, valid object pose, hand keypoints seen, and the giver's hand within
  `offer_distance_m` of the object (the object is in the hand being offered).
- *hand near object*: the robot hand (palm) within `align_distance_m` of the object.
- *object moved away*: in align or close, the robot hand is more than `realign_distance_m` from the
  object (the giver pulled it back): back to approach, the policy re-plans; no abort, no contact.
- *object lost*: the object pose is older than `object_max_age_s` -> the controller holds
  (`mode == "hold"`); older than `object_lost_s` -> abort (robot retreats).
- *contact* lost during retreat or place (the object slipped) -> abort -> hold.
- Every state has a timeout (`timeouts_s`); a timeout is an abort with the reason "timeout".

The output tells the controller what to do: `mode` ("hold": keep still; "track": follow the
policy's hand targets; "retreat": move the hand back/up; "place": go to the place configuration;
"manual": idle, targets pass through, e.g. teleop) and `grasp_phase` (the safety filter allows
the hand near the giver's hand instead of a protective stop: align, close, confirm_hold, retreat,
and approach once the palm is within `grasp_zone_m` of a fresh object: the object is in the
giver's fingers, so without it the protective stop would freeze every approach short of align).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class State(enum.StrEnum):
    IDLE = "idle"
    WAIT_FOR_OFFER = "wait_for_offer"
    APPROACH = "approach"
    ALIGN = "align"
    CLOSE = "close"
    CONFIRM_HOLD = "confirm_hold"
    RETREAT = "retreat"
    PLACE = "place"
    HOLD = "hold"


GRASP_PHASE = {State.ALIGN, State.CLOSE, State.CONFIRM_HOLD, State.RETREAT}
_ABORT_TO = {
    State.WAIT_FOR_OFFER: State.IDLE,
    State.APPROACH: State.RETREAT,
    State.ALIGN: State.RETREAT,
    State.CLOSE: State.RETREAT,
    State.CONFIRM_HOLD: State.RETREAT,
    State.RETREAT: State.HOLD,
    State.PLACE: State.HOLD,
}
_DEFAULT_TIMEOUTS = {
    "wait_for_offer": 30.0,
    "approach": 5.0,
    "align": 3.0,
    "close": 2.0,
    "confirm_hold": 2.0,
    "retreat": 3.0,
    "place": 5.0,
}


@dataclass(frozen=True)
class HandoverConfig:
    timeouts_s: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_TIMEOUTS))
    offer_distance_m: float = 0.15  # giver's hand keypoints to object: the object is being offered
    align_distance_m: float = 0.10  # robot palm to object: approach -> align
    realign_distance_m: float = 0.18  # robot palm to object in align/close: object pulled away
    # Approach within this of the object is the grasp phase for the safety filter too: the object
    # sits in the giver's fingers, so the palm passes the protective stop distance (0.10 m from
    # any keypoint) before it gets within align_distance_m of the object (0: off).
    grasp_zone_m: float = 0.25
    object_max_age_s: float = 0.3  # older: hold still
    object_lost_s: float = 1.0  # older: abort

    def __post_init__(self) -> None:
        unknown = set(self.timeouts_s) - set(_DEFAULT_TIMEOUTS)
        if unknown:
            raise ValueError(f"timeouts_s: unknown state(s) {sorted(unknown)}; use {list(_DEFAULT_TIMEOUTS)}")
        if any(v <= 0 for v in self.timeouts_s.values()):
            raise ValueError("timeouts_s: every timeout must be > 0")
        if self.realign_distance_m <= self.align_distance_m:
            raise ValueError("realign_distance_m must exceed align_distance_m (hysteresis)")

    def timeout(self, state: State) -> float:
        return self.timeouts_s.get(state.value, _DEFAULT_TIMEOUTS.get(state.value, np.inf))


# The policy's own phases (DynamicGrasp) in which the hand may be near the giver's.
POLICY_GRASP_PHASES = ("align", "close", "lift", "done")


def policy_grasp_phase(phase: str, palm_to_object_m: float, grasp_zone_m: float) -> bool:
    """The safety filter's grasp phase when the policy drives the handover (the closed loop,
    controller_node `handover:=policy`): the policy aligns / closes / lifts, or it approaches the
    offered object and the palm is within `grasp_zone_m` of it (docs/closed_loop.md)."""
    return phase in POLICY_GRASP_PHASES or (phase == "approach" and palm_to_object_m <= grasp_zone_m)


class PolicyHandover:
    """The handover when the policy's own phases drive it (the closed loop, in-process and
    `controller_node handover:=policy`), instead of `HandoverStateMachine`:

    - track the policy's targets; the safety filter's grasp phase by `policy_grasp_phase`;
    - e-stop: hold;
    - the object lost (last seen more than `object_lost_s` ago) while the policy approaches or
      aligns: retreat (the hand `retreat_up_m` straight up from where the retreat began, away
      from the giver's hand, then hold there) until the object is seen again; before that the
      policy has gone silent (its `stale_after_s`) and the controller's watchdog holds. Not
      once the policy closes or pulls: the object is in the hand (and the hand hides it)."""

    RETREAT_PHASES = ("approach", "align")

    def __init__(self, config: HandoverConfig | None = None, retreat_up_m: float = 0.15) -> None:
        self.config = config or HandoverConfig()
        self.retreat_up_m = retreat_up_m
        self.retreat_from: np.ndarray | None = None  # palm pose when the retreat began

    def update(
        self,
        now: float,
        phase: str | None,
        object_seen_at: float | None,
        palm_to_object_m: float,
        estop: bool,
    ) -> Output:
        phase = phase or "waiting"
        cfg = self.config
        age = float("inf") if object_seen_at is None else now - object_seen_at
        fresh = age <= cfg.object_max_age_s
        grasp = policy_grasp_phase(phase, palm_to_object_m if fresh else float("inf"), cfg.grasp_zone_m)
        if estop:
            return Output(State.HOLD, "hold", grasp, f"policy {phase}: e-stop")
        if phase in self.RETREAT_PHASES and object_seen_at is not None and age > cfg.object_lost_s:
            return Output(State.RETREAT, "retreat", False, f"policy {phase}: object lost for {age:.1f} s")
        self.retreat_from = None
        return Output(State.APPROACH, "track", grasp, f"policy {phase}")

    def retreat_pose(self, palm_pose: np.ndarray) -> np.ndarray:
        """The retreat target: `retreat_up_m` above the palm pose at the retreat's first call."""
        if self.retreat_from is None:
            self.retreat_from = np.array(palm_pose, dtype=float)
        T = self.retreat_from.copy()
        T[2, 3] += self.retreat_up_m
        return T


@dataclass
class Observation:
    """Everything the state machine reacts to, at time `now` (seconds, any monotonic clock)."""

    now: float
    object_valid: bool = False
    object_age_s: float = float("inf")
    hand_keypoints_seen: bool = False
    giver_hand_to_object_m: float = float("inf")  # giver's hand keypoints to the object
    robot_hand_to_object_m: float = float("inf")  # robot palm to the object
    target_reached: bool = False  # the controller reached its current goal (grasp/retreat/place)
    contact: bool = False  # fingers in contact with the object
    hold_confirmed: bool = False  # the robot carries the object (the giver let go)
    estop: bool = False


@dataclass
class Output:
    state: State
    mode: str  # hold | track | retreat | place | manual
    grasp_phase: bool
    reason: str = ""  # why the last transition happened
    aborting: bool = False


_MODES = {
    State.IDLE: "manual",
    State.WAIT_FOR_OFFER: "hold",
    State.APPROACH: "track",
    State.ALIGN: "track",
    State.CLOSE: "track",
    State.CONFIRM_HOLD: "track",
    State.RETREAT: "retreat",
    State.PLACE: "place",
    State.HOLD: "hold",
}


class HandoverStateMachine:
    def __init__(self, config: HandoverConfig | None = None) -> None:
        self.config = config or HandoverConfig()
        self.state = State.IDLE
        self.entered_at = 0.0
        self.aborting = False
        self.reason = ""
        self.history: list[tuple[float, State, str]] = []
        self._object_stale = False
        self._hand_to_object_m = float("inf")

    # ---- commands ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin a handover (from idle or hold)."""
        if self.state in (State.IDLE, State.HOLD):
            self.aborting = False
            self._go(State.WAIT_FOR_OFFER, now, "start")

    def stop(self, now: float) -> None:
        """Back to idle from any state (the controller holds where it is)."""
        self.aborting = False
        self._go(State.IDLE, now, "stop")

    def abort(self, now: float, reason: str = "abort") -> None:
        target = _ABORT_TO.get(self.state)
        if target is None:
            return
        self.aborting = target == State.RETREAT or self.aborting
        self._go(target, now, f"abort: {reason}")

    # ---- one update ----------------------------------------------------------------------------
    def update(self, obs: Observation) -> Output:
        s, cfg, now = self.state, self.config, obs.now
        fresh = obs.object_valid and obs.object_age_s <= cfg.object_max_age_s
        lost = not obs.object_valid or obs.object_age_s > cfg.object_lost_s
        self._object_stale = not fresh
        self._hand_to_object_m = obs.robot_hand_to_object_m if fresh else float("inf")
        if s in (State.IDLE, State.HOLD):
            return self.output()
        if obs.estop:
            self.aborting = False
            self._go(State.HOLD, now, "e-stop")
            return self.output()
        if now - self.entered_at > cfg.timeout(s):
            self.abort(now, f"timeout in {s.value} after {cfg.timeout(s):g} s")
            return self.output()
        if s == State.WAIT_FOR_OFFER:
            if fresh and obs.hand_keypoints_seen and obs.giver_hand_to_object_m <= cfg.offer_distance_m:
                self._go(State.APPROACH, now, "offer seen")
        elif s in (State.APPROACH, State.ALIGN, State.CLOSE):
            if lost:
                self.abort(now, "object lost")
            elif s == State.APPROACH:
                if fresh and obs.robot_hand_to_object_m <= cfg.align_distance_m:
                    self._go(State.ALIGN, now, "hand near object")
            elif fresh and obs.robot_hand_to_object_m > cfg.realign_distance_m:
                self._go(State.APPROACH, now, "object moved away: re-plan")
            elif s == State.ALIGN and fresh and obs.target_reached:
                self._go(State.CLOSE, now, "grasp target reached")
            elif s == State.CLOSE and obs.contact:
                self._go(State.CONFIRM_HOLD, now, "contact")
        elif s == State.CONFIRM_HOLD:
            if obs.hold_confirmed:
                self._go(State.RETREAT, now, "hold confirmed")
            elif not obs.contact:
                self.abort(now, "contact lost")
        elif s in (State.RETREAT, State.PLACE):
            if not self.aborting and not obs.contact:
                self.abort(now, "contact lost (object dropped)")
            elif obs.target_reached:
                if s == State.PLACE:
                    self._go(State.IDLE, now, "placed")
                elif self.aborting:
                    self.aborting = False
                    self._go(State.HOLD, now, "retreated after abort")
                else:
                    self._go(State.PLACE, now, "retreated")
        return self.output()

    def output(self) -> Output:
        mode = _MODES[self.state]
        if self.state in (State.APPROACH, State.ALIGN, State.CLOSE) and self._object_stale:
            mode = "hold"  # the object pose is stale but not lost yet: wait for it
        grasp = self.state in GRASP_PHASE or (
            self.state == State.APPROACH and self._hand_to_object_m <= self.config.grasp_zone_m
        )
        return Output(self.state, mode, grasp, self.reason, self.aborting)

    def _go(self, state: State, now: float, reason: str) -> None:
        self.state = state
        self.entered_at = now
        self.reason = reason
        self.history.append((now, state, reason))
