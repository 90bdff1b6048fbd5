"""MotionNet: DynamicGrasp's autoregressive approach-motion network (ROS-free, torch).

Method doc §3.2 (the official `models/model/motion_net.py`, after GOAL's MNet): from the last
P = 5 hand states and object clouds, predict the next F = 10 hand poses; every input is expressed
in the hand frame.

Inputs (B = batch, P = `n_past`, N = `n_points`, S = `n_surface`, J = 22 finger joints):

- `hist` [B, P, 3+6+J]: past hand states in the current hand frame: translation, 6-D rotation
  (first two rows of R), finger joints (absolute);
- `obj_feat` [B, P, D]: per-frame object features, `encode_points` of cloud k expressed in the
  hand frame *of frame k* (or `obj_points` [B, P, N, 3], encoded inside);
- `geo` [B, 3, S, 3]: in the current hand frame, the hand surface-point velocity
  (pts_t - pts_t-1), the current points, and the offset to the target grasp's points.

Output `forward(...) -> [B, F, 3+6+J]`: per future frame k, the pose relative to the current hand
(Δt in the current frame, ΔR as 6-D, Δq): `T_k = T_cur · [ΔR_k | Δt_k]`, `q_k = q_cur + Δq_k`
(`compose`). Unlike the official code (inputs aligned, deltas applied in world, method doc §7.8),
inputs and outputs share the current hand frame.

Per-frame feature caching: the paper aligns all P clouds to the current hand frame, so every
plan re-encodes five clouds. Here cloud k is expressed in the hand frame of its own frame k (for
the newest frame that is the current frame, as in the paper); its feature then never changes,
so each new frame is encoded once (`MotionNetPlanner` caches), and the hand history (relative
poses of frames k to the current one) tells the network where those frames sit.

Architecture (`MotionNetConfig`): PointNet encoder (shared MLP `point_dims` with BatchNorm, max
pool, optional 3x3 STN as the paper's vanilla PointNet), input BatchNorm, residual blocks
(`fc(Fin→inner) BN LReLU fc(inner→Fout) BN` + skip, LReLU); block 2 also sees the normalised
input (the paper's skip-concat); heads: rot6d + joints, translation. `paper()`: point dims
(64, 128, 1024) + STN, 1024 points, 225 surface points, trunk (2048, 1024, 1024, 2048), inner 256
(≈ 35 M parameters, the paper's size). `small()`: (32, 64, 128), 256 points, 64 surface points,
trunk (256, 256, 256, 256), inner 128.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexh2r_policy.checkpoint import export_half, model_state, read_checked, write_checkpoint
from dexh2r_policy.models.geometry import (
    from_frame,
    inverse,
    matrix_to_rot6d,
    rot6d_to_matrix,
    rot6d_to_matrix_torch,
    to_frame,
)

CHECKPOINT_FORMAT = "dexh2r-motionnet"
CHECKPOINT_VERSION = 1
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, unreadable, another model); names the file."""


@dataclass(frozen=True)
class MotionNetConfig:
    n_past: int = 5
    n_future: int = 10
    n_fingers: int = 22
    n_points: int = 256  # object cloud points per frame
    n_surface: int = 64  # hand surface points (the paper: 225)
    point_dims: tuple[int, ...] = (32, 64, 128)  # PointNet shared MLP; the last is the feature size
    point_stn: bool = False  # 3x3 spatial transformer (the paper's vanilla PointNet)
    trunk: tuple[int, ...] = (
        256,
        256,
        256,
        256,
    )  # residual block outputs (the paper: 2048, 1024, 1024, 2048)
    block_inner: int = 128  # residual block bottleneck (the paper: 256)
    dropout: float = 0.0  # the paper's optional dropout (off)
    robot: str = "ur5_shadow"  # hand whose surface points are inputs
    surface_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_past", "n_future", "n_fingers", "n_points", "n_surface", "block_inner"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_past < 2:
            raise ValueError(f"n_past: need at least 2 frames (velocity), got {self.n_past}")
        if len(self.point_dims) < 1 or len(self.trunk) < 2:
            raise ValueError("point_dims needs >= 1 layer and trunk >= 2 blocks")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    @property
    def state_dim(self) -> int:
        return 9 + self.n_fingers

    @property
    def feature_dim(self) -> int:
        return self.point_dims[-1]

    @property
    def input_dim(self) -> int:
        return self.n_past * (self.state_dim + self.feature_dim) + 9 * self.n_surface

    @classmethod
    def paper(cls) -> MotionNetConfig:
        return cls(
            n_points=1024,
            n_surface=225,
            point_dims=(64, 128, 1024),
            point_stn=True,
            trunk=(2048, 1024, 1024, 2048),
            block_inner=256,
        )

    @classmethod
    def small(cls) -> MotionNetConfig:
        return cls()


# ---- network -------------------------------------------------------------------------------------


