"""Scenario YAML: shipped sets load, generators are deterministic, bad scenarios fail naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dexh2r_core.config import ConfigError
from dexh2r_sim.scenario import (
    MAX_REACH,
    SHOULDER,
    GeneratorSpec,
    PoseSpec,
    Scenario,
    generate_scenarios,
    load_scenario_set,
    load_scenarios,
    mirror_pose,
    mirror_scenario,
    repeat_scenario,
    scenario_problems,
    validate_objects,
)

PRIM_IDS = ["prim/box_small", "prim/cylinder_can", "prim/mug", "prim/sphere_ball"]
TRAIN_PRIMS = [
    *PRIM_IDS,
    "prim/box_long",
    "prim/cylinder_thin",
    "prim/capsule_bar",
    "prim/ellipsoid_egg",
    "prim/l_block",
]


def _write(tmp_path: Path, data: dict, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _entry(**over) -> dict:
    base = {
        "name": "s1",
        "object_id": "prim/box_small",
        "start_pose": {"xyz": [1.1, 0.05, 0.2], "rpy_deg": [-100, 0, 90]},
        "offer_pose": {"xyz": [0.62, 0.0, 0.35], "rpy_deg": [-120, 0, 90]},
    }
    base.update(over)
    return base


def test_shipped_easy_set():
    scenarios = load_scenarios("scenarios/easy.yaml")
    assert len(scenarios) >= 3
    assert all(s.motion.type == "hold" and s.difficulty == "easy" for s in scenarios)
    assert {s.giver_side for s in scenarios} == {"right", "left"}
    assert all(not scenario_problems(s) for s in scenarios)
    validate_objects(scenarios, PRIM_IDS)


def test_shipped_hard_set():
    scenarios = load_scenarios("scenarios/hard.yaml")
    assert {s.motion.type for s in scenarios} == {"drift", "arc", "random_walk"}
    assert all(s.difficulty == "hard" for s in scenarios)
    for s in scenarios:
        if s.motion.type == "random_walk":
            lo, hi = s.motion.speed_range
            assert 0.05 <= lo <= hi <= 0.25
        else:
            assert 0.05 <= s.motion.speed <= 0.25
    validate_objects(scenarios, PRIM_IDS)


def test_a_repeat_redraws_the_motion_and_keeps_the_setup():
    """`dexh2r eval closed-loop --episodes N` runs repeat k // n of scenario k % n."""
    walk = next(s for s in load_scenarios("scenarios/hard.yaml") if s.motion.type == "random_walk")
    assert repeat_scenario(walk, 0) is walk
    again = repeat_scenario(walk, 2)
    assert again.seed == walk.seed + 2000 and again.name == walk.name
    assert (again.object_id, again.start_pose, again.offer_pose, again.motion) == (
        walk.object_id,
        walk.start_pose,
        walk.offer_pose,
        walk.motion,
    )
    a, b = walk.trajectory(), again.trajectory()
    assert np.allclose(a.pose(0.0).position, b.pose(0.0).position)  # the same start
    late = a.reach_end_s + 3.0
    assert np.linalg.norm(a.pose(late).position - b.pose(late).position) > 0.005  # another walk
    assert np.allclose(repeat_scenario(walk, 2).trajectory().pose(late).position, b.pose(late).position)
    with pytest.raises(ValueError, match="repeat"):
        repeat_scenario(walk, -1)


def test_shipped_train_generator_is_deterministic_and_valid():
    a = load_scenario_set("scenarios/train.yaml")
    b = load_scenarios("scenarios/train.yaml")
    assert a.generator is not None and len(a.scenarios) == a.generator.n
    assert list(a.scenarios) == b
    types = {s.motion.type for s in b}
    assert types == {"hold", "drift", "arc", "random_walk"}
    assert {s.object_id for s in b} == set(TRAIN_PRIMS)
    assert len({s.name for s in b}) == len(b)
    for s in b:
        assert np.linalg.norm(np.asarray(s.offer_pose.xyz) - SHOULDER) <= MAX_REACH
        assert not scenario_problems(s)


def test_generator_prefix_is_stable_when_n_grows():
    gen = GeneratorSpec(n=5, seed=3, object_ids=tuple(PRIM_IDS), sides=("right", "left"))
    more = generate_scenarios(
        GeneratorSpec(n=12, seed=3, object_ids=tuple(PRIM_IDS), sides=("right", "left"))
    )
    assert generate_scenarios(gen) == more[:5]
    other = generate_scenarios(GeneratorSpec(n=5, seed=4, object_ids=tuple(PRIM_IDS)))
    assert other != more[:5]


def test_generator_split_needs_a_resolver(tmp_path):
    path = _write(tmp_path, {"generator": {"n": 4, "split": "train"}})
    with pytest.raises(ConfigError, match=r"generator\.split"):
        load_scenarios(path)
    scenarios = load_scenarios(path, split_objects=lambda split: [f"prim/{split}_only"])
    assert {s.object_id for s in scenarios} == {"prim/train_only"}


