"""Pinch grasp family: the expert's pinch as pool candidates, tested; pool files by family and
the pool library joining them."""

from __future__ import annotations

import json
from pathlib import Path

import mujoco
import numpy as np
import pytest

from dexh2r_core.robot.description import RobotDescription
from dexh2r_policy import datagen
from dexh2r_policy.dynamic_grasp import PoolLibrary
from dexh2r_policy.grasps.pinch import PinchConfig, PinchGenerator
from dexh2r_policy.grasps.pool import GraspPool, generate_pool, pool_filename
from dexh2r_policy.grasps.stability import HAND_PREFIX
from dexh2r_sim.objects import ObjectLibrary
from dexh2r_sim.scripted import TIP_GEOMS, ObjectSdf


@pytest.fixture(scope="module")
def robot() -> RobotDescription:
    return RobotDescription.load("ur5_shadow")


@pytest.fixture(scope="module")
def box():
    return ObjectLibrary().get("prim/box_small")


def test_pinch_from_above_holds_the_box_with_three_fingertips(robot, box) -> None:
    gen = PinchGenerator(robot, PinchConfig(n_directions=1, yaws_deg=(0.0, 90.0)))  # +z: from the top
    pool = generate_pool(robot, box, n=2, generator=gen)
    assert len(pool) == 2 and pool.info["family"] == "pinch"
    assert len(pool.info["plan_costs"]) == 2
    assert pool.succ6.all(), pool.displacement
    assert (pool.pen_depth < 0.002).all()
    assert (pool.contacts >= 3).all()
    # The three tips touch the box and nothing but the pinch digits' distal links reach it.
    bed = gen.testbed(box)
    sdf = ObjectSdf(box)
    for T, q in zip(pool.T_obj_hand, pool.finger_q, strict=True):
        bed.reset(T, gen.full_q(q))
        mujoco.mj_forward(bed.model, bed.data)
        touching = {bed.model.body(b).name for b, *_, dist in bed.contacts() if dist < 2e-3}
        assert {HAND_PREFIX + "rh_thdistal", HAND_PREFIX + "rh_ffdistal"} <= touching, touching
        assert not touching & {HAND_PREFIX + f"rh_{f}distal" for f in ("rf", "lf")}
        # the palm is above the box (the approach was +z) and faces down
        palm = T @ np.linalg.inv(gen.T_palm_root)
        assert palm[2, 3] > box.bounds[1, 2]
        assert palm[:3, 1] @ np.array([0.0, 0.0, 1.0]) > 0.7  # palm normal (-y) points down
        assert sdf(palm[None, :3, 3])[0] > 0.03
    assert set(TIP_GEOMS) == {"thumb", "index", "middle"}


def test_pool_files_by_family_and_the_library_joins_them(robot, box, tmp_path: Path) -> None:
    assert pool_filename("prim/mug") == "prim__mug.npz"
    assert pool_filename("prim/mug", family="pinch") == "prim__mug.pinch.npz"
    assert pool_filename("prim/mug", 0.9, "pinch") == "prim__mug@0.9.pinch.npz"
    with pytest.raises(ValueError, match="grasp family 'fist'"):
        pool_filename("prim/mug", family="fist")

    def pool(n: int, stable: bool, x: float) -> GraspPool:
        T = np.repeat(np.eye(4)[None], n, axis=0)
        T[:, 0, 3] = x
        return GraspPool(
            "prim/box_small", 1.0, tuple(f"j{i}" for i in range(22)), T, np.zeros((n, 22)),
            np.full((n, 6), stable), np.zeros((n, 6)), np.zeros(n), np.zeros(n, int), np.arange(n),
        )  # fmt: skip

    pool(3, True, 0.1).save(tmp_path / "prim__box_small.npz")
    pool(2, True, 0.2).save(tmp_path / "prim__box_small.pinch.npz")
    joined = PoolLibrary(tmp_path).get("prim/box_small")
    assert len(joined) == 5 and sorted(set(joined.T_obj_hand[:, 0, 3].round(3))) == [0.1, 0.2]
    assert len(PoolLibrary(tmp_path, families=("power",)).get("prim/box_small")) == 3
    assert len(PoolLibrary(tmp_path, families=("pinch",)).get("prim/box_small")) == 2
    # a family without a stable grasp adds nothing to the stable pool
    pool(4, False, 0.3).save(tmp_path / "prim__box_small.pinch.npz")
    assert len(PoolLibrary(tmp_path).get("prim/box_small")) == 3
    with pytest.raises(ValueError, match="grasp families"):
        PoolLibrary(tmp_path, families=("fist",))
    # The grasp CVAE learns the paper's whole-hand grasps: it reads the power files only.
    from dexh2r_policy.grasps.cvae_train import CVAEDataConfig, load_objects

    objects = load_objects(CVAEDataConfig(pools=str(tmp_path), surface_points=64))
    assert [(o.name, len(o.T_obj_hand), o.pool_file.name) for o in objects] == [
        ("prim/box_small", 3, "prim__box_small.npz")
    ]


