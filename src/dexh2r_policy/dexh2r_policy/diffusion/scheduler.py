"""DDPM / DDIM noise schedulers (the parts of diffusers' `DDPMScheduler` / `DDIMScheduler` that
Diffusion Policy and DP3 use; no `diffusers` dependency).

    sched = NoiseScheduler(num_train_timesteps=100, prediction_type="sample", kind="ddim")
    x_t = sched.add_noise(x0, eps, t)                       # training: q(x_t | x_0)
    x = torch.randn(shape, generator=g)
    for t in sched.timesteps(num_inference_steps=10):      # inference
        x = sched.step(model(x, t), t, x, generator=g)

Conventions (as diffusers): `t` in [0, T), `alphas_cumprod[t]` = prod_{s <= t} (1 - beta_s);
`squaredcos_cap_v2` is the cosine schedule of Nichol & Dhariwal (betas capped at 0.999), the
default of both papers; `linear` is DDPM's. `prediction_type` "epsilon" (the network predicts the
noise) or "sample" (it predicts x0: DP3 and the DexH2R baselines). `clip_sample` clips the x0
estimate to [-1, 1] (the data are normalised to that range). DDPM uses the "fixed_small"
posterior variance; DDIM is deterministic (eta = 0), "leading" timestep spacing, and the final
alpha_cumprod is 1 (`set_alpha_to_one`), so its last step returns the x0 estimate itself.
"""

from __future__ import annotations

import math
from typing import Literal

import torch


def cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas [n] of the squared-cosine schedule (`squaredcos_cap_v2`)."""

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float64
    )


class NoiseScheduler:
    """Forward noising and DDPM / DDIM reverse steps (see the module docstring)."""

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2",
        prediction_type: Literal["sample", "epsilon"] = "sample",
        kind: Literal["ddpm", "ddim"] = "ddim",
        clip_sample: bool = True,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps: must be >= 1, got {num_train_timesteps}")
        if prediction_type not in ("sample", "epsilon"):
            raise ValueError(f"prediction_type: 'sample' or 'epsilon', got {prediction_type!r}")
        if kind not in ("ddpm", "ddim"):
            raise ValueError(f"scheduler kind: 'ddpm' or 'ddim', got {kind!r}")
        self.T = int(num_train_timesteps)
        if beta_schedule == "squaredcos_cap_v2":
            betas = cosine_betas(self.T)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, self.T, dtype=torch.float64)
        else:
            raise ValueError(f"beta_schedule: unknown {beta_schedule!r}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.prediction_type = prediction_type
        self.kind = kind
        self.clip_sample = clip_sample

    # -- training --
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; x0, noise [B, ...], t [B] (int64)."""
        ac = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        ac = ac.view(-1, *([1] * (x0.dim() - 1)))
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output."""
        return x0 if self.prediction_type == "sample" else noise

    # -- inference --
    def timesteps(self, num_inference_steps: int | None = None) -> list[int]:
        """Descending timesteps: DDPM all T (or every T/n-th, "leading"), DDIM T/n apart."""
        n = self.T if num_inference_steps is None else int(num_inference_steps)
        if not 1 <= n <= self.T:
            raise ValueError(f"num_inference_steps: must be in [1, {self.T}], got {n}")
        ratio = self.T // n
        return [i * ratio for i in range(n)][::-1]

    def _prev(self, t: int, num_inference_steps: int | None) -> int:
        n = self.T if num_inference_steps is None else int(num_inference_steps)
        return t - self.T // n

    def estimates(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 estimate (clipped when `clip_sample`), epsilon estimate) at timestep t."""
        ac = float(self.alphas_cumprod[t])
        if self.prediction_type == "sample":
            x0 = model_output
        else:
            x0 = (x_t - math.sqrt(1 - ac) * model_output) / math.sqrt(ac)
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x_t - math.sqrt(ac) * x0) / math.sqrt(max(1 - ac, 1e-20))
        return x0, eps

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x_{t_prev} from x_t and the network output at t (DDPM: ancestral; DDIM: eta 0)."""
        t = int(t)
        prev = self._prev(t, num_inference_steps)
        ac = float(self.alphas_cumprod[t])
        ac_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else 1.0
        x0, eps = self.estimates(model_output, t, x_t)
        if self.kind == "ddim":
            return math.sqrt(ac_prev) * x0 + math.sqrt(1 - ac_prev) * eps
        beta_t = 1 - ac / ac_prev  # the (possibly strided) step's beta
        c0 = math.sqrt(ac_prev) * beta_t / (1 - ac)
        ct = math.sqrt(1 - beta_t) * (1 - ac_prev) / (1 - ac)
        mean = c0 * x0 + ct * x_t
        if t == 0 or prev < 0:
            return mean
        var = max((1 - ac_prev) / (1 - ac) * beta_t, 1e-20)
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        return mean + math.sqrt(var) * noise
