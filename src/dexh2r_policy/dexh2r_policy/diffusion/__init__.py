"""The diffusion baselines of DexH2R (method doc §4): DP (image-conditioned Diffusion Policy) and
DP3 (3-D Diffusion Policy with the paper's penetration / attraction losses), on DynamicGrasp's
planner interface. See docs/policy_diffusion.md.

- `scheduler`: DDPM / DDIM noise schedulers; `unet`: ConditionalUnet1D (FiLM) and EMA;
- `encoders`: the DP3 point encoder and state MLP, DP's depth CNN and its depth renderer;
- `model`: the conditional action-diffusion model, its losses and checkpoints;
- `planner`: `DiffusionPlanner` / `diffusion_policy` (a DynamicGrasp) and `bench_dp3`;
- `train`: `dexh2r train --config config/policy/dp3_small.yaml` (or dp_small.yaml).
"""
