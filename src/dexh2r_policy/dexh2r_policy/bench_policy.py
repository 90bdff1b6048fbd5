"""`dexh2r bench policy --json OUT`: the policy package's latency targets, on this CPU.

- `motionnet_step_ms_p95` / `motionnet_paper_step_ms_p95`: one DynamicGrasp step (target
  selection + MotionNet + alignment; each new frame's cloud encoded once) with the small and the
  paper-size MotionNet (`dynamic_grasp.bench_step`), the small one with the collision guard on as
  its config ships;
- `dp3_step_ms_p95` (and `dp_*`): the same step with the DP3 / DP planner
  (`diffusion.planner.bench_dp3`);
- `cvae_pool_ms_p95` / `cvae_pool_ms` (p50): a 500-grasp pool for a new object from the grasp
  CVAE, small config (`grasps.cvae.bench_cvae`).

Each uses the committed checkpoint when it exists, else freshly initialised weights of the same
config: latency does not depend on the weights. `--only` runs some parts. Timings depend on the
machine's load: the report records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PARTS = ("motionnet", "diffusion", "cvae")
TARGETS = {
    "motionnet_step_ms_p95": 5.0,
    "motionnet_paper_step_ms_p95": 25.0,
    "dp3_step_ms_p95": 60.0,
    "cvae_pool_ms_p95": 1500.0,
}


def _existing(path: str | None) -> str | None:
    from dexh2r_policy.train import resolve_data_path

    return str(resolve_data_path(path)) if path and resolve_data_path(path).exists() else None


def run_motionnet(steps: int, small: str | None, paper: str | None) -> dict:
    import torch

    from dexh2r_policy.dynamic_grasp import bench_step
    from dexh2r_policy.motionnet import MotionNet, MotionNetConfig, load_motionnet

    out: dict = {}
    # The collision guard as each config ships it: on in motionnet_small.yaml, off in the paper's.
    for key, ckpt, cfg, guard in (
        ("motionnet", small, MotionNetConfig.small(), True),
        ("motionnet_paper", paper, MotionNetConfig.paper(), False),
    ):
        model = load_motionnet(ckpt)[0] if ckpt else MotionNet(cfg).eval()
        r = bench_step(model, steps=steps, guard=guard)
        out[f"{key}_collision_guard"] = guard
        out[f"{key}_step_ms_p95"] = r["step_ms_p95"]
        out[f"{key}_step_ms_p50"] = r["step_ms_p50"]
        out[f"{key}_plan_ms_p95"] = r["plan_ms_p95"]
        out[f"{key}_params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        out[f"{key}_checkpoint"] = ckpt
    out["threads"] = torch.get_num_threads()
    return out


def run_cvae(checkpoint: str | None) -> dict:
    from dexh2r_policy.grasps.cvae import bench_cvae

    r = bench_cvae(checkpoint)
    return {f"cvae_{k}" if not k.startswith("cvae") else k: v for k, v in r.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r bench policy", description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=300, help="DynamicGrasp steps per model")
    parser.add_argument("--small-checkpoint", default="checkpoints/motionnet_small.pt")
    parser.add_argument("--paper-checkpoint")
    parser.add_argument("--dp3-checkpoint", default="checkpoints/dp3_small.pt")
    parser.add_argument("--dp-checkpoint", default="checkpoints/dp_small.pt")
    parser.add_argument("--cvae-checkpoint", default="checkpoints/grasp_cvae_small.pt")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 20:
        parser.error("--steps must be >= 20 (the first 10 steps are warm-up and not timed)")
    result: dict = {}
    if "motionnet" in args.only:
        result.update(
            run_motionnet(args.steps, _existing(args.small_checkpoint), _existing(args.paper_checkpoint))
        )
    if "diffusion" in args.only:
        from dexh2r_policy.diffusion.planner import bench_dp3

        result.update(
            bench_dp3(
                _existing(args.dp3_checkpoint), _existing(args.dp_checkpoint), steps=min(args.steps, 200)
            )
        )
    if "cvae" in args.only:
        result.update(run_cvae(_existing(args.cvae_checkpoint)))
    checks = {
        k: {"value": result[k], "target": f"<= {v}", "ok": bool(result[k] <= v)}
        for k, v in TARGETS.items()
        if result.get(k) is not None
    }
    result["checks"] = checks
    result["pass"] = len(checks) == len(TARGETS) and all(c["ok"] for c in checks.values())
    result["machine"] = {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    for key, c in checks.items():
        print(f"  {'ok  ' if c['ok'] else 'MISS'} {key:<30} {c['value']:.4g} (target {c['target']})")
    print(f"[bench policy] {'PASS' if result['pass'] else 'FAIL'}; report: {args.json}")
    return 0
