"""Close-hold results of grasp pools (`grasps.close_hold`, `dexh2r datagen hold`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dexh2r_core.paths import repo_root
from dexh2r_policy import datagen
from dexh2r_policy.dynamic_grasp import DynamicGraspError, ObjectGraspPool, PoolLibrary
from dexh2r_policy.grasps.close_hold import (
    CloseHoldConfig,
    HoldResults,
    hold_path,
    load_holds,
    pool_digest,
    run_pool,
)
from dexh2r_policy.grasps.pool import GraspPool

POOLS = repo_root() / "data" / "pools"
MUG_PINCH = POOLS / "prim__mug.pinch.npz"


def test_committed_results_are_what_the_test_computes():
    """The committed `prim__mug.pinch.hold.npz` belongs to its pool (digest) and reproduces: a
    grasp that holds (< 2 cm in all six directions) and one that does not, recomputed here."""
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_sim.objects import ObjectLibrary

    pool = GraspPool.load(MUG_PINCH)
    stored = HoldResults.load(hold_path(MUG_PINCH))
    assert stored.digest == pool_digest(pool.T_obj_hand, pool.finger_q)
    holds = stored.holds()
    tested = ~np.isnan(stored.displacement[:, 0])
    assert np.array_equal(tested, pool.succ6)  # the succ6 rows, as the command tests by default
    good, bad = int(np.flatnonzero(holds)[0]), int(np.flatnonzero(tested & ~holds)[0])
    rows = np.zeros(len(pool), bool)
    rows[[good, bad]] = True
    robot = RobotDescription.load("ur5_shadow")
    obj = ObjectLibrary().get(pool.object_id, scale=pool.object_scale)
    again = run_pool(robot, obj, pool, rows=rows)
    assert again.settings["family"] == "pinch"
    assert np.allclose(again.displacement[[good, bad]], stored.displacement[[good, bad]], atol=1e-4)
    assert (again.displacement[good] < 0.02).all() and (again.displacement[bad] >= 0.02).any()
    assert np.isnan(again.displacement[~rows]).all() and not again.holds()[~rows].any()


def test_pool_library_attaches_the_results_and_refuses_stale_ones(tmp_path: Path):
    """PoolLibrary gives the mug's pool `holds` (stable rows of both families, in pool order);
    results of other grasps (a regenerated pool) are an error that names the command to rerun;
    a pool without results has none (the closed loop then commits to any grasp)."""
    for name in ("prim__mug.npz", "prim__mug.pinch.npz"):
        shutil.copy(POOLS / name, tmp_path / name)
        if hold_path(POOLS / name).exists():
            shutil.copy(hold_path(POOLS / name), hold_path(tmp_path / name))
    files = [GraspPool.load(tmp_path / n) for n in ("prim__mug.npz", "prim__mug.pinch.npz")]
    if not all(hold_path(tmp_path / n).exists() for n in ("prim__mug.npz", "prim__mug.pinch.npz")):
        pytest.fail("data/pools lacks the mug's close-hold results: run `dexh2r datagen hold`")
    pool = PoolLibrary(tmp_path).get("prim/mug")
    names = ("prim__mug.npz", "prim__mug.pinch.npz")
    expected = np.concatenate(
        [load_holds(tmp_path / n, g)[g.succ6] for n, g in zip(names, files, strict=True)]
    )
    assert pool.holds is not None and np.array_equal(pool.holds, expected)
    assert 0 < pool.holds.sum() < len(pool)
    one = ObjectGraspPool.load(tmp_path / names[1])  # one file: its own results
    assert np.array_equal(one.holds, load_holds(tmp_path / names[1], files[1])[files[1].succ6])

    stale = files[1]
    stale.finger_q[0, 0] += 0.1
    stale.save(tmp_path / "prim__mug.pinch.npz")
    with pytest.raises(DynamicGraspError, match="datagen hold"):
        PoolLibrary(tmp_path).get("prim/mug")
    hold_path(tmp_path / "prim__mug.pinch.npz").write_bytes(b"not an npz")
    with pytest.raises(DynamicGraspError, match="unreadable"):
        PoolLibrary(tmp_path).get("prim/mug")
    hold_path(tmp_path / "prim__mug.pinch.npz").unlink()
    assert PoolLibrary(tmp_path).get("prim/mug").holds is None  # one family untested: none


def test_datagen_hold_cli(tmp_path: Path, capsys):
    """`dexh2r datagen hold`: results next to each pool file and a summary; files whose results
    match are skipped; a missing folder or no matching file exits 2 with the cause."""
    pools = tmp_path / "pools"
    assert (
        datagen.main(["grasps", "--objects", "prim/box_small", "--candidates", "3", "--out", str(pools)]) == 0
    )
    assert datagen.main(["hold", "--pools", str(pools), "--all-rows"]) == 0
    res = HoldResults.load(pools / "prim__box_small.hold.npz")
    assert res.displacement.shape == (3, 6) and np.isfinite(res.displacement).all()
    assert res.settings["open_rad"] > 0 and res.settings["max_move"] == CloseHoldConfig().max_move
    summary = json.loads((pools / "summary.hold.json").read_text())
    assert [f["file"] for f in summary["files"]] == ["prim__box_small.npz"]
    capsys.readouterr()
    assert datagen.main(["hold", "--pools", str(pools)]) == 0
    assert "0 pool files tested, 1 up to date" in capsys.readouterr().out
    assert datagen.main(["hold", "--pools", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert datagen.main(["hold", "--pools", str(pools), "--objects", "prim__mug*"]) == 2
    assert "no pool file" in capsys.readouterr().err


def test_close_hold_config_checks():
    with pytest.raises(ValueError, match="hold_s"):
        CloseHoldConfig(hold_s=0)
    with pytest.raises(ValueError, match="settle_s"):
        CloseHoldConfig(settle_s=-1)
