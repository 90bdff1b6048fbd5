"""The grasp CVAE of DynamicGrasp's grasp-pose preparation (method doc §3.1; ROS-free, torch).

    model, ckpt = load_cvae("checkpoints/grasp_cvae_small.pt")
    pool = model.sample_pool(object_points, n=500)      # GraspPool, object frame, untested
    pool = sample_pool(object_points, n=500)             # the same with the default checkpoint

**Canonical frame** (the paper's `batch_transfer_hand_rot_to_obj`): global rotation is never
predicted. For a grasp (R, t) of an object whose surface samples have centre c, the network sees
the object cloud in the hand's orientation frame, `R^T (p - c)`, and predicts the hand root
translation in that frame, `t' = R^T (t - c)`, plus the 22 finger joints. At sampling time the
rotations are enumerated (the paper: 25 global x 20 self rotations about the object's longest
axis; here `grasps.pool.candidate_rotations`, the same 25 directions x 20 spins about the long
axis that made the training pools), each rotated cloud is decoded with one z ~ N(0, I), and the
grasp is un-rotated: T_obj_hand = [R | R t' + c].

**Network** (`GraspCVAEConfig`; `paper()` is the official size, `small()` the CPU one):

- `obj_encoder`, `hand_encoder`: PointNet (`motionnet.PointEncoder`: shared MLP `point_dims`,
  BatchNorm, max pool, optional 3x3 STN) -> D. The hand encoder (training only) reads the GT hand
  surface points posed in the canonical frame.
- encoder MLP [hand D | object D] -> `encoder` -> (mu, log sigma^2) in R^latent;
- decoder MLP [z | object D] -> `decoder` -> 25 = 3 translation + 22 joints, min-max normalised
  to [-1, 1] (translation bounds from the training data, joint bounds the hand's joint limits).

**Losses** (`cvae_losses`, the paper's `hand_loss`; weights `LossWeights`): pose MSE on the
normalised 25-d vector; hand surface point MSE (predicted vs GT points, m^2); penetration (per
sample the deepest hand point inside the object, nearest object point + normal test, mean over the
batch); contact attraction (mean distance to the object of the finger contact-candidate points
within `contact_threshold`, 2 cm); KL (sum over latent dims, mean over the batch).

The hand surface points come from `models.hand_surface.HandSurface` (its hand-only MuJoCo model,
points, links and couplings); `HandSurfaceTorch` evaluates that same kinematic tree in torch so
the point losses are differentiable (tested against `HandSurface.points`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch
from torch import nn

from dexh2r_policy.checkpoint import model_state, read_checked, write_checkpoint
from dexh2r_policy.motionnet import CheckpointError, PointEncoder

CHECKPOINT_FORMAT = "dexh2r-grasp-cvae"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = "checkpoints/grasp_cvae_small.pt"
# Finger links whose surface points attract to the object (the paper's contact candidates:
# proximal / middle / distal phalanges, thumb middle / distal, the little finger's metacarpal).
CONTACT_LINK_SUFFIXES = ("proximal", "middle", "distal", "lfmetacarpal")
CONTACT_LINK_EXCLUDE = ("thproximal",)


class CVAEInputError(ValueError):
    """An object cloud the CVAE cannot use (wrong shape, NaN / inf, too few points)."""


@dataclass(frozen=True)
class GraspCVAEConfig:
    n_fingers: int = 22
    latent: int = 64  # the paper: 128
    n_points: int = 256  # object cloud points per sample (the paper: 2048 of 4096)
    n_surface: int = 256  # hand surface points of the losses and the hand encoder (0: all)
    point_dims: tuple[int, ...] = (32, 64, 256)  # PointNet shared MLP (the paper: 64, 128, 1024)
    point_stn: bool = False  # the paper's 3x3 STN
    encoder: tuple[int, ...] = (256, 256)  # the paper: 1024, 1024, 1024, 512, 512, 256
    decoder: tuple[int, ...] = (256, 256, 128)  # the paper: 1024, 1024, 1024, 512, 512, 256, 128, 64
    contact_threshold: float = 0.02  # m: contact candidates nearer than this attract (the paper: 2 cm)
    pen_neighbours: int = 3  # penetration test against this many nearest surface points (paper: 1)
    min_points: int = 32  # sample_pool refuses clouds with fewer finite points
    robot: str = "ur5_shadow"
    surface_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_fingers", "latent", "n_points", "min_points", "pen_neighbours"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_surface < 0:
            raise ValueError(f"n_surface: must be >= 0 (0: all points), got {self.n_surface}")
        if not self.point_dims or not self.encoder or not self.decoder:
            raise ValueError("point_dims, encoder and decoder need at least one layer each")
        if not self.contact_threshold > 0:
            raise ValueError(f"contact_threshold: must be positive, got {self.contact_threshold}")

    @property
    def out_dim(self) -> int:
        return 3 + self.n_fingers

    @classmethod
    def paper(cls) -> GraspCVAEConfig:
        return cls(
            latent=128,
            n_points=2048,
            n_surface=0,
            point_dims=(64, 128, 1024),
            point_stn=True,
            encoder=(1024, 1024, 1024, 512, 512, 256),
            decoder=(1024, 1024, 1024, 512, 512, 256, 128, 64),
        )

    @classmethod
    def small(cls) -> GraspCVAEConfig:
        return cls()


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights (`cvae.yaml`): pose x10000/B (B = 860: ~11.6 on the mean MSE), surface
    x10000, penetration x100, contact x1000, KL x10."""

    pose: float = 10.0
    surface: float = 10000.0
    pen: float = 100.0
    contact: float = 1000.0
    kl: float = 10.0


