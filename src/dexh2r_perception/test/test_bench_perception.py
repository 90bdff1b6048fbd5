"""`dexh2r bench perception`: the acceptance figures are taken from the right parts and checked."""

from __future__ import annotations

import json

import pytest

from dexh2r_perception import bench


def _parts(**changes):
    parts = {
        "object": {
            "object_add_s_mm_median": 1.2,
            "object_rot_deg_median": 179.0,  # a box reported flipped: correct modulo symmetry
            "object_rot_sym_deg_median": 0.6,
            "object_track_loss_rate": 0.004,
        },
        "hand": {
            "easy": {"hand_wrist_mm_median": 9.0, "hand_mpjpe_mm_median": 22.0, "hand_detection_rate": 1.0,
                     "hand_frames": 100},
            "hard": {"hand_wrist_mm_median": 11.0, "hand_mpjpe_mm_median": 24.0, "hand_detection_rate": 0.9,
                     "hand_frames": 300},
        },
        "nodes": {
            "object_tracker_node": {"node_output_rate_hz": 29.5, "node_latency_ms_p95": 25.0},
            "hand_tracker_node": {"node_output_rate_hz": 30.0, "node_latency_ms_p95": 21.0},
        },
        "capture": {"capture_delivered_fraction": 1.0, "content_ok": True},
        "calibration": {"calibration_trans_mm": 0.1, "calibration_rot_deg": 0.01},
    }  # fmt: skip
    for key, value in changes.items():
        part, _, field = key.partition("__")
        parts[part][field] = value
    return parts


def test_all_targets_met_passes_and_figures_come_from_the_right_parts():
    out = bench.summarize(_parts())
    assert out["pass"] and set(out["checks"]) == set(bench.TARGETS)
    assert out["object_rot_deg_median"] == 0.6 and out["object_rot_deg_median_raw"] == 179.0
    assert out["hand_mpjpe_mm_median"] == 24.0, "the worse of the Easy and Hard sets"
    assert out["hand_detection_rate"] == pytest.approx((100 * 1.0 + 300 * 0.9) / 400)
    assert out["rate_hz"] == 29.5 and out["latency_p95_ms"] == 25.0, "the slower node counts"
    json.dumps(out)


@pytest.mark.parametrize(
    ("change", "figure"),
    [
        ({"object__object_track_loss_rate": 0.02}, "object_track_loss_rate"),
        ({"capture__capture_delivered_fraction": 0.99}, "capture_delivered_fraction"),
        ({"calibration__calibration_rot_deg": 0.3}, "calibration_rot_deg"),
    ],
)
def test_a_missed_target_fails(change, figure):
    out = bench.summarize(_parts(**change))
    assert not out["pass"] and not out["checks"][figure]["ok"]


def test_a_slow_node_or_a_missing_part_fails():
    parts = _parts()
    parts["nodes"]["hand_tracker_node"]["node_output_rate_hz"] = 25.0
    assert not bench.summarize(parts)["pass"]
    parts = _parts()
    parts["nodes"]["object_tracker_node"]["node_latency_ms_p95"] = None  # nothing arrived
    assert bench.summarize(parts)["latency_p95_ms"] is None and not bench.summarize(parts)["pass"]
    del parts["calibration"]
    assert not bench.summarize(parts)["pass"], "a part that did not run cannot pass"


def test_the_hand_node_at_its_deployed_resolution_counts_toward_rate_and_latency():
    parts = _parts()
    parts["nodes"]["hand_tracker_node_640x360"] = {"node_output_rate_hz": 27.0, "node_latency_ms_p95": 33.0}
    out = bench.summarize(parts)
    assert out["rate_hz"] == 27.0 and out["latency_p95_ms"] == 33.0
    assert out["hand_tracker_node_640x360_latency_p95_ms"] == 33.0
    assert not out["checks"]["latency_p95_ms"]["ok"] and not out["pass"]


def test_camera_optics_blur_is_the_same_angle_at_every_resolution():
    assert bench.camera_optics(424)["rgb_blur_px"] == pytest.approx(1.0)
    assert bench.camera_optics(848)["rgb_blur_px"] == pytest.approx(2.0)
    assert bench.camera_optics(640)["antialias"] is True


def test_a_bad_hand_resolution_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--json", str(tmp_path / "x.json"), "--only", "calibration", "--hand-resolution", "640"])
    assert exc.value.code == 2
    assert "--hand-resolution expects WxH" in capsys.readouterr().err


def test_the_hand_part_scores_the_offer_phase_until_the_giver_gives_up():
    """Frames after the release timeout (the giver withdraws: no handover) are not scored."""
    from dataclasses import replace

    from dexh2r_core.paths import config_path
    from dexh2r_perception.bench_hand import evaluate_hand_tracking
    from dexh2r_sim.scenario import load_scenarios

    scenario = load_scenarios(config_path("scenarios/easy.yaml"))[0]
    reach_end = scenario.trajectory().reach_end_s
    short = replace(scenario, release=replace(scenario.release, timeout_s=reach_end + 0.2))
    out = evaluate_hand_tracking([short], seconds=5.0, lead_in_s=0.1)
    assert out["hand_frames"] == round(0.3 * 30) + 1
    assert out["settings"]["offer_phase_only"] is True
