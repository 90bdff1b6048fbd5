"""DP and DP3 as one conditional action-diffusion model (ROS-free, torch), and its checkpoints.

Both predict a horizon of H absolute hand states (the action = the next frame's `agent_pos`), from
n_obs observed frames; the first n_obs-1 actions overlap the past, the next n_action are executed
(Diffusion Policy's chunking, method doc §4):

    agent_pos [28] = qpos[:6] (root translation + axis-angle, world) ‖ qpos[8:30] (22 finger joints)
    DP3: obs = object cloud [n_obs, N, 3] (world, `sample_fixed`) + agent_pos [n_obs, 28]
         cond = ‖_k [DP3Encoder(cloud_k) 64 ‖ StateMLP(pos_k) 64]          -> [n_obs * 128]
    DP:  obs = rendered depth image [n_obs, 2, H, W] (`render_depth`) + agent_pos [n_obs, 28]
         cond = ‖_k [DepthCNN(image_k) 64 ‖ pos_k 28]                          -> [n_obs * 92]
    x0 = actions [B, H, 28] normalised to [-1, 1] per dimension (min/max of the training data;
         the cloud's xyz likewise for DP3) -> ConditionalUnet1D(x_t, t, cond) predicts x0
         (`prediction_type: sample`) or the noise.

Training loss: MSE between the network output and its target over the whole horizon; DP3 adds
the paper's auxiliary terms (`dp3_ours.py`, method doc §4) on the denoised prediction, after
un-normalising: a penetration loss (per sample the deepest hand surface point inside the object:
for its nearest object surface point, (p_obj - p_hand) · n_obj > 0, the official normal test,
as `eval_offline.Penetration` scores it) and an attraction loss (mean distance of the hand
surface points within `dis_threshold_m` = 0.2 m of the object), each weighted adaptively to
w · (L_main / 5) / L_aux (detached), w = 1. Hand surface points come from `HandSurface` (MuJoCo
forward kinematics at the *predicted* finger joints, not differentiated: the gradient reaches the
predicted root pose; the paper differentiates through the hand model's kinematics too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dexh2r_policy.checkpoint import export_half, read_checked, write_checkpoint
from dexh2r_policy.diffusion.encoders import DepthCNN, DP3Encoder, StateMLP, VirtualCamera
from dexh2r_policy.diffusion.scheduler import NoiseScheduler
from dexh2r_policy.diffusion.unet import ConditionalUnet1D

CHECKPOINT_FORMAT = "dexh2r-diffusion"
CHECKPOINT_VERSION = 1
METHODS = ("dp", "dp3")
ACTION_DIM = 28


@dataclass(frozen=True)
class DiffusionModelConfig:
    horizon: int = 8  # H actions predicted (DP3: 8, DP: 16)
    n_obs: int = 5  # observed frames (DP3: 5, DP: 2)
    n_action: int = 2  # executed actions per plan (DP3: 2, DP: 8)
    # DP3 point encoder / state MLP
    n_points: int = 256  # object cloud points per frame (sample_fixed; the paper: 4096)
    point_dims: tuple[int, ...] = (64, 128, 256)
    point_out: int = 64
    state_dims: tuple[int, ...] = (64, 64)
    # DP image encoder
    camera: VirtualCamera = field(default_factory=VirtualCamera)
    cnn_channels: tuple[int, ...] = (16, 32, 64, 64)
    image_feature: int = 64
    render_hand_points: int = 256  # hand surface points drawn into DP's depth image
    # UNet
    down_dims: tuple[int, ...] = (64, 128, 256)  # the paper: 512, 1024, 2048
    kernel_size: int = 5
    n_groups: int = 8
    step_embed: int = 64  # the paper: 128
    # noise scheduler
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    scheduler: Literal["ddim", "ddpm"] = "ddim"
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2"
    prediction_type: Literal["sample", "epsilon"] = "sample"
    clip_sample: bool = True
    # hand surface (auxiliary losses, DynamicGrasp's pool points)
    robot: str = "ur5_shadow"
    n_surface: int = 64
    surface_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("horizon", "n_obs", "n_action", "n_points", "point_out", "image_feature", "n_surface"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_obs - 1 + self.n_action > self.horizon:
            raise ValueError(
                f"n_obs - 1 + n_action = {self.n_obs - 1 + self.n_action} exceeds horizon {self.horizon}"
            )
        levels = len(self.down_dims)
        if levels < 1 or self.horizon % (2 ** (levels - 1)):
            raise ValueError(
                f"horizon {self.horizon} must be divisible by 2^(len(down_dims)-1) = {2 ** (levels - 1)}"
            )
        if any(d % self.n_groups for d in self.down_dims):
            raise ValueError(f"down_dims {self.down_dims} must be multiples of n_groups {self.n_groups}")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError("num_inference_steps: must be in [1, num_train_timesteps]")

    def noise_scheduler(self) -> NoiseScheduler:
        return NoiseScheduler(
            self.num_train_timesteps,
            self.beta_schedule,
            self.prediction_type,
            self.scheduler,
            self.clip_sample,
        )


@dataclass(frozen=True)
class AuxLossConfig:
    """DP3's auxiliary losses (`dp3_ours.py`); ignored by DP (the paper's DP is unmodified)."""

    enabled: bool = True
    w_pen: float = 1.0
    w_dis: float = 1.0
    dis_threshold_m: float = 0.2
    object_points: int = 512  # object surface points per object (of the 4096 with normals)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, unreadable, another method); names the file."""