def test_defaults_are_merged_under_entries(tmp_path):
    data = {
        "defaults": {"motion": {"type": "drift", "speed": 0.1}, "time_limit_s": 9.0},
        "scenarios": [_entry(), _entry(name="s2", motion={"speed": 0.2})],
    }
    s1, s2 = load_scenarios(_write(tmp_path, data))
    assert s1.motion.type == s2.motion.type == "drift"
    assert (s1.motion.speed, s2.motion.speed) == (0.1, 0.2)
    assert s1.time_limit_s == 9.0


def test_unknown_motion_type_names_scenario_and_key(tmp_path):
    path = _write(tmp_path, {"scenarios": [_entry(), _entry(name="bad_one", motion={"type": "teleport"})]})
    with pytest.raises(ConfigError) as exc:
        load_scenarios(path)
    msg = str(exc.value)
    assert "bad_one" in msg and "motion.type" in msg and "teleport" in msg


def test_unreachable_offer_names_scenario_and_key(tmp_path):
    far = _entry(name="too_far", offer_pose={"xyz": [0.95, 0.3, 0.4], "rpy_deg": [-120, 0, 90]})
    with pytest.raises(ConfigError) as exc:
        load_scenarios(_write(tmp_path, {"scenarios": [far]}))
    msg = str(exc.value)
    assert "too_far" in msg and "offer_pose.xyz" in msg and "0.85" in msg


def test_offer_below_table_is_rejected(tmp_path):
    low = _entry(name="under_table", offer_pose={"xyz": [0.6, 0.0, -0.05]})
    with pytest.raises(ConfigError, match=r"under_table.*offer_pose\.xyz.*table"):
        load_scenarios(_write(tmp_path, {"scenarios": [low]}))


def test_moving_box_out_of_reach_and_too_fast_reach_are_rejected(tmp_path):
    big = _entry(name="big_box", motion={"type": "drift", "speed": 0.1, "box": [0.3, 0.3, 0.2]})
    with pytest.raises(ConfigError, match=r"big_box.*motion\.box"):
        load_scenarios(_write(tmp_path, {"scenarios": [big]}))
    fast = _entry(name="rushed", motion={"reach_s": 0.3})
    with pytest.raises(ConfigError, match=r"rushed.*motion\.reach_s"):
        load_scenarios(_write(tmp_path, {"scenarios": [fast]}))


def test_unknown_key_and_bad_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"typo.*offer_pos.*did you mean 'offer_pose'"):
        load_scenarios(
            _write(tmp_path, {"scenarios": [{**_entry(name="typo"), "offer_pos": {"xyz": [0, 0, 0]}}]})
        )
    with pytest.raises(ConfigError, match=r"release.*support_fraction"):
        load_scenarios(_write(tmp_path, {"scenarios": [_entry(release={"support_fraction": 1.5})]}))
    with pytest.raises(ConfigError, match="giver_side"):
        load_scenarios(_write(tmp_path, {"scenarios": [_entry(giver_side="middle")]}))
    with pytest.raises(ConfigError, match="already used"):
        load_scenarios(_write(tmp_path, {"scenarios": [_entry(), _entry()]}))
    with pytest.raises(ConfigError, match="exactly one of"):
        load_scenarios(_write(tmp_path, {"name": "empty"}))


def test_validate_objects_names_scenario_and_suggests():
    scenarios = load_scenarios("scenarios/easy.yaml")
    wrong = [*scenarios, Scenario(**{**scenarios[0].__dict__, "name": "odd", "object_id": "prim/box_smal"})]
    with pytest.raises(ConfigError) as exc:
        validate_objects(wrong, PRIM_IDS)
    msg = str(exc.value)
    assert "odd" in msg and "object_id" in msg and "prim/box_small" in msg


def test_mirror_pose_is_an_involution_and_flips_y():
    p = PoseSpec((0.6, 0.1, 0.3), (-110.0, 8.0, 80.0))
    m = mirror_pose(p)
    assert m.xyz == (0.6, -0.1, 0.3)
    back = mirror_pose(m)
    np.testing.assert_allclose(back.to_pose().matrix(), p.to_pose().matrix(), atol=1e-6)
    s = load_scenarios("scenarios/easy.yaml")[0]
    ms = mirror_scenario(s)
    assert ms.giver_side != s.giver_side and ms.offer_pose.xyz[1] == -s.offer_pose.xyz[1]


def test_scenario_trajectory_is_deterministic():
    s = load_scenarios("scenarios/hard.yaml")[-1]
    times = np.linspace(0, s.time_limit_s, 50)
    np.testing.assert_array_equal(s.trajectory().sample(times)[0], s.trajectory().sample(times)[0])


def test_shipped_object_ids_exist_in_the_object_library():
    objects = pytest.importorskip("dexh2r_sim.objects")
    library = objects.ObjectLibrary()
    for name in ("easy", "hard", "train"):
        validate_objects(load_scenarios(f"scenarios/{name}.yaml"), library.ids("all"))
    train = load_scenarios("scenarios/train.yaml")
    validate_objects(train, library.ids("train"))  # the generator never draws held-out objects
