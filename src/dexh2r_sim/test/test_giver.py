"""The giver in a minimal MuJoCo scene: holding, release, withdrawal, contacts, keypoints, MediaPipe."""

from __future__ import annotations

import os
import time

import mujoco
import numpy as np
import pytest

from dexh2r_sim.giver import (
    GIVER_COLLISION_GROUP,
    GIVER_VISUAL_GROUP,
    HAND_BONES,
    KEYPOINT_NAMES,
    Giver,
    GiverState,
    ObjectShape,
    Primitive,
    _fk,
    add_giver,
    hand_keypoints_from_angles,
    object_placement,
    plan_grasp,
)
from dexh2r_sim.motion import MotionSpec
from dexh2r_sim.scenario import PoseSpec, ReleaseSpec, Scenario, load_scenarios, mirror_pose

BOX_HALF = (0.05, 0.03, 0.015)  # a 10 x 6 x 3 cm box, 0.2 kg
BOX_MASS = 0.2
OFFER = PoseSpec((0.62, 0.0, 0.35), (-120.0, 0.0, 90.0))
START = PoseSpec((1.10, 0.05, 0.20), (-100.0, 0.0, 90.0))
# The cell's two cameras (config/calibration/sim_two_cameras.yaml): eye -> target, D455 colour.
CELL_CAMERAS = {"camera_0": (0.90, 0.85, 1.00), "camera_1": (0.90, -0.85, 1.00)}
CAMERA_TARGET = (0.62, 0.0, 0.35)
# Handover region (offers x 0.55-0.7, y +-0.2, z 0.25-0.45) grown by a hand's reach around the wrist.
ROI_LO, ROI_HI = (0.49, -0.26, 0.19), (0.76, 0.26, 0.51)


def _scene(
    side: str = "right",
    *,
    probe: bool = False,
    platform: bool = False,
    cameras: tuple[int, int, float] | None = None,
    timestep: float = 0.002,
) -> tuple[mujoco.MjModel, Giver]:
    """Floor + giver + a free box welded to it (+ a probe body, a mocap platform, cameras)."""
    spec = mujoco.MjSpec()
    spec.option.timestep = timestep
    spec.worldbody.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[3, 3, 0.1],
        pos=[0, 0, -0.75],
        rgba=[0.35, 0.35, 0.38, 1],
    )
    handles = add_giver(spec, side=side)
    obj = spec.worldbody.add_body(name="object", pos=[0.6, 0.0, 0.3])
    obj.add_freejoint(name="object_free")
    obj.add_geom(
        name="object/box",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=list(BOX_HALF),
        mass=BOX_MASS,
        rgba=[0.2, 0.4, 0.9, 1],
    )
    if probe:  # a dynamic "robot link" (free body, no gravity effect over one forward pass)
        body = spec.worldbody.add_body(name="robot_probe", pos=[0.0, 0.0, 1.5])
        body.add_freejoint(name="robot_probe_free")
        body.add_geom(
            name="robot_probe/box", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.02, 0.02], mass=0.5
        )
    if platform:
        body = spec.worldbody.add_body(name="platform", mocap=True, pos=[0.0, 0.0, -0.5])
        body.add_geom(name="platform/box", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.08, 0.08, 0.01])
    if cameras is not None:
        from scipy.spatial.transform import Rotation

        from dexh2r_core.calibration import look_at

        width, height, fx = cameras
        # The cell's table and floor colours (dexh2r_sim.cell); one light from straight above
        # plus the head light: the lighting under which the giver is detected (see the docs).
        spec.worldbody.add_geom(
            name="table",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.55, 0.5, 0.025],
            pos=[0.45, 0, -0.026],
            rgba=[0.35, 0.3, 0.27, 1],
        )
        spec.geom("floor").rgba = [0.2, 0.2, 0.22, 1]
        light = spec.worldbody.add_light(
            name="top", pos=[0.6, 0.0, 2.5], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6]
        )
        light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
        spec.visual.global_.offwidth, spec.visual.global_.offheight = width, height
        for name, eye in CELL_CAMERAS.items():
            T = look_at(eye, CAMERA_TARGET)
            q = Rotation.from_matrix(T[:3, :3] @ np.diag([1.0, -1.0, -1.0])).as_quat()
            cam = spec.worldbody.add_camera(name=name, pos=list(eye), quat=[q[3], q[0], q[1], q[2]])
            cam.fovy = float(np.degrees(2 * np.arctan(height / (2 * fx))))
    model = spec.compile()
    return model, Giver(model, handles)


