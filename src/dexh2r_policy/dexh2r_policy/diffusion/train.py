"""`dexh2r train --config config/policy/dp3_small.yaml` (or dp_small.yaml): train DP3 / DP.

    dexh2r train --config config/policy/dp3_small.yaml [--data DIR] [--pools DIR] [--out DIR]
                 [--steps N] [--seed S] [--resume [CKPT]] [--set model.n_points=128 ...]
                 [--no-progress] [--export-to checkpoints/dp3_small.pt]
    python -m dexh2r_policy.diffusion.train --export RUN/best.pt checkpoints/dp3_small.pt
    torchrun --standalone --nproc_per_node=2 -m dexh2r_policy.diffusion.train --config ...   # DDP

`dexh2r train` dispatches configs with `method: dp` / `method: dp3` here (`train.TRAINERS`).
The MotionNet trainer's pieces are reused (`dexh2r_policy.train`): the data section and its
splits, `data_hash`, the run section, `epoch_batches` (the batch order is a function of (seed,
epoch), so `--resume` continues exactly), cloud de-duplication by frame (`_collate`), the DDP
setup. Windows (`DiffusionWindows`): every current frame c of the approach phase (before
`grasp_begin_frame_index`) with n_obs observed frames c-n_obs+1 .. c and H actions (action k =
agent_pos of frame c-n_obs+2+k, clamped at the sequence end; the future may run into the grasp
phase, as MotionNet's). Clouds go through `sample_fixed` with the policy's settings (the run-time
preprocessing); DP's images are rendered by `planner.render_frame` from the sampled cloud and
the recorded hand.

Run folder (`run.out`): `config.yaml`, `log.csv` (step, epoch, train loss, mse, pen, dis, val
loss, val translation error of the executed actions in cm (sampled with the EMA weights), lr,
ms/step), `last.pt`, `best.pt` (lowest val translation error); checkpoints hold the EMA weights
(inference), the raw weights, optimiser, EMA step, RNG, the whole config and the data hash.
`--export-to OUT` writes a float16 copy of best.pt (the EMA weights only) at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dexh2r_policy.diffusion.model import (
    ACTION_DIM,
    AuxLossConfig,
    CheckpointError,
    DiffusionModelConfig,
    DiffusionPolicyModel,
    export_weights,
    n_params,
    read_checkpoint,
    save_checkpoint,
)
from dexh2r_policy.dynamic_grasp import DynamicGraspConfig
from dexh2r_policy.train import (
    DataConfig,
    RunConfig,
    _collate,
    add_trainer_args,
    due,
    epoch_batches,
    export_cli,
    fail,
    finish_distributed,
    load_split,
    open_log,
    optimizer_step,
    parse_trainer_args,
    read_resume,
    resolve_data_path,
    restore_rng,
    setup_run,
    train_state,
    trainer_overrides,
)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warm-up and a cosine decay to 0 (diffusion_policy's), and the EMA."""

    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = 100
    cosine: bool = True
    ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_sample_batches: int = 2  # val batches sampled (DDIM / DDPM) for the translation error


