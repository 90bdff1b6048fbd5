"""Per-step trace of a recorded sim handover (`dexh2r record --trace BAG`).

The in-process closed loop writes a trace row per policy step into each episode record; an
episode over DDS (`dexh2r eval closed-loop --ros --record`, `./run demo`) leaves an MCAP bag
instead. This turns that bag into rows of the same kind, so the deployed graph can be compared
with the in-process loop frame by frame (docs/closed_loop.md): every `every_s` of sim time,

    t                     sim time (s)
    phase, goal           the policy's newest `/policy/state` (placed in sim time by `/sim/state`)
    object_error_m / _deg the tracked pose (`/perception/object/pose`) against the true pose at
                          the tracked pose's own stamp (raw: a box tracked a quarter turn about
                          its symmetry axis reads 90 deg, which grasps do not mind)
    object_age_s          t minus that stamp
    palm_to_object_m      the true palm (`/sim/robot/palm`) to the true object
    palm_to_target_m / _deg  the palm to the newest wrist target (`/policy/hand_target/wrist`) by
                          stamp: the one due by t (a target is stamped for the next policy frame)
    giver, giver_support  the giver's state and the share of the object's weight it carries
                          (`/sim/state`; null once released)
    giver_force           its whole hold on the object in weights, world frame (`/sim/state`);
                          the table's `tug` column is its horizontal size: how hard the robot and
                          the giver pull at the object against each other
    contact_n             the largest robot-giver contact force since the last row
                          (`/sim/contacts`; 0: none)

Messages without a header stamp (`/policy/state`) are placed in sim time by their log time,
interpolated between the log times of `/sim/state` messages (which carry the sim time).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from dexh2r_core.msgs import pose_matrix
from dexh2r_core.transforms import rotation_angle
from dexh2r_teleop.recorder import BagError, bag_info, deserialize, iter_messages

REQUIRED = ("/sim/object/pose", "/sim/robot/palm", "/sim/state")
OPTIONAL = ("/perception/object/pose", "/policy/hand_target/wrist", "/policy/state", "/sim/contacts")


def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class _Series:
    """Time-sorted (t, value) pairs; `at(t)` is the newest value at or before t (None: none yet)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.v: list[Any] = []

    def add(self, t: float, v: Any) -> None:
        self.t.append(t)
        self.v.append(v)

    def sort(self) -> None:
        order = np.argsort(self.t, kind="stable")
        self.t = [self.t[i] for i in order]
        self.v = [self.v[i] for i in order]

    def at(self, t: float) -> tuple[float, Any] | None:
        i = int(np.searchsorted(self.t, t + 1e-9)) - 1
        return None if i < 0 else (self.t[i], self.v[i])

    def nearest(self, t: float) -> Any:
        i = int(np.clip(np.searchsorted(self.t, t), 1, len(self.t) - 1))
        return self.v[i - 1] if abs(self.t[i - 1] - t) <= abs(self.t[i] - t) else self.v[i]