def _scenario(**kw) -> Scenario:
    kw.setdefault("motion", MotionSpec(type="hold", reach_s=1.0))
    kw.setdefault("release", ReleaseSpec(timeout_s=8.0))
    kw.setdefault("start_pose", START)
    kw.setdefault("offer_pose", OFFER)
    return Scenario(name="test", object_id="prim/box_small", **kw)


def _object_in_hand(giver: Giver, data: mujoco.MjData) -> np.ndarray:
    T_wo = np.eye(4)
    T_wo[:3, :3] = data.xmat[giver.object_id].reshape(3, 3)
    T_wo[:3, 3] = data.xpos[giver.object_id]
    return np.linalg.inv(giver.wrist_pose(data)) @ T_wo


def _run(model, data, giver: Giver, until: float, before_step=None) -> list[GiverState]:
    states = []
    while data.time < until - 1e-9:
        giver.step(model, data)
        if before_step is not None:
            before_step(data)
        mujoco.mj_step(model, data)
        states.append(giver.state)
    return states


def test_giver_model_names_groups_and_weld():
    model, giver = _scene()
    h = giver.handles
    assert h.weld == "giver/hold" and h.object_body == "object"
    geoms = giver.geom_ids
    assert len(geoms) > 30
    for g in geoms:
        name = model.geom(g).name
        assert name.startswith("giver/"), name
        if model.geom_contype[g] or model.geom_conaffinity[g]:
            assert model.geom_group[g] == GIVER_COLLISION_GROUP
        else:
            assert model.geom_group[g] == GIVER_VISUAL_GROUP
    assert model.body(h.mocap_body).mocapid[0] >= 0
    assert model.nexclude == len(h.bodies)  # no giver-object contacts: only the weld holds it
    assert len(h.keypoint_sites) == 21 == len(KEYPOINT_NAMES)


def test_keypoints_follow_mediapipe_order_with_plausible_bones():
    model, giver = _scene()
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(start_pose=OFFER))
    kp = giver.keypoints(model, data)
    assert kp.shape == (21, 3)
    np.testing.assert_allclose(kp[0], giver.wrist_pose(data)[:3, 3], atol=1e-9)
    lengths = {(a, b): np.linalg.norm(kp[a] - kp[b]) for a, b in HAND_BONES}
    for (a, b), length in lengths.items():
        if a == 0:  # wrist -> thumb CMC / finger MCPs (palm)
            assert 0.04 <= length <= 0.11, (KEYPOINT_NAMES[b], length)
        else:  # phalanges and the thumb metacarpal
            assert 0.02 <= length <= 0.06, (KEYPOINT_NAMES[a], KEYPOINT_NAMES[b], length)
    # The same keypoints from the planner's kinematics (no MuJoCo) in the hand frame.
    T = giver.wrist_pose(data)
    local = (kp - T[:3, 3]) @ T[:3, :3]
    np.testing.assert_allclose(local, hand_keypoints_from_angles(giver.grasp.angles), atol=1e-6)


@pytest.mark.parametrize(
    "prim",
    [Primitive("box", BOX_HALF), Primitive("cylinder", (0.033, 0.06, 0)), Primitive("sphere", (0.035, 0, 0))],
)
def test_grasp_touches_without_penetrating(prim):
    half = {"box": BOX_HALF, "cylinder": (0.033, 0.033, 0.06), "sphere": (0.035,) * 3}[prim.kind]
    shape = ObjectShape(tuple(2 * v for v in half), (0.0, 0.0, 0.0), (prim,))
    grasp = plan_grasp(shape)
    assert {"ff", "mf", "th"} <= set(grasp.contacts), grasp.contacts
    T_oh = np.linalg.inv(grasp.T_hand_object)
    fk = _fk()
    for finger in ("ff", "mf", "rf", "lf", "th"):
        links = [f"{finger}proximal", f"{finger}middle", f"{finger}distal"]
        clearance = fk.link_clearance(grasp.angles, links, shape.sdf, T_oh)
        assert clearance >= -1e-6, (finger, clearance)
        if finger in grasp.contacts:
            assert clearance <= 0.0045, (finger, clearance)
    np.testing.assert_allclose(object_placement(shape), grasp.T_hand_object)
    again = plan_grasp(shape)
    assert again.angles == grasp.angles


