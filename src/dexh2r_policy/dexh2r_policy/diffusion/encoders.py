"""Observation encoders of the diffusion baselines, and DP's depth renderer.

DP3 (Ze et al. 2024, `PointNetEncoderXYZ` + the state MLP, as DexH2R's `dp3_ours.yaml`):

    DP3Encoder(dims=(64, 128, 256), out_dim=64):  clouds [B, N, 3] -> [B, 64]
        per point Linear + LayerNorm + ReLU (3 -> 64 -> 128 -> 256), max over points,
        Linear(256 -> 64) + LayerNorm.
    StateMLP(28, (64, 64)): agent_pos [B, 28] -> [B, 64]  (Linear, ReLU, Linear)

DP (the image-conditioned Diffusion Policy): the sim episodes store no images, so DP sees a depth
image *rendered* from what the episode does store (`render_depth`): the object cloud of the frame
and the robot hand's surface points at the hand state of that frame (the recorded hand in
training, the policy-driven hand in evaluation), through one fixed virtual pinhole camera
(`VirtualCamera`). Two channels: normalised inverse depth (near = 1, far or empty = 0) and an
object mask (1 where the nearest point is the object's: the stand-in for the colour image that
tells the object from the hand in the paper's RGB-D input). The giver's hand is not rendered.

    DepthCNN(channels=(16, 32, 64, 64), out_dim=64): images [B, C, H, W] -> [B, 64]
        per stage Conv (5x5 first, then 3x3, stride 2) + GroupNorm + ReLU; flatten; Linear +
        LayerNorm. A small stand-in for the paper's ResNet-18 with GroupNorm (11 M parameters,
        too slow to train on 2 CPU cores); flattening keeps where things are in the image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class DP3Encoder(nn.Module):
    """[B, N, 3] -> [B, out_dim] (see the module docstring)."""

    def __init__(self, dims: tuple[int, ...] = (64, 128, 256), out_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise((3, *dims)):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.proj = nn.Sequential(nn.Linear(dims[-1], out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mlp(points).amax(dim=1))


class StateMLP(nn.Module):
    """[B, D] -> [B, dims[-1]]: Linear, ReLU between layers, no activation at the end."""

    def __init__(self, in_dim: int, dims: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise((in_dim, *dims))):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DepthCNN(nn.Module):
    """[B, C, H, W] -> [B, out_dim] (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        channels: tuple[int, ...] = (16, 32, 64, 64),
        out_dim: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        h, w = height, width
        for i, (a, b) in enumerate(itertools.pairwise((in_channels, *channels))):
            k = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(a, b, k, stride=2, padding=k // 2),
                nn.GroupNorm(min(8, b // 4) or 1, b),
                nn.ReLU(),
            ]
            h, w = (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Sequential(
            nn.Flatten(), nn.Linear(channels[-1] * h * w, out_dim), nn.LayerNorm(out_dim)
        )
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(images))


# ---- DP's depth image -------------------------------------------------------------------------


@dataclass(frozen=True)
class VirtualCamera:
    """A fixed pinhole camera in world (the sim cell's world frame), looking from `eye` at
    `target` with world +z up; the optical frame is OpenCV's (x right, y down, z forward).
    The defaults see the sim episodes' handover workspace (hand and object within x 0.15-1.1 m,
    y -0.25-0.35 m, z 0.1-0.75 m) from the side, 1.3 m away, 75 degrees across."""

    width: int = 96
    height: int = 64
    fov_x_deg: float = 75.0
    eye: tuple[float, float, float] = (0.6, -1.25, 0.85)
    target: tuple[float, float, float] = (0.6, 0.05, 0.42)
    near_m: float = 0.6
    far_m: float = 2.0
    splat: int = 1  # a point covers (2 splat + 1)^2 pixels

    def pose(self) -> np.ndarray:
        eye, target = np.asarray(self.eye, float), np.asarray(self.target, float)
        z = target - eye
        z /= np.linalg.norm(z)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        T = np.eye(4)
        T[:3, :3] = np.stack([x, y, z], axis=1)
        T[:3, 3] = eye
        return T

    def intrinsics(self) -> np.ndarray:
        f = (self.width / 2) / np.tan(np.radians(self.fov_x_deg) / 2)
        return np.array([[f, 0, (self.width - 1) / 2], [0, f, (self.height - 1) / 2], [0, 0, 1.0]])


def render_depth(object_points: np.ndarray, hand_points: np.ndarray, camera: VirtualCamera) -> np.ndarray:
    """[2, H, W] float32 image of world points: channel 0 normalised inverse depth of the nearest
    point ((far - z) / (far - near), clipped to [0, 1]; 0 where nothing is seen), channel 1 = 1 where
    that point is an object point. Points are z-buffered splats of (2 splat + 1)^2 pixels.
    Used by DP's training data and by its planner at run time (the same function)."""
    H, W, s = camera.height, camera.width, camera.splat
    obj = np.asarray(object_points, np.float64).reshape(-1, 3)
    hand = np.asarray(hand_points, np.float64).reshape(-1, 3)
    P = np.concatenate([obj, hand])
    label = np.concatenate([np.ones(len(obj)), np.zeros(len(hand))])
    T = camera.pose()
    pc = (P - T[:3, 3]) @ T[:3, :3]
    z = pc[:, 2]
    ok = (z > camera.near_m * 0.5) & np.isfinite(z)
    K = camera.intrinsics()
    u = np.round(K[0, 0] * pc[ok, 0] / z[ok] + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * pc[ok, 1] / z[ok] + K[1, 2]).astype(np.int64)
    z, label = z[ok], label[ok]
    zbuf = np.full(H * W, np.inf)
    for du in range(-s, s + 1):
        for dv in range(-s, s + 1):
            uu, vv = u + du, v + dv
            inb = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            np.minimum.at(zbuf, vv[inb] * W + uu[inb], z[inb])
    img = np.zeros((2, H * W), np.float32)
    seen = np.isfinite(zbuf)
    img[0, seen] = np.clip((camera.far_m - zbuf[seen]) / (camera.far_m - camera.near_m), 0.0, 1.0)
    # The object mask: pixels whose nearest depth equals an object point's splat depth.
    obj_z = np.full(H * W, np.inf)
    for du in range(-s, s + 1):
        for dv in range(-s, s + 1):
            uu, vv = u + du, v + dv
            inb = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H) & (label > 0.5)
            np.minimum.at(obj_z, vv[inb] * W + uu[inb], z[inb])
    img[1, seen & (obj_z <= zbuf + 1e-9)] = 1.0
    return img.reshape(2, H, W)
