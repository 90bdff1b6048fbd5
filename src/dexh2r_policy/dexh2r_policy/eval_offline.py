"""`dexh2r eval offline`: the paper's offline DynamicGrasp benchmark (method doc §5.1).

    dexh2r eval offline --policy motionnet --mode easy --split test --json runs/offline_easy.json
                        [--checkpoint CKPT] [--data DIR] [--pools DIR] [--out FOLDER] [--limit N]
                        [--pool-families power,pinch] [--guard-margin M]
    dexh2r eval offline --policy expert --mode hard --split test --json runs/expert_hard.json --data DIR
    dexh2r eval offline --policy dp3 --mode easy --split test --json runs/offline/dp3_easy.json   # or dp

Protocol: every test sequence is replayed (the recorded object pose and cloud, and the giver's
keypoints where the sequence has them; the giver does not react). The hand is kinematic: it is
wherever the policy's last target put it. The first P = 5 frames are the recording (the seed);
from then on the policy (`DynamicGrasp`: MotionNet re-planning, the Easy 10 cm / Hard 5 cm
switch, alignment) drives it until the alignment snaps to the goal grasp or the sequence ends.
`--policy expert` replays the recorded hand through the same switch and alignment (the upper
bound of the recording's own motion). `--policy dp3` / `dp`: the diffusion baselines
(`dexh2r_policy.diffusion`) generate the approach instead of MotionNet, in the same DynamicGrasp
(the same switch and alignment); their seed is the paper's 5 recorded frames (or n_obs if more).

Metrics, as the official `test_motion_infer_result.py` (seed frames not scored):
- `success`: share of sequences in which goal-pose alignment was triggered before the end;
- `safety`: share of sequences with no penetrating *network* frame (interpolation frames excluded);
  a frame penetrates when a hand surface point is inside the object: for its nearest object
  surface point (the 4096-point mesh sample with normals, posed by the object pose),
  (p_obj - p_hand) · n_obj > 0; the depth is that distance;
- `pen_depth_mm`: per sequence Σ(max depth per network frame) / #network frames, mean over
  sequences, in mm (the official code works in metres; the paper's table is most plausibly mm);
- `pen_frames`: mean number of penetrating network frames per sequence;
- `frames_to_grasp`: mean number of generated frames until the snap, or to the end of the
  sequence (interpolation frames included; the paper's infer_fr);
- `episodes`; also `reached` (share that snapped to the goal) and `new_safety` (1 - pen_frames /
  frames_to_grasp, as the official code also computes).
Not carried over from the official evaluators (method doc §7): the DP3 runner's debug block
that replaced every point cloud, and its hard-coded 1 cm / 45-frame thresholds.

The results folder (`--out`, default next to the JSON: `<json stem>/`) holds `config.json` and
`episodes.jsonl` (one outcome per sequence); the metrics are `summarize(folder)`, a pure function
of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from dexh2r_policy.models.penetration import Penetration

SPLITS = {"train": "motionnet_train", "test": "motionnet_test", "val": "dp_val"}
DEFAULT_CHECKPOINT = "checkpoints/motionnet_small.pt"
DEFAULT_CHECKPOINTS = {
    "motionnet": DEFAULT_CHECKPOINT,
    "dp3": "checkpoints/dp3_small.pt",
    "dp": "checkpoints/dp_small.pt",
}
TRAIN_CONFIGS = {"motionnet": "motionnet_small", "dp3": "dp3_small", "dp": "dp_small"}
DIFFUSION_SEED_FRAMES = 5  # the paper's recorded seed (frames 0-4), for DP / DP3 as for MotionNet
DEFAULT_CONFIG = "policy/motionnet_small.yaml"


def run_episode(seq, policy, penetration: Penetration, giver_kp: np.ndarray | None, n_seed: int) -> dict:
    """One replayed sequence (see the module doc); returns the episode's outcome row."""
    from dexh2r_policy.dynamic_grasp import HandState
    from dexh2r_policy.models.geometry import qpos_to_poses

    T_rec, q_rec = qpos_to_poses(seq.qpos)
    n = seq.n_frames
    policy.reset()
    hand = HandState(T_rec[0], q_rec[0])
    triggered_at, reached_at = None, None
    net_frames, pen_frames, depth_sum, generated = 0, 0, 0.0, 0
    for t in range(n - 1):
        if t < n_seed:
            hand = HandState(T_rec[t], q_rec[t])
        kp = giver_kp[t] if giver_kp is not None else None
        target = policy.step(t * policy.config.frame_dt_s, seq.obj_pose[t], seq.obj_pcd[t], kp, hand)
        if t + 1 < n_seed:
            continue
        # The target is where the hand is at frame t + 1 (kinematic hand).
        generated += 1
        hand = HandState(target.T_world_hand, target.finger_q)
        if target.phase in ("align", "close") and triggered_at is None:
            triggered_at = t + 1
        if target.from_network:
            depth = penetration.depth(target.T_world_hand, target.finger_q, seq.obj_pose[t + 1])
            net_frames += 1
            depth_sum += depth
            pen_frames += int(depth > 0.0)
        if target.phase == "close":  # the snap to the goal: the paper's episode ends here
            reached_at = t + 1
            break
    return {
        "id": str(seq.id),
        "frames": n,
        "success": triggered_at is not None,
        "reached": reached_at is not None,
        "switch_frame": triggered_at,
        "network_frames": net_frames,
        "pen_frames": pen_frames,
        "pen_depth_mean_m": depth_sum / net_frames if net_frames else 0.0,
        "frames_to_grasp": generated,
    }