def test_object_stays_in_hand_while_moving():
    model, giver = _scene()
    data = mujoco.MjData(model)
    scenario = _scenario(motion=MotionSpec(type="random_walk", reach_s=1.0, speed_range=(0.05, 0.25)))
    giver.reset(data, scenario)
    T0 = giver.grasp.T_hand_object
    errors, loads = [], []

    def watch(d):
        errors.append(np.linalg.norm(_object_in_hand(giver, d)[:3, 3] - T0[:3, 3]))
        if giver.last_load is not None:
            loads.append(giver.last_load)

    states = _run(model, data, giver, 5.0, watch)
    assert GiverState.RELEASING not in states and giver.state is GiverState.OFFERING
    assert max(errors) < 0.01  # lag of the soft weld during the 0.8 m/s reach, < 2 mm after
    assert max(errors[-1000:]) < 0.003
    assert min(loads[50:]) > 0.9 and max(loads[50:]) < 1.1  # the giver carries the whole weight
    assert data.xpos[giver.object_id][2] > 0.2


def test_release_when_object_is_supported_then_withdraw():
    model, giver = _scene()
    data = mujoco.MjData(model)
    scenario = _scenario(
        release=ReleaseSpec(support_fraction=0.3, confirm_s=0.3, timeout_s=8.0, withdraw_s=1.0)
    )
    giver.reset(data, scenario)
    _run(model, data, giver, 1.5)
    assert giver.state is GiverState.OFFERING and giver.holding
    weight = BOX_MASS * 9.81
    support_from = data.time

    def lift(d):  # "the robot" bears the object's weight from t = 1.5 s on
        d.xfrc_applied[giver.object_id, 2] = weight

    _run(model, data, giver, 2.0, lift)
    assert giver.state is GiverState.RELEASING  # opening the hand (0.4 s) before withdrawing
    assert giver.released_at == pytest.approx(support_from + 0.3, abs=0.02)
    assert not data.eq_active[giver.eq_id]
    release_pos = giver.wrist_pose(data)[:3, 3].copy()
    object_pos = data.xpos[giver.object_id].copy()
    states = _run(model, data, giver, 4.0, lift)
    assert GiverState.WITHDRAWING in states and giver.state is GiverState.WITHDRAWN
    moved = giver.wrist_pose(data)[:3, 3] - release_pos
    assert np.linalg.norm(moved) == pytest.approx(np.hypot(0.3, 0.05), abs=0.01)
    assert moved[0] > 0.2  # back toward the giver's side
    # The object stayed with "the robot" (floating on the lift force at its release velocity).
    assert np.linalg.norm(data.xpos[giver.object_id] - object_pos) < 0.05
    assert np.linalg.norm(data.xpos[giver.object_id] - giver.wrist_pose(data)[:3, 3]) > 0.25


def test_hold_force_reads_a_sideways_pull_in_weights():
    """Something pulls the held object sideways with twice its weight and carries half of it:
    the weld's force on the object is the rest, in weights (its upward part: `support_load`)."""
    model, giver = _scene()
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(release=ReleaseSpec(timeout_s=8.0)))
    _run(model, data, giver, 1.5)
    np.testing.assert_allclose(giver.hold_force(data), [0.0, 0.0, 1.0], atol=0.05)
    weight = BOX_MASS * 9.81

    def tug(d):
        d.xfrc_applied[giver.object_id, :3] = [2.0 * weight, 0.0, 0.5 * weight]

    _run(model, data, giver, 1.6, tug)
    force = giver.hold_force(data)
    np.testing.assert_allclose(force, [-2.0, 0.0, 0.5], atol=0.05)
    assert giver.support_load(data) == pytest.approx(force[2])
    assert giver.hold_force_row(data) == [round(float(f), 2) for f in force]
    assert giver.state is GiverState.OFFERING  # half the weight is not enough to let go


def test_release_when_a_platform_takes_the_weight():
    model, giver = _scene(platform=True)
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(release=ReleaseSpec(timeout_s=8.0)))
    _run(model, data, giver, 1.6)
    geom = model.geom("object/box").id
    R, c = data.geom_xmat[geom].reshape(3, 3), data.geom_xpos[geom]
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * BOX_HALF
    bottom = float((corners @ R.T + c)[:, 2].min())
    mocap = model.body("platform").mocapid[0]
    data.mocap_pos[mocap] = [c[0], c[1], bottom - 0.03]

    def raise_platform(d):  # comes up under the object at 2 cm/s and stops 2 mm into it
        top = d.mocap_pos[mocap][2] + 0.01
        if top < bottom + 0.002:
            d.mocap_pos[mocap][2] += 0.02 * model.opt.timestep

    _run(model, data, giver, 4.0, raise_platform)
    assert giver.released_at is not None and giver.state in (GiverState.RELEASING, GiverState.WITHDRAWING)
    _run(model, data, giver, 6.0)
    assert giver.state is GiverState.WITHDRAWN
    assert data.xpos[giver.object_id][2] > bottom  # resting on the platform, not dropped