# ---- differentiable hand surface ---------------------------------------------------------------


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, np.asarray(q, dtype=np.float64))
    return out.reshape(3, 3)


class HandSurfaceTorch(nn.Module):
    """`HandSurface.points` in torch: finger joints [B, 22] -> surface points [B, S, 3] in the hand
    root frame, differentiable. The kinematic tree (body offsets, hinge axes and anchors), the
    points, their links and the couplings are read from the `HandSurface` (its compiled hand-only
    MuJoCo model), so there is one hand description; this only evaluates it in torch."""

    def __init__(self, hs) -> None:
        super().__init__()
        m = hs.model
        self.n_fingers = hs.n_fingers
        self.n_points = hs.n_points
        qadr_to_finger = {int(a): i for i, a in enumerate(hs.qadr)}
        needed: set[int] = set()
        for b in set(int(x) for x in hs.body):
            while b > 0:
                needed.add(b)
                b = int(m.body_parentid[b])
        self.bodies = sorted(needed)  # MuJoCo orders bodies parent before child
        slot = {0: 0}
        for k, b in enumerate(self.bodies):
            slot[b] = k + 1
        self.parent = [slot[int(m.body_parentid[b])] for b in self.bodies]
        self.joints: list[list[tuple[int, int]]] = []  # per body: (finger index, joint row)
        pos, rot, axes, anchors, q0 = [], [], [], [], []
        for b in self.bodies:
            pos.append(m.body_pos[b])
            rot.append(_quat_to_mat(m.body_quat[b]))
            rows = []
            for j in range(int(m.body_jntadr[b]), int(m.body_jntadr[b] + m.body_jntnum[b])):
                if m.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                    raise ValueError(f"HandSurfaceTorch: joint {m.joint(j).name} is not a hinge")
                adr = int(m.jnt_qposadr[j])
                if adr not in qadr_to_finger:
                    raise ValueError(f"HandSurfaceTorch: joint {m.joint(j).name} is not a finger joint")
                rows.append((qadr_to_finger[adr], len(axes)))
                axes.append(m.jnt_axis[j])
                anchors.append(m.jnt_pos[j])
                q0.append(m.qpos0[adr])
            self.joints.append(rows)
        self.couplings = list(hs.couplings)  # (joint, follows, ratio, offset)
        f64 = torch.float64
        self.register_buffer("body_pos", torch.tensor(np.array(pos), dtype=f64), persistent=False)
        self.register_buffer("body_rot", torch.tensor(np.array(rot), dtype=f64), persistent=False)
        self.register_buffer("axis", torch.tensor(np.array(axes).reshape(-1, 3), dtype=f64), persistent=False)
        self.register_buffer(
            "anchor", torch.tensor(np.array(anchors).reshape(-1, 3), dtype=f64), persistent=False
        )
        self.register_buffer("qpos0", torch.tensor(np.array(q0), dtype=f64), persistent=False)
        self.register_buffer("local", torch.tensor(hs.local, dtype=f64), persistent=False)
        self.point_slot = [slot[int(b)] for b in hs.body]
        self.register_buffer("point_body", torch.tensor(self.point_slot, dtype=torch.long), persistent=False)
        contact = contact_candidates(hs)
        self.register_buffer("contact_index", torch.tensor(contact, dtype=torch.long), persistent=False)
        self.float()

    def couple(self, q: torch.Tensor) -> torch.Tensor:
        if not self.couplings:
            return q
        q = q.clone()
        for joint, follows, ratio, offset in self.couplings:
            q[:, joint] = ratio * q[:, follows] + offset
        return q

    def forward(self, finger_q: torch.Tensor) -> torch.Tensor:
        """finger_q [B, 22] -> points [B, S, 3] (hand root frame)."""
        q = self.couple(finger_q)
        B = q.shape[0]
        dt = self.local.dtype
        eye = torch.eye(3, dtype=dt, device=q.device).expand(B, 3, 3)
        Rs = [eye]
        ps = [torch.zeros(B, 3, dtype=dt, device=q.device)]
        for k, rows in enumerate(self.joints):
            Rp, pp = Rs[self.parent[k]], ps[self.parent[k]]
            R = Rp @ self.body_rot[k]
            p = pp + Rp @ self.body_pos[k]
            for fi, row in rows:
                angle = q[:, fi] - self.qpos0[row]
                Rj = _axis_angle(self.axis[row], angle)  # [B, 3, 3]
                a = self.anchor[row]
                # rotation about the axis through the anchor (body frame): p' = p + R a - R Rj a
                p = p + R @ a - (R @ Rj) @ a
                R = R @ Rj
            Rs.append(R)
            ps.append(p)
        R_all = torch.stack(Rs, dim=1)  # [B, K+1, 3, 3]
        p_all = torch.stack(ps, dim=1)
        Rb = R_all[:, self.point_body]  # [B, S, 3, 3]
        return p_all[:, self.point_body] + (Rb @ self.local[None, :, :, None])[..., 0]