def _limits(lo: torch.Tensor, hi: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) mapping [lo, hi] to [-1, 1]; a constant dimension is shifted to 0."""
    rng = hi - lo
    ok = rng > eps
    scale = torch.where(ok, 2.0 / rng.clamp_min(eps), torch.ones_like(rng))
    offset = torch.where(ok, -1.0 - lo * scale, -lo)
    return scale, offset


def rotvec_to_matrix_torch(r: torch.Tensor) -> torch.Tensor:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (Rodrigues, differentiable)."""
    theta = r.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = r / theta
    K = torch.zeros(*r.shape[:-1], 3, 3, dtype=r.dtype, device=r.device)
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    th = theta[..., None]
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(K)
    return eye + th.sin() * K + (1 - th.cos()) * (K @ K)


class DiffusionPolicyModel(nn.Module):
    """See the module docstring. `method` "dp3" (point cloud) or "dp" (depth image)."""

    def __init__(self, config: DiffusionModelConfig, method: str, aux: AuxLossConfig | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method: one of {METHODS}, got {method!r}")
        c = self.config = config
        self.method = method
        self.aux = aux or AuxLossConfig()
        if method == "dp3":
            self.obs_encoder: nn.Module = DP3Encoder(tuple(c.point_dims), c.point_out)
            self.state_mlp: nn.Module | None = StateMLP(ACTION_DIM, tuple(c.state_dims))
            per_frame = c.point_out + self.state_mlp.out_dim
        else:
            cam = c.camera
            self.obs_encoder = DepthCNN(2, cam.height, cam.width, tuple(c.cnn_channels), c.image_feature)
            self.state_mlp = None
            per_frame = c.image_feature + ACTION_DIM
        self.global_cond_dim = c.n_obs * per_frame
        self.unet = ConditionalUnet1D(
            ACTION_DIM, self.global_cond_dim, tuple(c.down_dims), c.kernel_size, c.n_groups, c.step_embed
        )
        # Normaliser statistics (fitted on the training data, saved with the weights).
        self.register_buffer("pos_lo", -torch.ones(ACTION_DIM))
        self.register_buffer("pos_hi", torch.ones(ACTION_DIM))
        self.register_buffer("cloud_lo", -torch.ones(3))
        self.register_buffer("cloud_hi", torch.ones(3))
        self.scheduler = c.noise_scheduler()
        self._aux_objects: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hand_surface = None

    # -- normalisation --
    def set_normalizer(self, pos_lo, pos_hi, cloud_lo=None, cloud_hi=None) -> None:
        self.pos_lo.copy_(torch.as_tensor(pos_lo, dtype=torch.float32))
        self.pos_hi.copy_(torch.as_tensor(pos_hi, dtype=torch.float32))
        if cloud_lo is not None:
            self.cloud_lo.copy_(torch.as_tensor(cloud_lo, dtype=torch.float32))
            self.cloud_hi.copy_(torch.as_tensor(cloud_hi, dtype=torch.float32))

    def normalize_pos(self, x: torch.Tensor) -> torch.Tensor:
        s, o = _limits(self.pos_lo, self.pos_hi)
        return x * s + o

    def unnormalize_pos(self, x: torch.Tensor) -> torch.Tensor:
        s, o = _limits(self.pos_lo, self.pos_hi)
        return (x - o) / s

    def normalize_cloud(self, x: torch.Tensor) -> torch.Tensor:
        s, o = _limits(self.cloud_lo, self.cloud_hi)
        return x * s + o

    # -- observation encoding --
    def encode_frames(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-frame observation features: DP3 clouds [M, N, 3] (world) or DP images
        [M, 2, H, W] -> [M, F]."""
        if self.method == "dp3":
            return self.obs_encoder(self.normalize_cloud(obs))
        return self.obs_encoder(obs)

    def global_cond(self, frame_feat: torch.Tensor, obs_pos: torch.Tensor) -> torch.Tensor:
        """frame_feat [B, n_obs, F], obs_pos [B, n_obs, 28] (world, not normalised) -> [B, G]."""
        B = obs_pos.shape[0]
        npos = self.normalize_pos(obs_pos)
        if self.state_mlp is not None:
            npos = self.state_mlp(npos)
        return torch.cat([frame_feat, npos], dim=-1).reshape(B, -1)

    def cond_from_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.method == "dp3":
            feat = self.encode_frames(batch["clouds"])[batch["cloud_index"]]  # [B, n_obs, F]
        else:
            im = batch["images"]
            B, K = im.shape[:2]
            feat = self.encode_frames(im.reshape(B * K, *im.shape[2:])).view(B, K, -1)
        return self.global_cond(feat, batch["obs_pos"])

    # -- training --
    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch (see the module docstring) -> (loss, parts)."""
        cond = self.cond_from_batch(batch)
        x0 = self.normalize_pos(batch["action"])
        B = x0.shape[0]
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.T, (B,), device=x0.device)
        out = self.unet(self.scheduler.add_noise(x0, noise, t), t, cond)
        main = nn.functional.mse_loss(out, self.scheduler.target(x0, noise))
        parts = {"mse": float(main.detach())}
        loss = main
        if (
            self.method == "dp3"
            and self.aux.enabled
            and self._aux_objects is not None
            and "obj_pose" in batch
        ):
            if self.scheduler.prediction_type == "sample":
                x0_hat = out
            else:
                ac = self.scheduler.alphas_cumprod.to(x0.device)[t].float().view(-1, 1, 1)
                x0_hat = (self.scheduler.add_noise(x0, noise, t) - (1 - ac).sqrt() * out) / ac.sqrt()
            pen, dis = self.aux_losses(self.unnormalize_pos(x0_hat), batch["obj_pose"], batch["obj"])
            scale = main.detach() / 5.0
            a = self.aux
            loss = (
                loss
                + a.w_pen * scale / (pen.detach() + 1e-8) * pen
                + a.w_dis * scale / (dis.detach() + 1e-8) * dis
            )
            parts.update(pen=float(pen.detach()), dis=float(dis.detach()))
        return loss, parts

    def set_aux_objects(self, points: np.ndarray, normals: np.ndarray) -> None:
        """Object-frame surface samples with normals per object index: [O, M, 3] each."""
        from scipy.spatial import cKDTree

        self._aux_objects = (
            torch.as_tensor(points, dtype=torch.float32),
            torch.as_tensor(normals, dtype=torch.float32),
        )
        self._aux_trees = [cKDTree(np.asarray(p, np.float64)) for p in points]

    def hand_surface(self):
        if self._hand_surface is None:
            from dexh2r_policy.models.hand_surface import HandSurface

            c = self.config
            self._hand_surface = HandSurface.for_robot(c.robot, c.n_surface, c.surface_seed)
        return self._hand_surface

    def aux_losses(
        self, pos: torch.Tensor, obj_pose: torch.Tensor, obj: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pos [B, H, 28] (world), obj_pose [B, H, 4, 4], obj [B] object index -> (penetration m,
        attraction m). Penetration: batch mean of the per-sample max over frames and hand points of
        the depth inside the object; attraction: mean distance to the object of the hand points
        within `dis_threshold_m` of it."""
        B, H = pos.shape[:2]
        hs = self.hand_surface()
        q = pos[..., 6:].detach().reshape(-1, hs.n_fingers).cpu().numpy()
        local = torch.as_tensor(hs.points_batch(q), dtype=pos.dtype, device=pos.device)  # [BH, S, 3]
        R = rotvec_to_matrix_torch(pos[..., 3:6].reshape(-1, 3))
        world = local @ R.transpose(1, 2) + pos[..., :3].reshape(-1, 1, 3)
        To = obj_pose.reshape(-1, 4, 4).to(pos.dtype)
        in_obj = (world - To[:, None, :3, 3]) @ To[:, :3, :3]  # R_o^T (p - t_o)
        pts_all, nrm_all = (x.to(pos.device) for x in self._aux_objects)
        idx_obj = obj.long().repeat_interleave(H)
        pts, nrm = pts_all[idx_obj], nrm_all[idx_obj]  # [BH, M, 3]
        # The nearest object point (KD-tree per object, no gradient); the distance to it is differentiated.
        q_np = in_obj.detach().cpu().numpy()
        nn_np = np.zeros(q_np.shape[:2], dtype=np.int64)
        obj_np = idx_obj.cpu().numpy()
        for o in np.unique(obj_np):
            rows = obj_np == o
            nn_np[rows] = (
                self._aux_trees[int(o)].query(q_np[rows].reshape(-1, 3))[1].reshape(-1, q_np.shape[1])
            )
        nn_i = torch.from_numpy(nn_np).to(pos.device)
        p_nn = torch.gather(pts, 1, nn_i[..., None].expand(-1, -1, 3))
        n_nn = torch.gather(nrm, 1, nn_i[..., None].expand(-1, -1, 3))
        dist = (in_obj - p_nn).norm(dim=-1)
        inside = ((p_nn - in_obj) * n_nn).sum(-1) > 0
        depth = torch.where(inside, dist, torch.zeros_like(dist))
        pen = depth.view(B, -1).amax(dim=1).mean()
        near = dist < self.aux.dis_threshold_m
        dis = (dist * near).sum() / near.sum().clamp_min(1)
        return pen, dis

    # -- inference --
    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """cond [B, G] -> actions [B, H, 28] (world, un-normalised), by the configured scheduler
        (DDIM / DDPM) with `num_inference_steps` network calls."""
        c = self.config
        B = cond.shape[0]
        x = torch.randn((B, c.horizon, ACTION_DIM), generator=generator, dtype=cond.dtype).to(cond.device)
        n = c.num_inference_steps
        for t in self.scheduler.timesteps(n):
            out = self.unet(x, t, cond)
            x = self.scheduler.step(out, t, x, n, generator)
        return self.unnormalize_pos(x)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: DiffusionPolicyModel, **extra: Any) -> Path:
    """Atomic write: {'format', 'version', 'method', 'model_config', 'aux_config', 'model', **extra}.
    `model` holds the weights used for inference (the EMA weights in training checkpoints)."""
    from dexh2r_core.config import to_dict

    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "method": model.method,
        "model_config": to_dict(model.config),
        "aux_config": to_dict(model.aux),
        "model": model.state_dict(),
        **extra,
    }
    return write_checkpoint(path, state)


def read_checkpoint(path: str | Path, method: str | None = None) -> dict:
    """The checkpoint dict, checked; `method` ("dp" / "dp3") must match when given."""
    ckpt = read_checked(
        path,
        CHECKPOINT_FORMAT,
        CHECKPOINT_VERSION,
        "DP/DP3",
        CheckpointError,
        known={"dexh2r-motionnet": "a MotionNet checkpoint"},
    )
    if method is not None and ckpt.get("method") != method:
        raise CheckpointError(f"{Path(path)}: a {ckpt.get('method')} checkpoint, not {method}")
    return ckpt


def load_diffusion(path: str | Path, method: str | None = None) -> tuple[DiffusionPolicyModel, dict]:
    """(model in eval mode, float32, checkpoint dict) from a training or exported checkpoint."""
    from dexh2r_core.config import ConfigError, from_dict

    ckpt = read_checkpoint(path, method)
    try:
        cfg = from_dict(DiffusionModelConfig, ckpt["model_config"], source=f"{path}:model_config")
        aux = from_dict(AuxLossConfig, ckpt.get("aux_config", {}), source=f"{path}:aux_config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    model = DiffusionPolicyModel(cfg, ckpt["method"], aux)
    try:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        )
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model config ({exc})") from exc
    return model.eval(), ckpt


def export_weights(src: str | Path, dst: str | Path) -> Path:
    """A small deployable copy: the inference (EMA) weights in float16, configs, data hash and
    step kept; optimiser, raw weights and RNG state dropped."""
    return export_half(read_checkpoint(src), src, dst, drop=("optimizer", "raw_model", "ema", "rng"))


__all__ = [
    "ACTION_DIM",
    "AuxLossConfig",
    "CheckpointError",
    "DiffusionModelConfig",
    "DiffusionPolicyModel",
    "export_weights",
    "load_diffusion",
    "n_params",
    "read_checkpoint",
    "rotvec_to_matrix_torch",
    "save_checkpoint",
]