def test_timeout_rule_releases_at_timeout():
    model, giver = _scene()
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(release=ReleaseSpec(rule="timeout", timeout_s=2.0)))
    _run(model, data, giver, 2.3)
    assert giver.released_at == pytest.approx(2.0, abs=0.005)
    assert not giver.gave_up and not data.eq_active[giver.eq_id]


def test_gives_up_after_timeout_and_keeps_the_object():
    model, giver = _scene()
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(release=ReleaseSpec(timeout_s=2.0, withdraw_s=1.0)))
    _run(model, data, giver, 2.1)
    assert giver.gave_up and giver.released_at is None and giver.state is GiverState.WITHDRAWING
    _run(model, data, giver, 3.5)
    assert giver.state is GiverState.WITHDRAWN and giver.holding
    err = np.linalg.norm(_object_in_hand(giver, data)[:3, 3] - giver.grasp.T_hand_object[:3, 3])
    assert err < 0.005


def test_contacts_with_reports_a_robot_link_touching_the_giver():
    model, giver = _scene(probe=True)
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(start_pose=OFFER))
    assert giver.contacts_with(model, data, ["robot_probe"]) == []
    # Push the probe into the back of the hand (+y in the hand frame is the back).
    T = giver.wrist_pose(data)
    probe_q = model.joint("robot_probe_free").qposadr[0]
    data.qpos[probe_q : probe_q + 3] = T[:3, :3] @ [0.0, 0.025, 0.05] + T[:3, 3]
    mujoco.mj_forward(model, data)
    contacts = giver.contacts_with(model, data, ["robot_probe"])
    assert contacts, "probe inside the hand but no contact reported"
    assert all(c.giver_geom.startswith("giver/") and c.other_geom == "robot_probe/box" for c in contacts)
    assert max(c.normal_force for c in contacts) > 0.0
    assert giver.contacts_with(model, data, ["somebody_else"]) == []
    assert giver.contacts_with(model, data, None)  # any non-giver geom


def test_left_hand_is_the_mirror_image():
    right_model, right = _scene("right")
    left_model, left = _scene("left")
    rd, ld = mujoco.MjData(right_model), mujoco.MjData(left_model)
    right.reset(rd, _scenario(start_pose=OFFER))
    mirrored = mirror_pose(OFFER)
    left.reset(ld, _scenario(start_pose=mirrored, offer_pose=mirrored, giver_side="left"))
    W = np.diag([1.0, -1.0, 1.0])
    np.testing.assert_allclose(
        left.keypoints(left_model, ld), right.keypoints(right_model, rd) @ W, atol=1e-6
    )
    np.testing.assert_allclose(ld.xpos[left.object_id], rd.xpos[right.object_id] @ W, atol=1e-6)
    with pytest.raises(ValueError, match="left giver"):
        right.reset(rd, _scenario(giver_side="left"))


# --- MediaPipe on the rendered giver ------------------------------------------------------------


class _Offscreen:
    """Minimal off-screen colour renderer for named cameras (EGL, or MUJOCO_GL=osmesa)."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int):
        if os.environ.get("MUJOCO_GL", "egl").lower() == "osmesa":
            from mujoco.osmesa import GLContext
        else:
            from mujoco.egl import GLContext
        self.model, self.width, self.height = model, width, height
        self.gl = GLContext(width, height)
        self.gl.make_current()
        self.con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.con)
        self.scene = mujoco.MjvScene(model, maxgeom=2000)
        self.opt = mujoco.MjvOption()
        self.cam = mujoco.MjvCamera()
        self.cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.viewport = mujoco.MjrRect(0, 0, width, height)
        self.rgb = np.empty((height, width, 3), np.uint8)

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        self.cam.fixedcamid = self.model.camera(camera).id
        mujoco.mjv_updateScene(
            self.model, data, self.opt, None, self.cam, mujoco.mjtCatBit.mjCAT_ALL, self.scene
        )
        mujoco.mjr_render(self.viewport, self.scene, self.con)
        mujoco.mjr_readPixels(self.rgb, None, self.viewport, self.con)
        return np.flipud(self.rgb).copy()

    def close(self) -> None:
        self.con.free()
        self.gl.free()


def _roi(
    model: mujoco.MjModel, data: mujoco.MjData, camera: str, width: int, height: int
) -> tuple[int, int, int]:
    """Square crop (x0, y0, size) around the handover region's projection into a camera image."""
    cid = model.camera(camera).id
    R, c = data.cam_xmat[cid].reshape(3, 3), data.cam_xpos[cid]
    f = 0.5 * height / np.tan(np.radians(model.cam_fovy[cid]) / 2)
    pts = np.array(
        [
            [x, y, z]
            for x in (ROI_LO[0], ROI_HI[0])
            for y in (ROI_LO[1], ROI_HI[1])
            for z in (ROI_LO[2], ROI_HI[2])
        ]
    )
    pc = (pts - c) @ R  # MuJoCo camera frame: -z forward, +y up
    uv = np.stack([width / 2 + f * pc[:, 0] / -pc[:, 2], height / 2 - f * pc[:, 1] / -pc[:, 2]], axis=1)
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    size = int(min(max(u1 - u0, v1 - v0), width, height))
    x0 = int(np.clip((u0 + u1 - size) / 2, 0, width - size))
    y0 = int(np.clip((v0 + v1 - size) / 2, 0, height - size))
    return x0, y0, size


