"""DP / DP3 behind DynamicGrasp's planner interface, and their step-latency bench.

    model, ckpt = load_diffusion("checkpoints/dp3_small.pt")
    policy = diffusion_policy(model, pool, ckpt_policy_config)   # a DynamicGrasp
    target = policy.step(stamp, obj_pose, obj_points, giver_keypoints, HandState(T, q))

The diffusion models generate the approach motion only; everything else is DynamicGrasp's own
code, unchanged: input checks, `sample_fixed` of the cloud, target selection, the Easy 10 cm /
Hard 5 cm switch, goal-pose alignment, close and lift (method doc §4: "other motion generation
algorithms use [the goal grasp] in goal pose alignment"). The goal grasp is *not* an input to
the network (`finalgrasp_as_obs: false`). `diffusion_policy` sets DynamicGrasp's `replan_every`
to the model's n_action: a plan is sampled, its n_action actions executed one per frame, then a
new plan (Diffusion Policy's receding horizon).

`DiffusionPlanner.observe` gets every approach frame's sampled cloud (world) and the hand state:
DP3 encodes the cloud once (its feature is cached, as MotionNet's are); DP renders the depth
image (`render_depth`: the cloud and the hand's surface points) and encodes it once. `plan`
conditions on the last n_obs frames and samples with a generator seeded at `reset()`, so an
episode is reproducible.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import torch

from dexh2r_policy.diffusion.encoders import render_depth
from dexh2r_policy.diffusion.model import DiffusionPolicyModel
from dexh2r_policy.models.geometry import poses_to_qpos


def agent_pos(T_world_hand: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
    """Hand states (T [K, 4, 4], q [K, 22]) -> agent_pos [K, 28]: translation, axis-angle, fingers
    (DexH2R's qpos[:6] ‖ qpos[8:30], world)."""
    qpos = poses_to_qpos(T_world_hand, finger_q)
    return np.concatenate([qpos[:, :6], qpos[:, 8:]], axis=1)


def pos_to_poses(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """agent_pos [K, 28] -> (T_world_hand [K, 4, 4], finger_q [K, 22])."""
    from scipy.spatial.transform import Rotation

    pos = np.asarray(pos, dtype=np.float64)
    T = np.repeat(np.eye(4)[None], len(pos), axis=0)
    T[:, :3, :3] = Rotation.from_rotvec(pos[:, 3:6]).as_matrix()
    T[:, :3, 3] = pos[:, :3]
    return T, pos[:, 6:].copy()


def render_frame(
    cloud_world: np.ndarray, T_world_hand: np.ndarray, finger_q: np.ndarray, hand_surface, camera
):
    """DP's observation image [2, H, W] of one frame: the object cloud (world) and the hand's
    surface points at (T_world_hand, finger_q), through `render_depth`. Training renders the
    recorded hand with it, the planner the hand it drives. Values are quantised to 1/255 (training
    stores the images as uint8; run time sees the same numbers)."""
    from dexh2r_policy.models.geometry import from_frame

    hand = from_frame(
        np.asarray(T_world_hand, np.float64), hand_surface.points(np.asarray(finger_q, np.float64))
    )
    return np.round(render_depth(cloud_world, hand, camera) * 255.0).astype(np.float32) / 255.0


class DiffusionPlanner:
    """A DP / DP3 model as DynamicGrasp's `MotionPlanner` (see the module docstring).

    threads: torch intra-op threads (process-wide, None leaves it), 1 as `MotionNetPlanner`.
    seed: the sampling noise's generator seed, re-applied at every `reset()`.
    """

    def __init__(self, model: DiffusionPolicyModel, threads: int | None = 1, seed: int = 0) -> None:
        from dexh2r_policy.models.hand_surface import HandSurface

        self.model = model.eval()
        c = self.config = model.config
        self.method = model.method
        self.n_past = c.n_obs
        self.n_points = c.n_points
        self.n_action = c.n_action
        self.hand_surface = HandSurface.for_robot(c.robot, c.n_surface, c.surface_seed)
        self.render_surface = (
            HandSurface.for_robot(c.robot, c.render_hand_points, c.surface_seed)
            if self.method == "dp"
            else None
        )
        self.seed = seed
        self._features: deque[tuple[int, torch.Tensor]] = deque(maxlen=c.n_obs)
        self.generator = torch.Generator().manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)

    def reset(self) -> None:
        self._features.clear()
        self.generator = torch.Generator().manual_seed(self.seed)

    def render(self, cloud_world: np.ndarray, T_world_hand: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
        """DP's observation image [2, H, W] of a frame (`render_frame`, as in training)."""
        return render_frame(cloud_world, T_world_hand, finger_q, self.render_surface, self.config.camera)

    @torch.inference_mode()
    def observe(self, frame: int, cloud_world: np.ndarray, hand) -> None:
        if self.method == "dp3":
            obs = torch.as_tensor(np.asarray(cloud_world, np.float32))[None]
        else:
            obs = torch.from_numpy(self.render(cloud_world, hand.T_world_hand, hand.finger_q))[None]
        self._features.append((frame, self.model.encode_frames(obs)[0]))

    @torch.inference_mode()
    def plan(
        self, frame: int, history: list, target=None, target_points=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The next n_action hand states (T [n_action, 4, 4], finger_q [n_action, 22])."""
        K = self.n_past
        hist = history[-K:]
        feats = [f for _, f in self._features][-K:]
        if len(hist) < K or len(feats) < K:
            raise RuntimeError(f"{self.method} needs {K} frames of history, has {len(hist)} / {len(feats)}")
        pos = agent_pos(np.stack([h.T_world_hand for h in hist]), np.stack([h.finger_q for h in hist]))
        cond = self.model.global_cond(
            torch.stack(feats)[None], torch.as_tensor(pos, dtype=torch.float32)[None]
        )
        actions = self.model.sample(cond, self.generator)[0].double().numpy()
        start = K - 1  # action k is the state of frame k + 1: index n_obs-1 is the next frame
        return pos_to_poses(actions[start : start + self.n_action])


def diffusion_policy(
    model: DiffusionPolicyModel, pool, policy_config, seed: int = 0, threads: int | None = 1
):
    """A `DynamicGrasp` driven by the DP / DP3 model (replan_every = n_action)."""
    from dexh2r_policy.dynamic_grasp import DynamicGrasp

    planner = DiffusionPlanner(model, threads=threads, seed=seed)
    pc = replace(policy_config, replan_every=model.config.n_action)
    return DynamicGrasp(planner, pool, pc)


def bench_diffusion(
    model: DiffusionPolicyModel,
    steps: int = 200,
    seed: int = 0,
    pool_size: int = 500,
    cloud_points: int = 4096,
) -> dict[str, float]:
    """DynamicGrasp step latency (ms) with a DP / DP3 planner on a synthetic moving object (as
    `dynamic_grasp.bench_step`: every step samples and encodes the new cloud; every n_action-th
    step samples a plan): p50 / p95 / max, and the re-plan steps' p95."""
    from scipy.spatial.transform import Rotation

    from dexh2r_policy.dynamic_grasp import DynamicGraspConfig, HandState, bench_loop, synthetic_pool

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    c = DynamicGraspConfig(align_after_frames=10**9)
    pool = synthetic_pool(rng, seed, pool_size, 22)
    policy = diffusion_policy(model, pool, c, seed=seed)
    cloud = rng.normal(scale=0.04, size=(cloud_points, 3))
    T_hand = Rotation.from_rotvec([1.5, 0.2, 0.4]).as_matrix()
    hand = HandState(np.eye(4), np.zeros(22))
    hand.T_world_hand[:3, :3] = T_hand
    hand.T_world_hand[:3, 3] = [0.4, 0.0, 0.5]
    return bench_loop(
        policy,
        cloud,
        hand,
        steps,
        c.frame_dt_s,
        lambda i: [0.7, 0.05 * np.sin(i / 10), 0.45],
        # The kinematic hand follows the target (kept sane if an untrained model wanders off).
        follow=lambda tgt: HandState(tgt.T_world_hand, np.clip(tgt.finger_q, -0.5, 1.6)),
    )


def bench_dp3(
    dp3_checkpoint: str | None = "checkpoints/dp3_small.pt",
    dp_checkpoint: str | None = "checkpoints/dp_small.pt",
    steps: int = 200,
) -> dict:
    """`dexh2r bench policy`'s DP / DP3 part: `dp3_step_ms_p95` (+ p50, plan p95, params) and the
    same for DP (`dp_*`), each with its checkpoint when the file exists, else freshly initialised
    weights of the small configs (latency does not depend on the weights)."""
    from pathlib import Path

    from dexh2r_policy.diffusion.model import n_params
    from dexh2r_policy.diffusion.train import load_diffusion_config
    from dexh2r_policy.train import resolve_data_path

    result: dict[str, float | int | str] = {}
    for key, ckpt, config in (
        ("dp3", dp3_checkpoint, "policy/dp3_small.yaml"),
        ("dp", dp_checkpoint, "policy/dp_small.yaml"),
    ):
        path = resolve_data_path(ckpt) if ckpt else None
        if path is not None and Path(path).is_file():
            from dexh2r_policy.diffusion.model import load_diffusion

            model = load_diffusion(path, key)[0]
            result[f"{key}_weights"] = str(path)
        else:
            cfg = load_diffusion_config(config)
            model = DiffusionPolicyModel(cfg.model, key).eval()
            result[f"{key}_weights"] = "untrained"
        r = bench_diffusion(model, steps=steps)
        result[f"{key}_step_ms_p95"] = r["step_ms_p95"]
        result[f"{key}_step_ms_p50"] = r["step_ms_p50"]
        result[f"{key}_plan_ms_p95"] = r["plan_ms_p95"]
        result[f"{key}_params_m"] = n_params(model) / 1e6
        result[f"{key}_inference_steps"] = model.config.num_inference_steps
    result["threads"] = torch.get_num_threads()
    return result