def summarize(folder: str | Path) -> dict:
    """The benchmark's metrics from a results folder (config.json + episodes.jsonl)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines() if line.strip()]
    n = len(rows)

    def mean(key, f=float) -> float:
        return float(np.mean([f(r[key]) for r in rows])) if n else 0.0

    pen_frames, ftg = mean("pen_frames"), mean("frames_to_grasp")
    return {
        "policy": config.get("policy"),
        "mode": config.get("mode"),
        "split": config.get("split"),
        "episodes": n,
        "success": mean("success"),
        "safety": float(np.mean([r["pen_frames"] == 0 for r in rows])) if n else 0.0,
        "pen_depth_mm": mean("pen_depth_mean_m") * 1000.0,
        "pen_frames": pen_frames,
        "frames_to_grasp": ftg,
        "reached": mean("reached"),
        "new_safety": 1.0 - pen_frames / ftg if ftg else 0.0,
        "checkpoint": config.get("checkpoint"),
        "results": str(folder),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r eval offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="motionnet", choices=["motionnet", "dp3", "dp", "expert"])
    parser.add_argument("--mode", default="easy", choices=["easy", "hard"])
    parser.add_argument("--split", default="test", help="test, val, train, or a DexH2R split name")
    parser.add_argument("--json", required=True, help="write the metrics here")
    parser.add_argument(
        "--checkpoint",
        help="policy checkpoint (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_CHECKPOINTS.items())
        + ")",
    )
    parser.add_argument("--config", help=f"policy config for --policy expert (default {DEFAULT_CONFIG})")
    parser.add_argument("--data", help="DexH2R-layout root (default: the checkpoint's data.root)")
    parser.add_argument("--pools", help="grasp pool folder (default: the checkpoint's data.pools)")
    parser.add_argument(
        "--pool-families",
        help="comma-separated grasp families of the pools to use (power, pinch; default: every family found)",
    )
    parser.add_argument("--out", help="results folder (default: next to --json)")
    parser.add_argument("--limit", type=int, help="at most this many sequences")
    parser.add_argument("--align-after", type=int, help="override the policy's align_after_frames")
    parser.add_argument(
        "--guard-margin",
        type=float,
        help="the collision guard of approach targets with this margin (m); 0 turns it off (default: the "
        "checkpoint's policy config)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from tqdm import tqdm

    from dexh2r_core.config import ConfigError, from_dict, to_dict
    from dexh2r_policy.data.dexh2r_layout import DatasetError, DexH2RDataset
    from dexh2r_policy.dynamic_grasp import (
        DynamicGrasp,
        DynamicGraspError,
        MotionNetPlanner,
        PoolLibrary,
        ReplayPlanner,
    )
    from dexh2r_policy.models.geometry import qpos_to_poses
    from dexh2r_policy.models.hand_surface import HandSurface
    from dexh2r_policy.motionnet import CheckpointError, load_motionnet
    from dexh2r_policy.train import TrainConfig, giver_keypoints, load_train_config, resolve_data_path

    def fail(msg: str) -> int:
        print(f"dexh2r eval offline: {msg}", file=sys.stderr)
        return 2

    from dexh2r_policy.diffusion.model import CheckpointError as DiffusionCheckpointError

    model, ckpt_path = None, None
    n_seed = None
    try:
        if args.policy == "motionnet":
            ckpt_path = resolve_data_path(args.checkpoint or DEFAULT_CHECKPOINT)
            model, ckpt = load_motionnet(ckpt_path)
            cfg = from_dict(TrainConfig, ckpt["config"], source=f"{ckpt_path}:config")
        elif args.policy in ("dp", "dp3"):
            from dexh2r_policy.diffusion.model import load_diffusion
            from dexh2r_policy.diffusion.train import DiffusionTrainConfig

            ckpt_path = resolve_data_path(args.checkpoint or DEFAULT_CHECKPOINTS[args.policy])
            model, ckpt = load_diffusion(ckpt_path, args.policy)
            cfg = from_dict(DiffusionTrainConfig, ckpt["config"], source=f"{ckpt_path}:config")
            n_seed = max(DIFFUSION_SEED_FRAMES, cfg.model.n_obs)
        else:
            cfg = load_train_config(args.config or DEFAULT_CONFIG)
    except (CheckpointError, DiffusionCheckpointError, ConfigError) as exc:
        hint = ""
        if args.policy != "expert" and not args.checkpoint:
            name = TRAIN_CONFIGS[args.policy]
            hint = f" (train one: dexh2r train --config config/policy/{name}.yaml, or pass --checkpoint)"
        return fail(f"{exc}{hint}")
    if n_seed is None:
        n_seed = cfg.model.n_past
    pc = replace(cfg.policy, mode=args.mode)
    if args.policy in ("dp", "dp3"):  # receding horizon: a new plan after n_action frames
        pc = replace(pc, replan_every=cfg.model.n_action)
    if args.align_after is not None:
        pc = replace(pc, align_after_frames=args.align_after)
    if args.policy == "expert" and args.guard_margin is None:
        pc = replace(pc, collision_guard=False)  # the recording's own motion, as recorded
    if args.guard_margin is not None:
        margin = max(args.guard_margin, 0.0)
        pc = replace(pc, collision_guard=margin > 0, collision_margin_m=margin)
    split = SPLITS.get(args.split, args.split)
    try:
        root = resolve_data_path(args.data or cfg.data.root)
        if not root.is_dir():
            return fail(
                f"{root}: no dataset there. The sim episodes and grasp pools the committed "
                "checkpoints use are made by `dexh2r datagen grasps` and `dexh2r datagen episodes` "
                "(the commands: docs/policy_motionnet.md, 'The committed checkpoint'); or pass "
                "--data with a DexH2R-layout root"
            )
        ds = DexH2RDataset(root)
        ids = ds.sequence_ids(split)
    except (DatasetError, ValueError) as exc:
        return fail(str(exc))
    ids = ids[: args.limit] if args.limit is not None else ids
    if not ids:
        return fail(f"split '{split}' of {ds.root} has no sequences")
    families = tuple(f.strip() for f in args.pool_families.split(",")) if args.pool_families else None
    try:
        pools = PoolLibrary(resolve_data_path(args.pools or cfg.data.pools), cfg.data.stable_only, families)
    except ValueError as exc:
        return fail(f"--pool-families: {exc}")
    out = Path(args.out) if args.out else Path(args.json).with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    run_config = {
        "policy": args.policy,
        "mode": args.mode,
        "split": split,
        "data": str(ds.root),
        "checkpoint": str(ckpt_path) if ckpt_path else None,
        "pool_families": list(pools.families),
        "policy_config": to_dict(pc),
        "model_config": to_dict(cfg.model),
        "sequences": [str(i) for i in ids],
    }
    (out / "config.json").write_text(json.dumps(run_config, indent=2))
    pen_surface = HandSurface.for_robot(cfg.model.robot, None)
    planner = MotionNetPlanner(model) if args.policy == "motionnet" else None
    rows = []
    try:
        with (out / "episodes.jsonl").open("w") as f:
            for sid in tqdm(ids, desc=f"offline {args.policy} {args.mode}", unit="ep", disable=None):
                seq = ds.load(sid)
                pool = pools.get(sid.object, sid.path(ds.root), seq.obj_pose[0])
                pts, normals = ds.object_surface_points(sid.object)
                if normals is None:
                    raise DatasetError(f"{ds.root}/obj_surface_pcd_4096/{sid.object}.ply: has no normals")
                if args.policy in ("dp", "dp3"):
                    from dexh2r_policy.diffusion.planner import diffusion_policy

                    policy = diffusion_policy(model, pool, pc)
                elif planner is None:
                    T_rec, q_rec = qpos_to_poses(seq.qpos)
                    ep_planner = ReplayPlanner(T_rec, q_rec, cfg.model.n_past, cfg.model.n_future)
                    hs = HandSurface.for_robot(cfg.model.robot, cfg.model.n_surface, cfg.model.surface_seed)
                    policy = DynamicGrasp(ep_planner, pool, pc, n_points=cfg.model.n_points, hand_surface=hs)
                else:
                    policy = DynamicGrasp(planner, pool, pc)
                if pc.collision_guard:  # the guard's own, coarser sample of the object's surface
                    policy.set_object_surface(pts[::2], normals[::2])
                kp = giver_keypoints(seq, sid.path(ds.root))
                row = run_episode(seq, policy, Penetration(pts, normals, pen_surface), kp, n_seed)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
    except (DatasetError, DynamicGraspError) as exc:
        return fail(str(exc))
    result = summarize(out)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(
        f"{args.policy} {args.mode}: {result['episodes']} episodes, success {result['success']:.3f} "
        f"safety {result['safety']:.3f} pen {result['pen_depth_mm']:.2f} mm / "
        f"{result['pen_frames']:.1f} frames, "
        f"{result['frames_to_grasp']:.1f} frames to grasp -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