def contact_candidates(hs, min_facing: float = 0.2) -> np.ndarray:
    """Indices of `hs`'s points that are contact candidates: on the paper's contact links
    (`CONTACT_LINK_SUFFIXES`) and on the palmar side, i.e. at the pool synthesis' open pre-shape
    their normal faces the grasp region (4 cm in front of the palm's grasp centre) by more than
    `min_facing` (cosine). Of 256 points, 75 (3-6 per link): the finger pads, not their backs."""
    from dexh2r_policy.grasps.pool import PoolConfig, hand_vector

    pc = PoolConfig()
    robot = hs.robot
    q = hand_vector(robot, pc.open_pose)[[robot.hand_joint_names.index(n) for n in hs.finger_names]]
    P, N = hs.points_normals(q)
    centre = np.asarray(pc.grasp_centre) + 0.04 * np.asarray(pc.palm_normal)
    v = centre - P
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    links = [robot.hand_surface_points.links[k] for k in _link_index(hs)]
    on_link = np.array(
        [n.endswith(CONTACT_LINK_SUFFIXES) and not n.endswith(CONTACT_LINK_EXCLUDE) for n in links]
    )
    return np.flatnonzero(on_link & ((N * v).sum(axis=1) > min_facing))


def _link_index(hs) -> np.ndarray:
    """The link index (into `robot.hand_surface_points.links`) of each of `hs`'s points."""
    sp = hs.robot.hand_surface_points
    m = hs.model
    from dexh2r_policy.grasps.stability import HAND_PREFIX

    name_of = {m.body(HAND_PREFIX + name).id: k for k, name in enumerate(sp.links)}
    return np.array([name_of[int(b)] for b in hs.body])


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotations [B, 3, 3] about a unit axis [3] by angles [B] (Rodrigues)."""
    x, y, z = axis
    zero = torch.zeros((), dtype=axis.dtype, device=axis.device)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero]).view(3, 3)
    s = torch.sin(angle)[:, None, None]
    c = torch.cos(angle)[:, None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + s * K + (1.0 - c) * (K @ K)


# ---- network -------------------------------------------------------------------------------------


def _mlp(dims: tuple[int, ...], out: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    if out is not None:
        layers.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*layers)


class GraspCVAE(nn.Module):
    """See the module docstring. Buffers hold the normalisation bounds (saved with the weights)."""

    def __init__(self, config: GraspCVAEConfig, joint_lower=None, joint_upper=None) -> None:
        super().__init__()
        c = self.config = config
        D = c.point_dims[-1]
        self.obj_encoder = PointEncoder(tuple(c.point_dims), c.point_stn)
        self.hand_encoder = PointEncoder(tuple(c.point_dims), c.point_stn)
        self.encoder = _mlp((2 * D, *c.encoder))
        self.mu = nn.Linear(c.encoder[-1], c.latent)
        self.logvar = nn.Linear(c.encoder[-1], c.latent)
        self.decoder = _mlp((c.latent + D, *c.decoder), c.out_dim)
        lo = torch.full((c.n_fingers,), -1.0) if joint_lower is None else torch.as_tensor(joint_lower)
        hi = torch.full((c.n_fingers,), 1.0) if joint_upper is None else torch.as_tensor(joint_upper)
        self.register_buffer("q_lo", lo.float().clone())
        self.register_buffer("q_hi", hi.float().clone())
        self.register_buffer("t_lo", torch.tensor([-0.2, -0.2, -0.3]))
        self.register_buffer("t_hi", torch.tensor([0.2, 0.2, 0.1]))
        self._kin: HandSurfaceTorch | None = None

    # -- normalisation --
    def set_translation_bounds(self, lo, hi) -> None:
        self.t_lo.copy_(torch.as_tensor(lo, dtype=torch.float32))
        self.t_hi.copy_(torch.as_tensor(hi, dtype=torch.float32))

    def normalise(self, t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """(t' [B, 3], q [B, 22]) -> x [B, 25] in [-1, 1] (inside the bounds)."""
        lo = torch.cat([self.t_lo, self.q_lo])
        hi = torch.cat([self.t_hi, self.q_hi])
        return 2.0 * (torch.cat([t, q], dim=-1) - lo) / (hi - lo) - 1.0

    def denormalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.cat([self.t_lo, self.q_lo])
        hi = torch.cat([self.t_hi, self.q_hi])
        v = (x + 1.0) * 0.5 * (hi - lo) + lo
        return v[..., :3], v[..., 3:]

    # -- parts --
    def encode_object(self, points: torch.Tensor) -> torch.Tensor:
        return self.obj_encoder(points)

    def decode(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, cond], dim=-1))

    def forward(
        self, obj_points: torch.Tensor, hand_points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: obj_points [B, N, 3], GT hand points [B, S, 3] (canonical frame) ->
        (x_hat [B, 25] normalised, mu [B, latent], logvar [B, latent])."""
        cond = self.encode_object(obj_points)
        h = self.encoder(torch.cat([self.hand_encoder(hand_points), cond], dim=-1))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-20.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, cond), mu, logvar

    def kinematics(self) -> HandSurfaceTorch:
        """The differentiable hand surface of `config.robot` (built once, on the model's device)."""
        if self._kin is None:
            from dexh2r_policy.models.hand_surface import HandSurface

            n = self.config.n_surface or None
            hs = HandSurface.for_robot(self.config.robot, n, self.config.surface_seed)
            self._kin = HandSurfaceTorch(hs).to(self.q_lo.device)
        return self._kin

    # -- sampling --
    @torch.no_grad()
    def sample_canonical(
        self, clouds: torch.Tensor, generator: torch.Generator | None = None, chunk: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """clouds [M, N, 3] (each already in its hand-rotation frame) -> (t' [M, 3], q [M, 22]),
        one z ~ N(0, I) per cloud; joints clamped to the limits."""
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(clouds), chunk):
            cond = self.encode_object(clouds[i : i + chunk])
            z = torch.randn(len(cond), self.config.latent, generator=generator).to(cond)
            out.append(self.decode(z, cond))
        self.train(was)
        x = torch.cat(out) if out else torch.zeros(0, self.config.out_dim)
        t, q = self.denormalise(x)
        return t, torch.maximum(torch.minimum(q, self.q_hi), self.q_lo)

    def sample_pool(
        self,
        object_points: np.ndarray,
        n: int = 500,
        *,
        object_id: str = "cvae",
        long_axis: np.ndarray | None = None,
        seed: int = 0,
    ):
        """`n` grasps for an object cloud [M, 3] (object frame) -> `GraspPool` (object frame,
        the pool files' format; untested: `stable` False, `pen_depth` / `displacement` NaN,
        `contacts` -1, `info['tested']` False; DynamicGrasp uses every grasp of such a pool).

        Rotations: `candidate_rotations` about the cloud's long axis (`principal_axis`, or
        `long_axis`), n <= 500 spread evenly over the 25 x 20 grid, more cycle through it."""
        from dexh2r_core.pointcloud import sample_fixed
        from dexh2r_policy.grasps.pool import GraspPool, PoolConfig, candidate_rotations, subset_indices

        c = self.config
        pts = check_cloud(object_points, c.min_points)
        if int(n) < 1:
            raise CVAEInputError(f"n: need at least one grasp, got {n}")
        centre = pts.mean(axis=0)
        axis = principal_axis(pts - centre) if long_axis is None else np.asarray(long_axis, float)
        rotations, _ = candidate_rotations(axis, PoolConfig())
        n_rot = len(rotations)
        idx = subset_indices(n_rot, n) if n <= n_rot else np.arange(n) % n_rot
        sub = sample_fixed(pts, c.n_points, "random", seed).astype(np.float64) - centre
        R = rotations[idx]
        clouds = torch.from_numpy(np.einsum("nj,mjk->mnk", sub, R).astype(np.float32))  # R^T p
        device = self.q_lo.device
        g = torch.Generator().manual_seed(int(seed))
        t_c, q = self.sample_canonical(clouds.to(device), g)
        t_c, q = t_c.double().cpu().numpy(), q.double().cpu().numpy()
        kin = self.kinematics()
        for joint, follows, ratio, offset in kin.couplings:
            q[:, joint] = ratio * q[:, follows] + offset
        T = np.repeat(np.eye(4)[None], len(idx), axis=0)
        T[:, :3, :3] = R
        T[:, :3, 3] = np.einsum("mij,mj->mi", R, t_c) + centre
        m = len(idx)
        return GraspPool(
            object_id=object_id,
            object_scale=1.0,
            finger_joint_names=tuple(finger_names(c.robot)),
            T_obj_hand=T,
            finger_q=q,
            stable=np.zeros((m, 6), bool),
            displacement=np.full((m, 6), np.nan),
            pen_depth=np.full(m, np.nan),
            contacts=np.full(m, -1, dtype=int),
            candidate=np.asarray(idx, dtype=int),
            info={"generator": "cvae", "tested": False, "seed": int(seed), "long_axis": axis.tolist()},
        )


def finger_names(robot_name: str) -> list[str]:
    from dexh2r_policy.models.hand_surface import HandSurface

    return list(HandSurface.for_robot(robot_name, 8, 0).finger_names)


def joint_limits(robot_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower / upper limits of the finger joints (rad, `finger_joint_names` order)."""
    from dexh2r_policy.grasps.stability import HAND_PREFIX
    from dexh2r_policy.models.hand_surface import HandSurface

    hs = HandSurface.for_robot(robot_name, 8, 0)
    m = hs.model
    rng = np.array([m.jnt_range[m.joint(HAND_PREFIX + n).id] for n in hs.finger_names])
    return rng[:, 0], rng[:, 1]


def build_model(config: GraspCVAEConfig) -> GraspCVAE:
    lo, hi = joint_limits(config.robot)
    return GraspCVAE(config, lo, hi)


# ---- input checks and geometry -------------------------------------------------------------------


def check_cloud(points, min_points: int = 32) -> np.ndarray:
    """A finite [M >= min_points, 3] float64 array, or CVAEInputError saying what is wrong."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CVAEInputError(f"object_points: not a numeric array ({exc})") from exc
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise CVAEInputError(f"object_points: expected shape [M, 3], got {list(pts.shape)}")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise CVAEInputError(
            f"object_points: {int(bad.sum())} of {len(pts)} points are NaN or inf "
            f"(first at row {int(np.flatnonzero(bad)[0])}); clean the cloud first"
        )
    if len(pts) < min_points:
        raise CVAEInputError(f"object_points: {len(pts)} points, the CVAE needs at least {min_points}")
    if np.ptp(pts, axis=0).max() < 1e-4:
        raise CVAEInputError("object_points: all points coincide (extent < 0.1 mm)")
    return pts


def principal_axis(points: np.ndarray) -> np.ndarray:
    """The cloud's longest principal axis (unit). Within a near-repeated eigenvalue (< 10 % apart)
    the eigenspace is spanned by z, then x, then y projected into it (the object library's rule,
    so a cube or a sphere gets an axis of its frame); the largest component is made positive."""
    P = np.asarray(points, float)
    w, V = np.linalg.eigh(np.cov((P - P.mean(0)).T))
    top = [V[:, 2]]
    for k in (1, 0):
        if w[k] > 0.9 * w[2]:
            top.append(V[:, k])
    if len(top) > 1:
        basis = np.stack(top, axis=1)
        for ref in (np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])):
            proj = basis @ (basis.T @ ref)
            if np.linalg.norm(proj) > 0.5:
                axis = proj / np.linalg.norm(proj)
                break
        else:
            axis = top[0]
    else:
        axis = top[0]
    return axis if axis[np.argmax(np.abs(axis))] > 0 else -axis


# ---- losses ------------------------------------------------------------------------------------


def cvae_losses(
    model: GraspCVAE,
    obj_points: torch.Tensor,
    obj_normals: torch.Tensor,
    hand_points: torch.Tensor,
    x_target: torch.Tensor,
    weights: LossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's `hand_loss` on one batch (canonical frame): obj_points / obj_normals [B, N, 3],
    GT hand points [B, S, 3] (`kinematics()` points of the GT joints + t'), x_target [B, 25]
    normalised. Returns (weighted total, unweighted terms: pose, surface, pen, contact, kl)."""
    w = weights or LossWeights()
    x_hat, mu, logvar = model(obj_points, hand_points)
    parts = point_losses(model, x_hat, obj_points, obj_normals, hand_points)
    parts["pose"] = torch.mean((x_hat - x_target) ** 2)
    parts["kl"] = -0.5 * torch.sum(1.0 + logvar - mu**2 - logvar.exp()) / len(mu)
    total = (
        w.pose * parts["pose"]
        + w.surface * parts["surface"]
        + w.pen * parts["pen"]
        + w.contact * parts["contact"]
        + w.kl * parts["kl"]
    )
    return total, parts


def point_losses(
    model: GraspCVAE,
    x_hat: torch.Tensor,
    obj_points: torch.Tensor,
    obj_normals: torch.Tensor,
    hand_points: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Surface MSE (when GT hand points are given), penetration and contact attraction of the
    predicted (normalised) grasps x_hat [B, 25]."""
    t, q = model.denormalise(x_hat)
    kin = model.kinematics()
    P = kin(q) + t[:, None, :]  # [B, S, 3] predicted hand points, canonical frame
    out = {}
    if hand_points is not None:
        out["surface"] = torch.mean(((P - hand_points) ** 2).sum(-1))
    out["pen"] = penetration(P, obj_points, obj_normals, model.config.pen_neighbours).amax(dim=1).mean()
    d = torch.cdist(P[:, kin.contact_index], obj_points).min(dim=-1).values
    dc = d
    close = (dc < model.config.contact_threshold).to(dc.dtype)
    out["contact"] = (dc * close).sum() / close.sum().clamp(min=1.0)
    return out


def penetration(
    P: torch.Tensor, obj_points: torch.Tensor, obj_normals: torch.Tensor, k: int = 3
) -> torch.Tensor:
    """Depth [B, S] (m, 0 outside) of hand points P [B, S, 3] inside an object given by surface
    points and outward normals [B, N, 3]. A point is inside when it is behind the tangent plane of
    each of its k nearest surface points, `(o - p) . n > 0`; its depth is the smallest of those
    point-to-plane distances. k = 1 with the Euclidean distance as depth is the paper's test; near
    an edge of a sparsely sampled box that test calls points above a face "inside" (its nearest
    sample lies on the side face), which scored the training pools' grasps (0.15 mm deep by the
    object's SDF) 19-28 mm deep on the boxes; k = 3 plane distances: 0-2 mm."""
    k = min(int(k), obj_points.shape[1])
    idx = torch.cdist(P, obj_points).topk(k, dim=-1, largest=False).indices  # [B, S, k]
    B, S = idx.shape[:2]
    flat = idx.reshape(B, S * k, 1).expand(-1, -1, 3)
    near = torch.gather(obj_points, 1, flat).view(B, S, k, 3)
    nrm = torch.gather(obj_normals, 1, flat).view(B, S, k, 3)
    plane = ((near - P[:, :, None, :]) * nrm).sum(-1)  # [B, S, k], > 0: behind the plane
    return plane.amin(dim=-1).clamp(min=0.0)


# ---- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: GraspCVAE, **extra: Any) -> Path:
    """Atomic write: {'format', 'version', 'model_config', 'model', **extra} (MotionNet's layout)."""
    return write_checkpoint(path, model_state(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, model, **extra))


def read_checkpoint(path: str | Path) -> dict:
    return read_checked(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "grasp CVAE", CheckpointError)


def load_cvae(path: str | Path = DEFAULT_CHECKPOINT) -> tuple[GraspCVAE, dict]:
    """(model in eval mode, checkpoint dict)."""
    from dexh2r_core.config import ConfigError, from_dict

    if not Path(path).is_absolute() and not Path(path).exists():
        from dexh2r_core.paths import repo_root

        if repo_root() is not None:
            path = repo_root() / path
    ckpt = read_checkpoint(path)
    try:
        cfg = from_dict(GraspCVAEConfig, ckpt["model_config"], source=f"{path}:model_config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    model = GraspCVAE(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model config ({exc})") from exc
    return model.eval(), ckpt


def sample_pool(
    object_points: np.ndarray,
    n: int = 500,
    model: GraspCVAE | None = None,
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    **kw,
):
    """`GraspCVAE.sample_pool` with `model`, or the model of `checkpoint` (the small one)."""
    if model is None:
        model = _cached_model(str(checkpoint))
    return model.sample_pool(object_points, n, **kw)


_MODELS: dict[str, GraspCVAE] = {}


def _cached_model(path: str) -> GraspCVAE:
    if path not in _MODELS:
        _MODELS[path] = load_cvae(path)[0]
    return _MODELS[path]


# ---- generator (dexh2r eval grasps) and bench ---------------------------------------------------


class CVAEGenerator:
    """`GraspGenerator` of `dexh2r eval grasps --generator cvae`: the object's library surface
    samples (4096, seed 0, as in training) -> `sample_pool` (n grasps, untested)."""

    name = "cvae"

    def __init__(self, model: GraspCVAE, seed: int = 0, surface_points: int = 4096) -> None:
        self.model = model
        self.seed = seed
        self.surface_points = surface_points

    def generate(self, obj, n: int) -> tuple[np.ndarray, np.ndarray]:
        from dexh2r_sim.objects import sample_surface_points

        points, _ = sample_surface_points(obj, n=self.surface_points, seed=0)
        pool = self.model.sample_pool(points, n, object_id=obj.id, seed=self.seed)
        return pool.T_obj_hand, pool.finger_q


def bench_cvae(
    checkpoint: str | Path | None = None,
    n: int = 500,
    repeats: int = 5,
    cloud_points: int = 4096,
    seed: int = 0,
) -> dict[str, float]:
    """Latency of a 500-grasp pool for a new object (`sample_pool` on a synthetic 4096-point
    cloud, whatever device torch defaults to: the CPU here), small config with the checkpoint's
    or fresh weights (the latency does not depend on them). One warm-up call, then `repeats`."""
    model = load_cvae(checkpoint)[0] if checkpoint else build_model(GraspCVAEConfig.small()).eval()
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(cloud_points, 3))
    cloud = v / np.linalg.norm(v, axis=1, keepdims=True) * np.array([0.03, 0.04, 0.08])
    model.sample_pool(cloud, n, seed=seed)  # warm-up (kinematics, allocator)
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        model.sample_pool(cloud + 0.001 * k, n, seed=seed + k)
        times.append((time.perf_counter() - t0) * 1000.0)
    t = np.array(times)
    return {
        "cvae_pool_ms": float(np.percentile(t, 50)),
        "cvae_pool_ms_p50": float(np.percentile(t, 50)),
        "cvae_pool_ms_p95": float(np.percentile(t, 95)),
        "cvae_pool_grasps": int(n),
        "cvae_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "cvae_decoder_params_m": sum(
            p.numel() for m in (model.obj_encoder, model.decoder) for p in m.parameters()
        )
        / 1e6,
        "threads": torch.get_num_threads(),
    }


__all__ = [
    "CVAEGenerator",
    "CVAEInputError",
    "GraspCVAE",
    "GraspCVAEConfig",
    "HandSurfaceTorch",
    "LossWeights",
    "bench_cvae",
    "build_model",
    "check_cloud",
    "cvae_losses",
    "load_cvae",
    "principal_axis",
    "read_checkpoint",
    "sample_pool",
    "save_checkpoint",
]