def test_mediapipe_detects_the_giver_in_the_easy_scenario():
    """The real MediaPipe Hands model on rendered frames of the shipped easy scenario.

    Cameras at the cell's camera poses (1.11 m from the offer region, D455 colour at 640x480,
    fx = 384). MediaPipe's palm detector cannot find a hand that covers ~8 % of a 90-degree-wide
    frame, so each frame is cropped to the handover region's projection (a fixed, calibration-only
    ROI of ~210 px), as perception has to do too. Video mode, one tracker per camera.
    """
    mp = pytest.importorskip("mediapipe")
    width, height, fx = 640, 480, 384.0
    scenario = load_scenarios("scenarios/easy.yaml")[0]
    model, giver = _scene(scenario.giver_side, cameras=(width, height, fx))
    data = mujoco.MjData(model)
    giver.reset(data, scenario)
    try:
        renderer = _Offscreen(model, width, height)
    except Exception as exc:  # no EGL/OSMesa on this machine
        pytest.skip(f"no off-screen GL context: {exc!r}")
    trackers = {
        cam: mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=1, min_detection_confidence=0.5)
        for cam in CELL_CAMERAS
    }
    reach_end = giver.trajectory.reach_end_s
    frame_times = reach_end - 0.2 + np.arange(36) / 15.0  # end of the reach, then 2.2 s of holding
    hits = {cam: 0 for cam in CELL_CAMERAS}
    labels: dict[str, list[str]] = {cam: [] for cam in CELL_CAMERAS}
    t0 = time.perf_counter()
    try:
        rois = {cam: _roi(model, data, cam, width, height) for cam in CELL_CAMERAS}
        for t_frame in frame_times:
            _run(model, data, giver, t_frame)
            for cam, tracker in trackers.items():
                x0, y0, size = rois[cam]
                crop = np.ascontiguousarray(renderer.render(data, cam)[y0 : y0 + size, x0 : x0 + size])
                result = tracker.process(crop)
                if result.multi_hand_landmarks:
                    hits[cam] += 1
                    labels[cam].append(result.multi_handedness[0].classification[0].label)
    finally:
        renderer.close()
        for tracker in trackers.values():
            tracker.close()
    n = len(frame_times)
    rate = sum(hits.values()) / (n * len(hits))
    per_camera = {cam: round(h / n, 3) for cam, h in hits.items()}
    handedness = {cam: max(set(v), key=v.count) if v else None for cam, v in labels.items()}
    print(
        f"\nMediaPipe detection rate {rate:.3f} over {n} frames x {len(hits)} cameras {per_camera}; "
        f"ROIs {rois}; handedness (MediaPipe assumes mirrored images) {handedness}; "
        f"{time.perf_counter() - t0:.1f} s"
    )
    assert giver.state is GiverState.OFFERING
    assert rate >= 0.9, f"MediaPipe found the giver in only {rate:.0%} of frames: {per_camera}"


def test_giver_without_an_object_moves_and_withdraws():
    spec = mujoco.MjSpec()
    handles = add_giver(spec, object_body=None)
    model = spec.compile()
    giver = Giver(model, handles)
    data = mujoco.MjData(model)
    giver.reset(data, _scenario(release=ReleaseSpec(timeout_s=1.5, withdraw_s=0.5)))
    assert handles.weld is None and not giver.holding and giver.support_load(data) is None
    states = _run(model, data, giver, 1.2)
    np.testing.assert_allclose(giver.wrist_pose(data)[:3, 3], OFFER.xyz, atol=0.005)
    states += _run(model, data, giver, 2.2)
    assert giver.gave_up and giver.state is GiverState.WITHDRAWN
    assert states[0] is GiverState.APPROACHING and GiverState.OFFERING in states
