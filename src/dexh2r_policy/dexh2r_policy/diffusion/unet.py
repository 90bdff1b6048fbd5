"""The 1-D temporal conv UNet with FiLM conditioning of Diffusion Policy (`ConditionalUnet1D`,
Chi et al. 2023; DP3 uses the same network), and the EMA of its weights.

Shapes (B = batch, H = horizon, A = action dim, G = global condition dim):

    unet = ConditionalUnet1D(input_dim=A, global_cond_dim=G, down_dims=(64, 128, 256))
    out = unet(sample [B, H, A], timestep [B] or int, global_cond [B, G])   # -> [B, H, A]

Inside, the sequence is channels-first [B, A, H]. The diffusion step k goes through a sinusoidal
embedding (`step_embed` dims) and an MLP (x4, Mish); the condition vector is [step emb ‖
global_cond]. Encoder: per level `(dim_in -> dim_out)` two `ConditionalResidualBlock1D` then a
stride-2 conv (not after the last level), so H must be divisible by 2^(levels-1) (H = 8 or 16
with 3 levels). Mid: two blocks at the widest dim. Decoder (levels-1 of them): concat the
encoder's output of the same resolution, two blocks, transposed conv x2 upsampling (the first
level's skip is unused, as in the original). Head: Conv1dBlock + 1x1 conv back to A channels.

`ConditionalResidualBlock1D(in, out, cond)`: Conv1dBlock(in -> out) (conv k, GroupNorm, Mish),
FiLM from the condition (Mish, Linear cond -> 2 out: per-channel scale and bias,
`cond_predict_scale=True`), Conv1dBlock(out -> out), plus a 1x1 residual conv when in != out.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """[B] step -> [B, dim] sinusoidal embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        f = math.log(10000) / max(half - 1, 1)
        f = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -f)
        e = x.float()[:, None] * f[None]
        return torch.cat([e.sin(), e.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (kernel k, same padding) -> GroupNorm -> Mish: [B, Cin, H] -> [B, Cout, H]."""

    def __init__(self, cin: int, cout: int, kernel: int, n_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(n_groups, cout), nn.Mish()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """[B, Cin, H], cond [B, C] -> [B, Cout, H] (FiLM between the two conv blocks)."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int = 5, n_groups: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [Conv1dBlock(cin, cout, kernel, n_groups), Conv1dBlock(cout, cout, kernel, n_groups)]
        )
        self.cout = cout
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        film = self.cond_encoder(cond).view(-1, 2, self.cout, 1)
        out = film[:, 0] * out + film[:, 1]
        out = self.blocks[1](out)
        return out + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """See the module docstring for shapes."""

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        down_dims: tuple[int, ...] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        step_embed: int = 128,
    ) -> None:
        super().__init__()
        dims = [input_dim, *down_dims]
        self.levels = len(down_dims)
        self.step_encoder = nn.Sequential(
            SinusoidalPosEmb(step_embed),
            nn.Linear(step_embed, step_embed * 4),
            nn.Mish(),
            nn.Linear(step_embed * 4, step_embed),
        )
        cond_dim = step_embed + global_cond_dim
        in_out = list(itertools.pairwise(dims))

        def block(a: int, b: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(a, b, cond_dim, kernel_size, n_groups)

        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.down.append(
                nn.ModuleList(
                    [block(a, b), block(b, b), nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]
                )
            )
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        for a, b in reversed(in_out[1:]):  # every decoder level upsamples (as the original)
            self.up.append(nn.ModuleList([block(b * 2, a), block(a, a), nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, global_cond: torch.Tensor
    ) -> torch.Tensor:
        """sample [B, H, A], timestep [B] (or a scalar), global_cond [B, G] -> [B, H, A]."""
        B, H = sample.shape[:2]
        if H % (2 ** (self.levels - 1)):
            raise ValueError(
                f"horizon {H} must be divisible by {2 ** (self.levels - 1)} ({self.levels} levels)"
            )
        x = sample.transpose(1, 2)
        t = torch.as_tensor(timestep, device=sample.device)
        if t.dim() == 0:
            t = t.expand(B)
        cond = torch.cat([self.step_encoder(t), global_cond], dim=-1)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for m in self.mid:
            x = m(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)


class EMA:
    """Exponential moving average of a model's weights with Diffusion Policy's warm-up:
    decay(step) = clamp(1 - (1 + step / inv_gamma)^-power, min_decay, max_decay)
    (power 0.75: ~0.999 after 10k steps, ~0.9975 after 3k). Buffers are copied as they are."""

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        min_decay: float = 0.0,
        max_decay: float = 0.9999,
    ) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma, self.min_decay, self.max_decay = power, inv_gamma, min_decay, max_decay
        self.steps = 0

    def decay(self) -> float:
        d = 1 - (1 + self.steps / self.inv_gamma) ** -self.power
        return float(min(max(d, self.min_decay), self.max_decay))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