class _SharedMLP(nn.Module):
    """Per-point MLP ([B, N, C] -> [B, N, C']), Linear + BatchNorm + ReLU per layer (a Linear on
    the points is the 1x1 Conv1d of PointNet, and faster on a CPU)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N = x.shape[:2]
        x = x.reshape(B * N, -1)
        for fc, bn in zip(self.fcs, self.bns, strict=True):
            x = torch.relu(bn(fc(x)))
        return x.view(B, N, -1)


class PointEncoder(nn.Module):
    """PointNet: [B, N, 3] -> [B, D] (shared MLP, max pool; optional 3x3 STN on the input)."""

    def __init__(self, dims: tuple[int, ...], stn: bool = False) -> None:
        super().__init__()
        self.stn = None
        if stn:
            self.stn_feat = _SharedMLP((3, *dims))
            self.stn = nn.Sequential(
                nn.Linear(dims[-1], 512),
                nn.ReLU(inplace=True),
                nn.Linear(512, 256),
                nn.ReLU(inplace=True),
                nn.Linear(256, 9),
            )
            nn.init.zeros_(self.stn[-1].weight)
            nn.init.zeros_(self.stn[-1].bias)
        self.mlp = _SharedMLP((3, *dims))
        self.out_dim = dims[-1]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points  # [B, N, 3]
        if self.stn is not None:
            A = self.stn(self.stn_feat(x).amax(dim=1)).view(-1, 3, 3) + torch.eye(
                3, device=x.device, dtype=x.dtype
            )
            x = torch.bmm(x, A.transpose(1, 2))
        return self.mlp(x).amax(dim=1)


class ResBlock(nn.Module):
    """fc(Fin→inner) BN LReLU fc(inner→Fout) BN, plus skip (LReLU(fc) when Fin != Fout), LReLU."""

    def __init__(self, fin: int, fout: int, inner: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(fin, inner), nn.BatchNorm1d(inner)
        self.fc2, self.bn2 = nn.Linear(inner, fout), nn.BatchNorm1d(fout)
        self.skip = nn.Linear(fin, fout) if fin != fout else None
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.act(self.skip(x))
        h = self.drop(self.act(self.bn1(self.fc1(x))))
        return self.act(self.bn2(self.fc2(h)) + skip)


class MotionNet(nn.Module):
    """See the module docstring for shapes."""

    def __init__(self, config: MotionNetConfig) -> None:
        super().__init__()
        c = self.config = config
        self.encoder = PointEncoder(tuple(c.point_dims), c.point_stn)
        self.bn_in = nn.BatchNorm1d(c.input_dim)
        blocks = [ResBlock(c.input_dim, c.trunk[0], c.block_inner, c.dropout)]
        blocks.append(ResBlock(c.input_dim + c.trunk[0], c.trunk[1], c.block_inner, c.dropout))
        for a, b in zip(c.trunk[1:-1], c.trunk[2:], strict=True):
            blocks.append(ResBlock(a, b, c.block_inner, c.dropout))
        self.blocks = nn.ModuleList(blocks)
        self.head_rq = nn.Linear(c.trunk[-1], (6 + c.n_fingers) * c.n_future)
        self.head_t = nn.Linear(c.trunk[-1], 3 * c.n_future)
        for head in (self.head_rq, self.head_t):  # start at "stay where you are"
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)
        self.register_buffer("identity6", torch.tensor(IDENTITY_6D), persistent=False)

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """[B, N, 3] clouds (each in its own frame's hand frame) -> [B, D] features."""
        return self.encoder(points)

    def forward(
        self,
        hist: torch.Tensor,
        obj_feat: torch.Tensor | None,
        geo: torch.Tensor,
        obj_points: torch.Tensor | None = None,
        cloud_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hist [B, P, 9+J], obj_feat [B, P, D] (or obj_points [B, P, N, 3], encoded here; or
        unique clouds obj_points [U, N, 3] with cloud_index [B, P] into them), geo [B, 3, S, 3]
        -> [B, F, 9+J] (Δt, 6-D ΔR, Δq)."""
        B = hist.shape[0]
        if obj_feat is None:
            if obj_points is None:
                raise ValueError("MotionNet.forward: give obj_feat or obj_points")
            if cloud_index is not None:
                obj_feat = self.encode_points(obj_points)[cloud_index]
            else:
                P = obj_points.shape[1]
                obj_feat = self.encode_points(obj_points.reshape(B * P, *obj_points.shape[2:])).view(B, P, -1)
        x = torch.cat([hist.reshape(B, -1), obj_feat.reshape(B, -1), geo.reshape(B, -1)], dim=1)
        x = self.bn_in(x)
        h = self.blocks[0](x)
        h = self.blocks[1](torch.cat([x, h], dim=1))
        for block in self.blocks[2:]:
            h = block(h)
        F, J = self.config.n_future, self.config.n_fingers
        rq = self.head_rq(h).view(B, F, 6 + J)
        t = self.head_t(h).view(B, F, 3)
        return torch.cat([t, rq[..., :6] + self.identity6, rq[..., 6:]], dim=-1)

    def forward_points(self, hist: torch.Tensor, obj_points: torch.Tensor, geo: torch.Tensor) -> torch.Tensor:
        """As `forward`, with clouds [B, P, N, 3] encoded here (training)."""
        return self(hist, None, geo, obj_points=obj_points)


def motion_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    w_trans: float = 1.0,
    w_rot: float = 1.0,
    w_joints: float = 1.0,
    scale: float = 130.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's L1 (×130) on the future states, here in the current hand frame; the predicted
    6-D rotation is orthonormalised first. pred/target [B, F, 9+J] -> (loss, parts)."""
    R = rot6d_to_matrix_torch(pred[..., 3:9])
    rot6 = R[..., :2, :].reshape(*R.shape[:-2], 6)
    l_t = (pred[..., :3] - target[..., :3]).abs().mean()
    l_r = (rot6 - target[..., 3:9]).abs().mean()
    l_q = (pred[..., 9:] - target[..., 9:]).abs().mean()
    loss = scale * (w_trans * l_t + w_rot * l_r + w_joints * l_q)
    return loss, {"trans": float(l_t.detach()), "rot": float(l_r.detach()), "joints": float(l_q.detach())}


# ---- features (numpy; shared by training and run time) ------------------------------------------


def hand_history(T_world_hand: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
    """Past states (T [P, 4, 4], q [P, J], last = current) -> [P, 9+J] in the current hand frame."""
    rel = inverse(T_world_hand[-1])[None] @ T_world_hand
    return np.concatenate([rel[:, :3, 3], matrix_to_rot6d(rel[:, :3, :3]), finger_q], axis=1).astype(
        np.float32
    )


def hand_geometry(
    T_prev: np.ndarray,
    pts_prev: np.ndarray,
    T_cur: np.ndarray,
    pts_cur: np.ndarray,
    T_target: np.ndarray,
    pts_target: np.ndarray,
) -> np.ndarray:
    """[3, S, 3]: surface-point velocity, current points, offset to the target grasp's points, all
    in the current hand frame. pts_* [S, 3] are in their own hand root frame (`HandSurface`)."""
    prev_in_cur = to_frame(T_cur, from_frame(T_prev, pts_prev))
    target_in_cur = to_frame(T_cur, from_frame(T_target, pts_target))
    return np.stack([pts_cur - prev_in_cur, pts_cur, target_in_cur - pts_cur]).astype(np.float32)


def cloud_in_hand(T_world_hand: np.ndarray, cloud_world: np.ndarray) -> np.ndarray:
    """An object cloud [N, 3] (world) in the hand frame of the same frame (what gets encoded)."""
    return to_frame(T_world_hand, cloud_world).astype(np.float32)


def future_targets(
    T_cur: np.ndarray, q_cur: np.ndarray, T_future: np.ndarray, q_future: np.ndarray
) -> np.ndarray:
    """Training labels [F, 9+J]: future poses relative to the current hand, joint deltas."""
    rel = inverse(T_cur)[None] @ T_future
    return np.concatenate(
        [rel[:, :3, 3], matrix_to_rot6d(rel[:, :3, :3]), q_future - q_cur[None]], axis=1
    ).astype(np.float32)


def compose(T_cur: np.ndarray, q_cur: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network output [F, 9+J] -> (T_world_hand [F, 4, 4], finger_q [F, J]) (inverse of `future_targets`)."""
    out = np.asarray(out, dtype=np.float64)
    rel = np.repeat(np.eye(4)[None], len(out), axis=0)
    rel[:, :3, :3] = rot6d_to_matrix(out[:, 3:9])
    rel[:, :3, 3] = out[:, :3]
    return np.asarray(T_cur, dtype=np.float64)[None] @ rel, np.asarray(q_cur)[None] + out[:, 9:]


# ---- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: MotionNet, **extra: Any) -> Path:
    """Atomic write: {'format', 'version', 'model_config', 'model', **extra}."""
    return write_checkpoint(path, model_state(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, model, **extra))


def export_weights(src: str | Path, dst: str | Path) -> Path:
    """A small deployable copy of a training checkpoint: the weights in float16, the model and
    training config, data hash and step kept, the optimizer state dropped (~1/6 of the size).
    `load_motionnet` reads it back into a float32 model."""
    return export_half(read_checkpoint(src), src, dst, drop=("optimizer", "rng"))


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, checked (CheckpointError names the file and the fault)."""
    return read_checked(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "MotionNet", CheckpointError)


def load_motionnet(path: str | Path) -> tuple[MotionNet, dict]:
    """(model in eval mode, checkpoint dict) from a checkpoint file."""
    from dexh2r_core.config import ConfigError, from_dict

    ckpt = read_checkpoint(path)
    try:
        cfg = from_dict(MotionNetConfig, ckpt["model_config"], source=f"{path}:model_config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    model = MotionNet(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model config ({exc})") from exc
    return model.eval(), ckpt