def episode_trace(bag: str | os.PathLike[str], every_s: float = 0.1) -> list[dict[str, Any]]:
    """Trace rows (see the module doc) of the episode recorded in `bag`, one every `every_s`.

    Raises BagError naming the bag when it lacks a required topic (`REQUIRED`: record it with
    config/record/demo.yaml) or is unreadable."""
    if not every_s > 0:
        raise ValueError(f"every_s must be > 0, got {every_s}")
    info = bag_info(bag)
    missing = [t for t in REQUIRED if not info.counts.get(t)]
    if missing:
        raise BagError(
            f"bag {info.path}: no messages on {missing}, which a trace needs; record the episode "
            "with config/record/demo.yaml (the demo's topics)"
        )
    truth, track, palm, target, sim, contacts = (_Series() for _ in range(6))
    policy_log: list[tuple[int, dict]] = []
    sim_log: list[tuple[int, float]] = []
    for raw in iter_messages(info, [*REQUIRED, *OPTIONAL]):
        msg = deserialize(raw.data, raw.type)
        if raw.topic == "/sim/object/pose":
            truth.add(_stamp(msg), pose_matrix(msg.pose))
        elif raw.topic == "/perception/object/pose":
            track.add(_stamp(msg), pose_matrix(msg.pose))
        elif raw.topic == "/sim/robot/palm":
            palm.add(_stamp(msg), pose_matrix(msg.pose))
        elif raw.topic == "/policy/hand_target/wrist":
            target.add(_stamp(msg), pose_matrix(msg.pose))
        elif raw.topic == "/sim/state":
            state = json.loads(msg.data)
            sim.add(float(state["time"]), state)
            sim_log.append((raw.log_time_ns, float(state["time"])))
        elif raw.topic == "/policy/state":
            policy_log.append((raw.log_time_ns, json.loads(msg.data)))
        elif raw.topic == "/sim/contacts":
            c = json.loads(msg.data)
            contacts.add(float(c["time"]), max((x["normal_force_n"] for x in c["contacts"]), default=0.0))
    for s in (truth, track, palm, target, sim, contacts):
        s.sort()
    policy = _Series()
    if policy_log and len(sim_log) >= 2:
        log_ns = np.array([a for a, _ in sim_log], dtype=np.float64)
        sim_t = np.array([b for _, b in sim_log])
        for ns, state in policy_log:
            policy.add(float(np.interp(ns, log_ns, sim_t)), state)
        policy.sort()

    rows = []
    for t in np.arange(truth.t[0], truth.t[-1] + 1e-9, every_s):
        t = float(t)
        T_obj = truth.nearest(t)
        T_palm = palm.nearest(t)
        row: dict[str, Any] = {"t": round(t, 3)}
        p = policy.at(t) if policy.t else None
        row["phase"] = p[1].get("phase") if p else None
        row["goal"] = p[1].get("goal") if p else None
        tk = track.at(t) if track.t else None
        if tk is not None:
            T_true = truth.nearest(tk[0])
            row["object_error_m"] = float(np.linalg.norm(tk[1][:3, 3] - T_true[:3, 3]))
            row["object_error_deg"] = float(np.degrees(rotation_angle(tk[1][:3, :3], T_true[:3, :3])))
            row["object_age_s"] = max(0.0, t - tk[0])
        else:
            row["object_error_m"] = row["object_error_deg"] = row["object_age_s"] = None
        row["palm_to_object_m"] = float(np.linalg.norm(T_palm[:3, 3] - T_obj[:3, 3]))
        tg = target.at(t) if target.t else None
        if tg is not None:
            row["palm_to_target_m"] = float(np.linalg.norm(tg[1][:3, 3] - T_palm[:3, 3]))
            row["palm_to_target_deg"] = float(np.degrees(rotation_angle(tg[1][:3, :3], T_palm[:3, :3])))
        else:
            row["palm_to_target_m"] = row["palm_to_target_deg"] = None
        st = sim.at(t)
        row["giver"] = st[1].get("giver") if st else None
        row["giver_support"] = st[1].get("giver_support") if st else None
        row["giver_force"] = st[1].get("giver_force") if st else None
        # /sim/contacts comes every camera frame a contact lasts: the largest since the last row,
        # so that a touch shorter than a row's interval still shows.
        lo, hi = np.searchsorted(contacts.t, [t - every_s, t], side="right")
        row["contact_n"] = float(max(contacts.v[lo:hi], default=0.0))
        rows.append(row)
    return rows


def episode_outcome(bag: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sim's outcome record of the episode (`/sim/outcome`), None when the bag has none. The
    contact that ends an episode often falls between two camera frames, so it is in the outcome's
    `detail` and not in any trace row."""
    info = bag_info(bag)
    out = None
    if info.counts.get("/sim/outcome"):
        for raw in iter_messages(info, ["/sim/outcome"]):
            out = json.loads(deserialize(raw.data, raw.type).data)
    return out


def format_trace(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width table (what `dexh2r record --trace` prints)."""

    def num(v: Any, scale: float = 1.0, digits: int = 1) -> str:
        return "-" if v is None else f"{v * scale:.{digits}f}"

    def tug(force: Any) -> float | None:
        return None if force is None else float(np.hypot(force[0], force[1]))

    def text(v: Any) -> str:
        return "-" if v is None else str(v)

    columns = [  # (header, width, cell)
        ("t", 6, lambda r: f"{r['t']:.2f}"),
        ("phase", -8, lambda r: text(r["phase"])),
        ("goal", 5, lambda r: text(r["goal"])),
        ("err mm", 7, lambda r: num(r["object_error_m"], 1000)),
        ("err deg", 7, lambda r: num(r["object_error_deg"])),
        ("age ms", 6, lambda r: num(r["object_age_s"], 1000, 0)),
        ("palm-obj", 8, lambda r: num(r["palm_to_object_m"], 1, 3)),
        ("palm-tgt", 8, lambda r: num(r["palm_to_target_m"], 1, 3)),
        ("tgt deg", 7, lambda r: num(r["palm_to_target_deg"])),
        ("giver", -11, lambda r: text(r["giver"])),
        ("support", 7, lambda r: num(r["giver_support"], 1, 2)),
        ("tug", 6, lambda r: num(tug(r.get("giver_force")))),
        ("contact N", 9, lambda r: num(r["contact_n"])),
    ]

    def line(cells: list[str]) -> str:
        return " ".join(
            c.ljust(-w) if w < 0 else c.rjust(w) for c, (_, w, _) in zip(cells, columns, strict=True)
        )

    out = [line([h for h, _, _ in columns])]
    out += [line([cell(r) for _, _, cell in columns]) for r in rows]
    return "\n".join(out)