def test_datagen_pinch_family_cli(tmp_path: Path) -> None:
    out = tmp_path / "pools"
    args = [
        "grasps",
        "--objects",
        "prim/sphere_small",
        "--family",
        "pinch",
        "--out",
        str(out),
        "--candidates",
        "1",
    ]
    assert datagen.main(args) == 0
    summary = json.loads((out / "summary.pinch.json").read_text())
    assert summary["family"] == "pinch" and summary["total"]["candidates"] == 1
    assert GraspPool.load(out / "prim__sphere_small.pinch.npz").info["family"] == "pinch"
    assert not (out / "prim__sphere_small.npz").exists()
    assert datagen.main(args) == 0  # found, skipped
    assert json.loads((out / "summary.pinch.json").read_text())["per_object"][0]["skipped"] is True


def test_scaled_objects_get_their_own_pools_or_a_warned_fallback(tmp_path: Path) -> None:
    """A scenario's scaled object (e.g. box_small at 0.9) looks for its own pool files first."""
    T = np.repeat(np.eye(4)[None], 2, axis=0)

    def save(name: str, x: float) -> None:
        T[:, 0, 3] = x
        GraspPool(
            "prim/box_small", 1.0, tuple(f"j{i}" for i in range(22)), T, np.zeros((2, 22)),
            np.ones((2, 6), bool), np.zeros((2, 6)), np.zeros(2), np.zeros(2, int), np.arange(2),
        ).save(tmp_path / name)  # fmt: skip

    save("prim__box_small.npz", 0.1)
    lib = PoolLibrary(tmp_path)
    with pytest.warns(UserWarning, match="--scale 0.9"):
        assert lib.get("prim/box_small", scale=0.9).T_obj_hand[0, 0, 3] == pytest.approx(0.1)
    save("prim__box_small@0.9.npz", 0.09)
    lib = PoolLibrary(tmp_path)
    assert lib.get("prim/box_small", scale=0.9).T_obj_hand[0, 0, 3] == pytest.approx(0.09)
    assert lib.get("prim/box_small").T_obj_hand[0, 0, 3] == pytest.approx(0.1)


def test_datagen_scale_writes_the_scaled_objects_files(tmp_path: Path) -> None:
    args = [
        "grasps",
        "--objects",
        "prim/box_small",
        "--scale",
        "0.9",
        "--out",
        str(tmp_path),
        "--candidates",
        "1",
    ]
    assert datagen.main(args) == 0
    pool = GraspPool.load(tmp_path / "prim__box_small@0.9.npz")
    assert pool.object_scale == pytest.approx(0.9)
    assert json.loads((tmp_path / "summary@0.9.json").read_text())["total"]["candidates"] == 1
    assert not (tmp_path / "summary.json").exists()