@dataclass(frozen=True)
class DiffusionTrainConfig:
    name: str = "dp3"
    method: Literal["dp", "dp3"] = "dp3"
    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aux: AuxLossConfig = field(default_factory=AuxLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    policy: DynamicGraspConfig = field(default_factory=DynamicGraspConfig)


def load_diffusion_config(path: str | Path, overrides: dict | None = None) -> DiffusionTrainConfig:
    from dexh2r_core.config import load_config
    from dexh2r_core.paths import config_path

    return load_config(DiffusionTrainConfig, config_path(path), overrides)


def qpos_agent_pos(qpos: np.ndarray) -> np.ndarray:
    """DexH2R qpos [T, 30] -> agent_pos [T, 28] (qpos[:6] ‖ qpos[8:30])."""
    qpos = np.asarray(qpos, dtype=np.float32)
    return np.concatenate([qpos[:, :6], qpos[:, 8:30]], axis=1)


class DiffusionWindows(torch.utils.data.Dataset):
    """Training windows (module docstring). Items: `obs_pos` [n_obs, 28], `action` [H, 28], and
    DP3: `clouds` [n_obs, N, 3] (world), `frames` [n_obs] (global frame ids, for `_collate`'s
    de-duplication), `obj_pose` [H, 4, 4] (the action frames' object poses), `obj` (object index
    into `objects`); DP: `images` [n_obs, 2, H, W]."""

    def __init__(
        self,
        dataset,
        ids: list,
        method: str,
        model: DiffusionModelConfig,
        data: DataConfig,
        policy: DynamicGraspConfig,
        objects: list[str],
        progress: bool = True,
    ) -> None:
        from tqdm import tqdm

        from dexh2r_core.pointcloud import sample_fixed
        from dexh2r_policy.diffusion.planner import render_frame
        from dexh2r_policy.models.geometry import qpos_to_poses
        from dexh2r_policy.models.hand_surface import HandSurface

        self.method, self.config = method, model
        K = model.n_obs
        surface = (
            HandSurface.for_robot(model.robot, model.render_hand_points, model.surface_seed)
            if method == "dp"
            else None
        )
        self.seqs: list[dict] = []
        index: list[tuple[int, int]] = []
        frame0 = 0
        for sid in tqdm(ids, desc=f"{method} windows", unit="seq", disable=not progress or None, leave=False):
            seq = dataset.load(sid)
            n = seq.n_frames
            end = seq.grasp_begin_frame if data.approach_only else n
            last_current = min(end, n - 1)  # current frames c in [K-1, last_current)
            if last_current <= K - 1:
                continue
            obs_frames = last_current  # frames 0 .. last_current-1 are observed by some window
            clouds = np.stack(
                [
                    sample_fixed(seq.obj_pcd[k], model.n_points, policy.cloud_sample, policy.cloud_seed)
                    for k in range(obs_frames)
                ]
            ).astype(np.float32)
            entry = {
                "pos": qpos_agent_pos(seq.qpos),
                "obj_pose": seq.obj_pose.astype(np.float32),
                "obj": objects.index(sid.object),
                "frame0": frame0,
                "id": str(sid),
            }
            if method == "dp3":
                entry["clouds"] = clouds
            else:
                T_all, q_all = qpos_to_poses(seq.qpos)
                imgs = [
                    render_frame(clouds[k], T_all[k], q_all[k], surface, model.camera)
                    for k in range(obs_frames)
                ]
                entry["images"] = np.round(np.stack(imgs) * 255.0).astype(np.uint8)
            frame0 += obs_frames
            k = len(self.seqs)
            self.seqs.append(entry)
            index += [(k, c) for c in range(K - 1, last_current)]
        self.index = np.array(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k, c = (int(v) for v in self.index[i])
        s = self.seqs[k]
        K, H = self.config.n_obs, self.config.horizon
        obs = np.arange(c - K + 1, c + 1)
        act = np.minimum(np.arange(c - K + 2, c - K + 2 + H), len(s["pos"]) - 1)
        item = {"obs_pos": torch.from_numpy(s["pos"][obs]), "action": torch.from_numpy(s["pos"][act])}
        if self.method == "dp3":
            item["clouds"] = torch.from_numpy(s["clouds"][obs])
            item["frames"] = torch.from_numpy(obs + s["frame0"])
            item["obj_pose"] = torch.from_numpy(s["obj_pose"][act])
            item["obj"] = torch.tensor(s["obj"])
        else:
            item["images"] = torch.from_numpy(s["images"][obs]).float() / 255.0
        return item

    def normalizer_stats(self) -> tuple[np.ndarray, ...]:
        """(pos_lo, pos_hi [28], cloud_lo, cloud_hi [3]) over the windows' sequences."""
        pos = np.concatenate([s["pos"] for s in self.seqs])
        out = [pos.min(0), pos.max(0)]
        if self.method == "dp3":
            pts = np.concatenate([s["clouds"].reshape(-1, 3) for s in self.seqs])
            out += [pts.min(0), pts.max(0)]
        else:
            out += [-np.ones(3, np.float32), np.ones(3, np.float32)]
        return tuple(np.asarray(x, np.float32) for x in out)


def collate(method: str):
    return _collate if method == "dp3" else torch.utils.data.default_collate


def object_surfaces(dataset, objects: list[str], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[O, n, 3] object-frame surface points and normals (`obj_surface_pcd_4096`), seeded subsample."""
    from dexh2r_policy.data.dexh2r_layout import DatasetError

    rng = np.random.default_rng(seed)
    P, N = [], []
    for obj in objects:
        pts, normals = dataset.object_surface_points(obj)
        if normals is None:
            raise DatasetError(f"{dataset.root}/obj_surface_pcd_4096/{obj}.ply: has no normals")
        idx = rng.choice(len(pts), size=n, replace=len(pts) < n)
        P.append(pts[idx])
        N.append(normals[idx])
    return np.asarray(P, np.float32), np.asarray(N, np.float32)


def lr_at(step: int, cfg: DiffusionTrainConfig) -> float:
    o, lr = cfg.optim, cfg.run.lr
    if step < o.warmup_steps:
        return lr * (step + 1) / o.warmup_steps
    if not o.cosine:
        return lr
    p = (step - o.warmup_steps) / max(1, cfg.run.steps - o.warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0)))


def evaluate(model: DiffusionPolicyModel, loader, cfg: DiffusionTrainConfig, device) -> dict[str, float]:
    """Val loss (the training loss at seeded noise) and, on the first `val_sample_batches`, the
    translation error (cm) of the executed actions sampled from the observation."""
    model.eval()
    losses, trans = [], []
    K, A = cfg.model.n_obs, cfg.model.n_action
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        g = torch.Generator().manual_seed(12345)
        for i, batch in enumerate(loader):
            if i >= cfg.run.val_batches:
                break
            b = {k: v.to(device) for k, v in batch.items()}
            losses.append(float(model(b)[0]))
            if i < cfg.optim.val_sample_batches:
                pred = model.sample(model.cond_from_batch(b), g)
                sl = slice(K - 1, K - 1 + A)
                trans.append(float((pred[:, sl, :3] - b["action"][:, sl, :3]).norm(dim=-1).mean()) * 100.0)
    return {
        "val_loss": float(np.mean(losses)) if losses else float("nan"),
        "val_trans_cm": float(np.mean(trans)) if trans else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="config/policy/<name>.yaml with method: dp | dp3")
    parser.add_argument(
        "--export", nargs=2, metavar=("CKPT", "OUT"), help="write a float16 inference copy of CKPT and exit"
    )
    parser.add_argument("--export-to", metavar="OUT", help="after training, export best.pt (float16) to OUT")
    add_trainer_args(parser, pools_help="grasp pool folder (overrides data.pools; used by the evaluation)")
    args = parse_trainer_args(parser, argv)

    if args.export:
        return export_cli(export_weights, CheckpointError, args.export, 2)
    if not args.config:
        parser.error("--config is required (or --export CKPT OUT)")

    from dexh2r_core.config import ConfigError, to_dict
    from dexh2r_policy.data.dexh2r_layout import DatasetError
    from dexh2r_policy.dynamic_grasp import DynamicGraspError

    try:
        cfg = load_diffusion_config(args.config, trainer_overrides(args))
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))
    method = cfg.method
    out, device, d, show = setup_run(cfg, args.no_progress)
    seed = cfg.run.seed

    try:
        ds, _, train_ids, val_ids, dhash = load_split(cfg.data)
        objects = sorted({sid.object for sid in train_ids + val_ids})
        t0 = time.perf_counter()
        train_set = DiffusionWindows(ds, train_ids, method, cfg.model, cfg.data, cfg.policy, objects, show)
        val_set = DiffusionWindows(ds, val_ids, method, cfg.model, cfg.data, cfg.policy, objects, show)
        surfaces = (
            object_surfaces(ds, objects, cfg.aux.object_points)
            if method == "dp3" and cfg.aux.enabled
            else None
        )
        prep_s = time.perf_counter() - t0
    except (DatasetError, DynamicGraspError, FileNotFoundError) as exc:
        return fail(str(exc))
    if len(train_set) < 2:
        return fail(f"only {len(train_set)} training windows in {ds.root}")

    model = DiffusionPolicyModel(cfg.model, method, cfg.aux).to(device)
    model.set_normalizer(*train_set.normalizer_stats())
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.run.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.run.weight_decay
    )
    from dexh2r_policy.diffusion.unet import EMA

    ema = EMA(model, cfg.optim.ema_power, max_decay=cfg.optim.ema_max_decay) if cfg.optim.ema else None
    if surfaces is not None:
        model.set_aux_objects(*surfaces)
    step, best = 0, math.inf
    if args.resume:
        resumed = read_resume(args, out, lambda p: read_checkpoint(p, method), CheckpointError, dhash)
        if resumed is None:
            return 2
        path, ckpt = resumed
        if ckpt.get("model_config") != to_dict(cfg.model) or "raw_model" not in ckpt:
            return fail(f"--resume: {path} holds another model config (or is an exported copy)")
        model.load_state_dict(ckpt["raw_model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.model.load_state_dict(ckpt["model"])
            ema.steps = int(ckpt.get("ema_steps", 0))
        step, best = int(ckpt["step"]), float(ckpt.get("best_val", math.inf))
        restore_rng(ckpt)
    infer = ema.model if ema is not None else model
    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)

    loader_kw = {"num_workers": cfg.run.num_workers, "collate_fn": collate(method)}
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.run.batch_size, **loader_kw)
    log_file, log = None, None
    if d.main:
        header = ["step", "epoch", "train_loss", "mse", "pen", "dis", "val_loss", "val_trans_cm"]
        log_file, log = open_log(out, cfg, args.resume, [*header, "lr", "ms_per_step", "time"])
        print(
            f"{cfg.name}: {method}, {n_params(model) / 1e6:.2f} M parameters, {len(train_set)} train / "
            f"{len(val_set)} val windows ({len(train_ids)} / {len(val_ids)} sequences, "
            f"{prep_s:.0f} s to build)",
            file=sys.stderr,
        )

    def save(name: str, extra: dict) -> None:
        state = train_state(cfg, dhash, step, opt, best)
        ema_steps = ema.steps if ema is not None else 0
        save_checkpoint(
            out / name, infer, raw_model=model.state_dict(), ema_steps=ema_steps, **state, **extra
        )

    from tqdm import tqdm

    chunk = cfg.run.window_chunk
    n_batches = len(epoch_batches(len(train_set), cfg.run.batch_size, seed, 0, d, chunk))
    if n_batches == 0:
        return fail("fewer training windows than 2 per process")
    bar = tqdm(total=cfg.run.steps, initial=step, desc=cfg.name, unit="step", disable=not show or None)
    model.train()
    running: list[dict] = []
    t_last, last_val = time.perf_counter(), {}
    while step < cfg.run.steps:
        epoch, offset = divmod(step, n_batches)
        batches = epoch_batches(len(train_set), cfg.run.batch_size, seed, epoch, d, chunk)[offset:]
        # Its own generator: a loader draws a base seed per iterator, which must not come from the
        # global RNG (the diffusion noise), or a resumed run would draw differently.
        loader_gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        loader = torch.utils.data.DataLoader(
            train_set, batch_sampler=batches, generator=loader_gen, **loader_kw
        )
        for batch in loader:
            b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, parts = net(b)
            optimizer_step(opt, model, loss, cfg.run.grad_clip)
            if ema is not None:
                ema.update(model)
            step += 1
            running.append({"loss": loss.item(), **parts})
            bar.update(1)
            if d.main and due(step, cfg.run, cfg.run.val_every):
                last_val = evaluate(infer, val_loader, cfg, device)
                model.train()
                crit = (
                    last_val["val_trans_cm"]
                    if math.isfinite(last_val["val_trans_cm"])
                    else last_val["val_loss"]
                )
                if crit < best:
                    best = crit
                    save("best.pt", {"val": last_val})
            if d.main and due(step, cfg.run, cfg.run.log_every, cfg.run.val_every):
                now = time.perf_counter()
                ms = (now - t_last) * 1000.0 / max(len(running), 1)

                def avg(key: str, rows: list[dict] = running) -> float:
                    v = [r[key] for r in rows if key in r]
                    return float(np.mean(v)) if v else float("nan")

                log.writerow(
                    [
                        step,
                        epoch,
                        f"{avg('loss'):.6f}",
                        f"{avg('mse'):.6f}",
                        f"{avg('pen'):.6f}",
                        f"{avg('dis'):.6f}",
                        f"{last_val.get('val_loss', float('nan')):.6f}",
                        f"{last_val.get('val_trans_cm', float('nan')):.4f}",
                        f"{lr:.3g}",
                        f"{ms:.2f}",
                        f"{time.time():.3f}",
                    ]
                )
                log_file.flush()
                bar.set_postfix(
                    loss=f"{avg('loss'):.4f}", val_cm=f"{last_val.get('val_trans_cm', float('nan')):.2f}"
                )
                running, t_last, last_val = [], now, {}
            if d.main and due(step, cfg.run, cfg.run.ckpt_every):
                save("last.pt", {})
            if step >= cfg.run.steps:
                break
    bar.close()
    finish_distributed(d)
    if d.main:
        log_file.close()
        print(f"{cfg.name}: {step} steps, best val translation error {best:.3f} cm -> {out}/best.pt")
        if args.export_to:
            src = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
            dst = export_weights(src, resolve_data_path(args.export_to))
            print(f"exported {src} -> {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return 0


__all__ = ["ACTION_DIM", "DiffusionTrainConfig", "DiffusionWindows", "load_diffusion_config", "main"]


if __name__ == "__main__":
    sys.exit(main())
