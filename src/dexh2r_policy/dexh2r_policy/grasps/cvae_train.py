"""`dexh2r train --config config/policy/grasp_cvae_small.yaml`: train the grasp CVAE.

    dexh2r train --config config/policy/grasp_cvae_small.yaml [--pools DIR] [--data ROOT] [--out DIR]
                 [--steps N] [--seed S] [--resume [CKPT]] [--set run.lr=1e-3 ...] [--no-progress]

(`dexh2r train` dispatches here on the config's `method: grasp_cvae`; the command line is the
MotionNet trainer's.) Data (`GraspData`): the stable (succ6) grasps of the object-frame pools in
`data.pools` (`dexh2r datagen grasps`), each with its object's surface samples and normals:

- `data.root` empty: objects from the sim object library (`sample_surface_points`, 4096, seed 0);
  an object is held out when the library's split puts it in `test` (the grasp cVAE's split is by
  object only, method doc §2.3);
- `data.root` a DexH2R-layout root: objects of `dataset_split.json` (`train_obj` trains,
  `val_obj` + `test_obj` are held out) with `<pools>/<object>.npz` and
  `obj_surface_pcd_4096/<object>.ply` (normals needed).

Every grasp is put in its canonical frame (`grasps.cvae`): cloud R^T (p - c), target t' =
R^T (t - c) and the 22 joints; each step draws `model.n_points` random surface points per item.
`data.val_fraction` of the training-object grasps validate (best.pt); the held-out objects' grasps,
when their pools exist, are logged as `heldout_loss` and never select anything.

Run folder (`run.out`, default runs/train/<name>): `config.yaml`, `log.csv` (step, epoch, loss and
its terms, val / held-out loss, lr, ms/step), `last.pt` / `best.pt` (config, data hash, step,
model, optimiser, RNG: train.py's checkpoint content, format `dexh2r-grasp-cvae`) and `model.pt`
(weights only, the deployable file: `cp <out>/model.pt checkpoints/grasp_cvae_small.pt`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dexh2r_policy.grasps.cvae import (
    GraspCVAE,
    GraspCVAEConfig,
    LossWeights,
    build_model,
    cvae_losses,
    read_checkpoint,
    save_checkpoint,
)
from dexh2r_policy.train import (
    RunConfig,
    add_trainer_args,
    due,
    fail,
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
class CVAEDataConfig:
    root: str = ""  # "" : the sim object library; else a DexH2R-layout root
    pools: str = "data/pools"
    stable_only: bool = True  # succ6 grasps only (the physical filter)
    surface_points: int = 4096  # library surface samples per object (the layout's file: all)
    val_fraction: float = 0.1  # of the training-object grasps

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.surface_points < 16:
            raise ValueError(f"surface_points: must be >= 16, got {self.surface_points}")


@dataclass(frozen=True)
class CVAETrainConfig:
    name: str = "grasp_cvae"
    method: str = "grasp_cvae"
    model: GraspCVAEConfig = field(default_factory=GraspCVAEConfig)
    data: CVAEDataConfig = field(default_factory=CVAEDataConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    run: RunConfig = field(default_factory=RunConfig)


class DataError(ValueError):
    """Training data that cannot be used (no pools, no stable grasps, a missing surface)."""


# ---- data ------------------------------------------------------------------------------------------


@dataclass
class ObjectGrasps:
    name: str
    held_out: bool
    points: np.ndarray  # [M, 3] surface samples (object frame)
    normals: np.ndarray  # [M, 3]
    T_obj_hand: np.ndarray  # [G, 4, 4]
    finger_q: np.ndarray  # [G, 22]
    pool_file: Path


def load_objects(cfg: CVAEDataConfig) -> list[ObjectGrasps]:
    """Every object with a pool in `cfg.pools`, its stable grasps and its surface (see module doc)."""
    from dexh2r_policy.grasps.pool import FAMILIES, GraspPool

    pools_dir = resolve_data_path(cfg.pools)
    if not pools_dir.is_dir():
        raise DataError(f"{pools_dir}: no grasp pool folder (make one with `dexh2r datagen grasps`)")
    out: list[ObjectGrasps] = []
    if cfg.root:
        from dexh2r_policy.data.dexh2r_layout import DexH2RDataset

        ds = DexH2RDataset(resolve_data_path(cfg.root))
        held = set(ds.split["val_obj"]) | set(ds.split["test_obj"])
        for name in sorted(set(ds.split["train_obj"]) | held):
            path = pools_dir / f"{name.replace('/', '__')}.npz"
            if not path.exists():
                continue
            pts, nrm = ds.object_surface_points(name)
            if nrm is None:
                raise DataError(
                    f"{ds.root}/obj_surface_pcd_4096/{name}.ply: no normals (needed by the losses)"
                )
            out.append(_object(name, name in held, pts, nrm, GraspPool.load(path), path, cfg.stable_only))
    else:
        from dexh2r_sim.objects import ObjectLibrary, sample_surface_points

        library = ObjectLibrary()
        held = set(library.ids("test"))
        for path in sorted(pools_dir.glob("*.npz")):
            # the whole-hand pools only: the CVAE learns the paper's grasps, not the pinch family
            # (nor the close-hold results beside the pools, `grasps.close_hold`)
            skip = (".tmp.npz", ".hold.npz", *(f".{f}.npz" for f in FAMILIES))
            if path.name.endswith(skip):
                continue
            pool = GraspPool.load(path)
            obj = library.get(pool.object_id, scale=pool.object_scale)
            pts, nrm = sample_surface_points(obj, n=cfg.surface_points, seed=0)
            out.append(_object(pool.object_id, pool.object_id in held, pts, nrm, pool, path, cfg.stable_only))
    if not any(not o.held_out and len(o.T_obj_hand) for o in out):
        raise DataError(f"{pools_dir}: no training object with grasps (pools: {len(out)})")
    return out


def _object(name, held_out, pts, nrm, pool, path, stable_only) -> ObjectGrasps:
    mask = pool.succ6 if stable_only else np.ones(len(pool), bool)
    return ObjectGrasps(
        name,
        held_out,
        np.asarray(pts, np.float64),
        np.asarray(nrm, np.float64),
        pool.T_obj_hand[mask],
        pool.finger_q[mask],
        Path(path),
    )


def cvae_data_hash(objects: list[ObjectGrasps], cfg: CVAEDataConfig) -> str:
    """sha1 over the pool files (content), the object names and split, the surface settings."""
    h = hashlib.sha1(f"{cfg.root}|{cfg.stable_only}|{cfg.surface_points}".encode())
    for o in objects:
        h.update(f"{o.name}|{o.held_out}".encode())
        h.update(o.pool_file.read_bytes())
        h.update(np.ascontiguousarray(o.points, np.float32).tobytes())
    return h.hexdigest()


class GraspData:
    """Grasps of some objects in canonical form, as tensors; `batch(idx, gen)` draws the clouds."""

    def __init__(self, objects: list[ObjectGrasps], kin, n_points: int) -> None:
        from dexh2r_policy.models.hand_surface import HandSurface  # noqa: F401  (kin is built from one)

        self.n_points = n_points
        pts, nrm, obj_idx, R, tc, q = [], [], [], [], [], []
        m = max(len(o.points) for o in objects) if objects else 1
        for k, o in enumerate(objects):
            c = o.points.mean(axis=0)
            # pad surfaces to a common size by repetition (draws are uniform over the real points)
            reps = np.resize(np.arange(len(o.points)), m)
            pts.append(o.points[reps] - c)
            nrm.append(o.normals[reps])
            Ro = o.T_obj_hand[:, :3, :3]
            R.append(Ro)
            tc.append(np.einsum("gji,gj->gi", Ro, o.T_obj_hand[:, :3, 3] - c))  # R^T (t - c)
            q.append(o.finger_q)
            obj_idx.append(np.full(len(Ro), k))
        f32 = torch.float32
        self.points = torch.tensor(np.array(pts), dtype=f32)  # [O, M, 3] centred
        self.normals = torch.tensor(np.array(nrm), dtype=f32)
        self.n_surface_real = torch.tensor([len(o.points) for o in objects])
        self.obj = torch.tensor(np.concatenate(obj_idx) if obj_idx else np.zeros(0), dtype=torch.long)
        self.R = torch.tensor(np.concatenate(R) if R else np.zeros((0, 3, 3)), dtype=f32)
        self.t = torch.tensor(np.concatenate(tc) if tc else np.zeros((0, 3)), dtype=f32)
        self.q = torch.tensor(np.concatenate(q) if q else np.zeros((0, 22)), dtype=f32)
        with torch.no_grad():
            self.hand_local = torch.cat(
                [kin(self.q[i : i + 512]) for i in range(0, len(self.q), 512)]
            ) if len(self.q) else torch.zeros(0, kin.n_points, 3)  # fmt: skip

    def __len__(self) -> int:
        return len(self.q)

    def batch(self, idx: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        o = self.obj[idx]
        B = len(idx)
        sub = (torch.rand(B, self.n_points, generator=gen) * self.n_surface_real[o][:, None]).long()
        P = self.points[o[:, None], sub]  # [B, N, 3]
        Nm = self.normals[o[:, None], sub]
        R = self.R[idx]
        return {
            "obj": P @ R,  # rows: R^T p
            "normals": Nm @ R,
            "hand": self.hand_local[idx] + self.t[idx][:, None, :],
            "t": self.t[idx],
            "q": self.q[idx],
        }


def translation_bounds(t: torch.Tensor, margin: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = t.min(dim=0).values, t.max(dim=0).values
    pad = (hi - lo).clamp(min=0.01) * margin
    return lo - pad, hi + pad


# ---- training ----------------------------------------------------------------------------------------


def evaluate(model: GraspCVAE, data: GraspData, weights: LossWeights, batch: int, seed: int) -> float:
    """Mean weighted loss over `data` (fixed draws), nan when empty."""
    if len(data) == 0:
        return float("nan")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            idx = torch.arange(i, min(i + batch, len(data)))
            b = data.batch(idx, gen)
            loss, _ = cvae_losses(
                model, b["obj"], b["normals"], b["hand"], model.normalise(b["t"], b["q"]), weights
            )
            total += float(loss) * len(idx)
            n += len(idx)
    torch.set_rng_state(state)
    model.train()
    return total / n


def split_train_val(data_objects: list[ObjectGrasps], fraction: float, seed: int):
    """(train objects' grasps minus a val share, val share, held-out objects' grasps)."""
    rng = np.random.default_rng(seed)
    train, val, held = [], [], []
    for o in data_objects:
        if o.held_out:
            held.append(o)
            continue
        perm = rng.permutation(len(o.T_obj_hand))
        k = round(len(perm) * fraction) if len(perm) > 1 else 0
        v, t = np.sort(perm[:k]), np.sort(perm[k:])
        train.append(
            ObjectGrasps(o.name, False, o.points, o.normals, o.T_obj_hand[t], o.finger_q[t], o.pool_file)
        )
        val.append(
            ObjectGrasps(o.name, False, o.points, o.normals, o.T_obj_hand[v], o.finger_q[v], o.pool_file)
        )
    return train, val, held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config/policy/grasp_cvae_*.yaml (or a path)")
    add_trainer_args(
        parser, data_help="DexH2R-layout root (overrides data.root; default: the object library)"
    )
    args = parse_trainer_args(parser, argv)

    from dexh2r_core.config import ConfigError, load_config, to_dict
    from dexh2r_core.paths import config_path
    from dexh2r_policy.data.dexh2r_layout import DatasetError
    from dexh2r_policy.motionnet import CheckpointError

    try:
        cfg = load_config(CVAETrainConfig, config_path(args.config), trainer_overrides(args))
    except ConfigError as exc:
        return fail(str(exc))
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        return fail("run.device is cuda but no GPU is available")
    # auto: CPU (a small net); one process (no DDP)
    out, device, _, show = setup_run(cfg, args.no_progress, auto_device="cpu", distributed=False)
    seed = cfg.run.seed

    model = build_model(cfg.model).to(device)
    kin = model.kinematics()
    try:
        objects = load_objects(cfg.data)
        dhash = cvae_data_hash(objects, cfg.data)
        tr, va, ho = split_train_val(objects, cfg.data.val_fraction, seed)
        train = GraspData(tr, kin, cfg.model.n_points)
        val = GraspData(va, kin, cfg.model.n_points) if any(len(o.T_obj_hand) for o in va) else None
        held = GraspData(ho, kin, cfg.model.n_points) if any(len(o.T_obj_hand) for o in ho) else None
    except (DataError, DatasetError, FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
    if len(train) < 2:
        return fail(f"only {len(train)} training grasps")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.run.lr, weight_decay=cfg.run.weight_decay)
    step, best = 0, math.inf
    if args.resume:
        resumed = read_resume(args, out, read_checkpoint, CheckpointError, dhash, to_dict(cfg.model))
        if resumed is None:
            return 2
        path, ckpt = resumed
        model.load_state_dict(ckpt["model"])
        if "optimizer" not in ckpt:
            return fail(f"--resume: {path} has no optimiser state (a weights-only file)")
        opt.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt.get("best_val", math.inf))
        restore_rng(ckpt)
    else:
        lo, hi = translation_bounds(train.t)
        model.set_translation_bounds(lo, hi)

    terms = ("pose", "surface", "pen", "contact", "kl")
    log_file, log = open_log(
        out,
        cfg,
        args.resume,
        ["step", "epoch", "train_loss", *terms, "val_loss", "heldout_loss", "lr", "ms_per_step", "time"],
    )

    def save(name: str, extra: dict) -> None:
        save_checkpoint(out / name, model, **train_state(cfg, dhash, step, opt, best), **extra)

    from tqdm import tqdm

    B = min(cfg.run.batch_size, len(train))
    per_epoch = max(1, len(train) // B)
    bar = tqdm(total=cfg.run.steps, initial=step, desc=cfg.name, unit="step", disable=not show or None)
    model.train()
    running: list[list[float]] = []
    t_last = time.perf_counter()
    val_loss = held_loss = float("nan")
    t_start = time.perf_counter()
    while step < cfg.run.steps:
        epoch, offset = divmod(step, per_epoch)
        # batch order and point draws: functions of (seed, epoch), so a resume continues exactly
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(len(train), generator=gen)
        draws = torch.Generator().manual_seed(seed * 7919 + epoch)
        for _ in range(offset):  # replay the draws of the batches already done this epoch
            torch.rand(B, cfg.model.n_points, generator=draws)
        for k in range(offset, per_epoch):
            idx = perm[k * B : (k + 1) * B]
            b = {key: v.to(device) for key, v in train.batch(idx, draws).items()}
            loss, parts = cvae_losses(
                model, b["obj"], b["normals"], b["hand"], model.normalise(b["t"], b["q"]), cfg.loss
            )
            optimizer_step(opt, model, loss, cfg.run.grad_clip)
            step += 1
            running.append([loss.item()] + [parts[t].item() for t in terms])
            bar.update(1)
            if due(step, cfg.run, cfg.run.val_every):
                val_loss = evaluate(model, val, cfg.loss, 256, seed) if val is not None else float("nan")
                held_loss = evaluate(model, held, cfg.loss, 256, seed) if held is not None else float("nan")
                score = val_loss if val is not None else float(np.mean([r[0] for r in running]))
                if score < best:
                    best = score
                    save("best.pt", {"val_loss": val_loss})
            if due(step, cfg.run, cfg.run.log_every, cfg.run.val_every):
                now = time.perf_counter()
                ms = (now - t_last) * 1000.0 / max(len(running), 1)
                mean = np.mean(running, axis=0) if running else [float("nan")] * 6
                log.writerow(
                    [step, epoch, *(f"{v:.6f}" for v in mean), f"{val_loss:.6f}", f"{held_loss:.6f}",
                     cfg.run.lr, f"{ms:.2f}", f"{time.time():.3f}"]
                )  # fmt: skip
                log_file.flush()
                bar.set_postfix(loss=f"{mean[0]:.3f}", val=f"{val_loss:.3f}")
                running, t_last = [], now
                val_loss = held_loss = float("nan")
            if due(step, cfg.run, cfg.run.ckpt_every):
                save("last.pt", {})
            if step >= cfg.run.steps:
                break
    bar.close()
    log_file.close()
    save_checkpoint(out / "model.pt", model, config=to_dict(cfg), data_hash=dhash, step=step)
    print(
        f"{cfg.name}: {step} steps in {time.perf_counter() - t_start:.0f} s, {len(train)} train grasps "
        f"({sum(not o.held_out for o in objects)} objects), best val loss {best:.4f} -> {out}/model.pt"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
