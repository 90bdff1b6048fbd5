"""`dexh2r train --config config/policy/<name>.yaml`: train MotionNet on DexH2R-layout data.

    dexh2r train --config config/policy/motionnet_small.yaml [--data DIR] [--pools DIR] [--out DIR]
                 [--steps N] [--seed S] [--resume [CKPT]] [--set model.n_points=128 ...]
    torchrun --standalone --nproc_per_node=2 -m dexh2r_policy.train --config ...   # DDP

Data (`MotionWindows`): sequences of the DexH2R layout (`DexH2RDataset`, split by the split
file: `data.train_split` / `data.val_split`), windows of P past + F future frames whose current
frame lies in the approach phase (before `grasp_begin_frame_index`; the future may run on into
the grasp, clamped at the sequence end). The object cloud of every frame goes through
`dexh2r_core.pointcloud.sample_fixed` (the run-time preprocessing) and into the hand frame of that
frame; the target grasp comes from the object's pool posed by the current object pose, selected
relative to the recorded current hand (top-40 by translation, then the smallest rotation, giver
keypoints respected when the sequence has `giver_keypoints.pt`), as the policy does at run time.

Run folder (`run.out`, default `runs/train/<name>`): `config.yaml`, `log.csv` (step, epoch,
train loss, val loss, val translation error, lr, ms/step), TensorBoard events when `tensorboard`
is installed, `last.pt` / `best.pt` checkpoints (config, data hash, step, model, optimiser, RNG).
`--resume` continues from `last.pt` (or the file given) exactly where it stopped: the batch order
is a function of (seed, epoch). Under torchrun (WORLD_SIZE > 1) every process trains on its
share of each epoch (gloo on CPU, nccl on GPUs); rank 0 logs, validates and saves. `run.batch_size`
is per process.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml

from dexh2r_policy.dynamic_grasp import DynamicGraspConfig, PoolLibrary, giver_points, select_target
from dexh2r_policy.motionnet import (
    MotionNet,
    MotionNetConfig,
    cloud_in_hand,
    future_targets,
    hand_geometry,
    hand_history,
    motion_loss,
    read_checkpoint,
    save_checkpoint,
)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/dexh2r"  # DexH2R-layout root
    pools: str = "data/pools"  # object-frame grasp pools (<object>.npz)
    train_split: str = "motionnet_train"
    val_split: str = "dp_val"  # empty -> `val_fraction` of the training sequences
    val_fraction: float = 0.1
    approach_only: bool = True  # current frames before grasp_begin_frame_index
    stable_only: bool = True  # succ6 grasps of the pools (all when none is)
    max_sequences: int | None = None  # cap per split (quick runs)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class LossConfig:
    w_trans: float = 1.0
    w_rot: float = 1.0
    w_joints: float = 1.0
    scale: float = 130.0  # the paper's 130 x L1


@dataclass(frozen=True)
class RunConfig:
    steps: int = 2000
    batch_size: int = 256  # per process
    lr: float = 5e-4  # Adam, constant (the paper)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0: off
    val_every: int = 200
    val_batches: int = 20
    ckpt_every: int = 200
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    window_chunk: int = 8  # consecutive windows per sampling unit (shared clouds encoded once)
    threads: int = 0  # torch intra-op threads per process (0: torch default)
    out: str = ""  # default runs/train/<name>
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every", "ckpt_every", "log_every", "val_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size: BatchNorm needs at least 2")
        if not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")


@dataclass(frozen=True)
class TrainConfig:
    name: str = "motionnet"
    method: str = "motionnet"  # picks the trainer (TRAINERS); this config class is MotionNet's
    model: MotionNetConfig = field(default_factory=MotionNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)
    policy: DynamicGraspConfig = field(default_factory=DynamicGraspConfig)


# ---- data ------------------------------------------------------------------------------------------


def load_giver_keypoints(folder: Path, n_frames: int) -> np.ndarray | None:
    """`giver_keypoints.pt` [T, 21, 3] of a sequence folder, None when absent."""
    from dexh2r_policy.data.dexh2r_layout import DatasetError

    path = Path(folder) / "giver_keypoints.pt"
    if not path.exists():
        return None
    try:
        kp = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    kp = np.asarray(kp.float().numpy() if hasattr(kp, "numpy") else kp, dtype=np.float64)
    if kp.shape != (n_frames, 21, 3):
        raise DatasetError(f"{path}: wrong shape {list(kp.shape)}, expected [{n_frames}, 21, 3]")
    return kp


def giver_keypoints(seq, folder: Path) -> np.ndarray | None:
    """The sequence's giver keypoints [T, 21, 3]: read by the layout reader where it knows the
    file (`seq.giver_keypoints`), else from `giver_keypoints.pt`; None when there are none."""
    kp = getattr(seq, "giver_keypoints", None)
    if kp is not None:
        return np.asarray(kp, dtype=np.float64)
    return load_giver_keypoints(folder, seq.n_frames)


def data_hash(root: Path, ids: list, pools: PoolLibrary) -> str:
    """sha1 over the split file, every sequence's qpos / obj_pose / motion_info (content), its cloud
    file (size: the clouds are large), and the pools used. Written into checkpoints."""
    h = hashlib.sha1()
    split = Path(root) / "dataset_split.json"
    h.update(split.read_bytes() if split.exists() else b"")
    for sid in ids:
        folder = sid.path(root)
        h.update(str(sid).encode())
        for name in ("qpos.pt", "obj_pose.pt", "motion_info.yaml", "giver_keypoints.pt"):
            f = folder / name
            h.update(f.read_bytes() if f.exists() else b"-")
        f = folder / "real_obj_pcd_xyz.pt"
        h.update(str(f.stat().st_size if f.exists() else -1).encode())
    for obj in sorted({sid.object for sid in ids}):
        paths = pools.paths(obj)
        for p in paths:
            h.update(p.read_bytes())
        if not paths:
            h.update(b"-")
    return h.hexdigest()


class MotionWindows(torch.utils.data.Dataset):
    """Training windows. Item: dict of float32 tensors `hist` [P, 9+J], `clouds` [P, N, 3],
    `geo` [3, S, 3], `future` [F, 9+J] (see `motionnet`), and `frames` [P] (int64 global frame ids).
    Windows are indexed sequence by sequence, frame by frame (consecutive indices overlap)."""

    def __init__(
        self,
        dataset,
        ids: list,
        model: MotionNetConfig,
        data: DataConfig,
        policy: DynamicGraspConfig,
        pools: PoolLibrary,
        hand_surface=None,
        progress: bool = True,
    ) -> None:
        from tqdm import tqdm

        from dexh2r_core.pointcloud import sample_fixed
        from dexh2r_policy.models.geometry import qpos_to_poses
        from dexh2r_policy.models.hand_surface import HandSurface

        self.model_config = model
        P, F = model.n_past, model.n_future
        hs = hand_surface or HandSurface.for_robot(model.robot, model.n_surface, model.surface_seed)
        self.seqs: list[dict] = []
        self._frames = 0  # global frame ids (clouds shared by overlapping windows are encoded once)
        index: list[tuple[int, int, int]] = []
        pool_points: dict[str, np.ndarray] = {}
        for sid in tqdm(ids, desc="windows", unit="seq", disable=not progress or None, leave=False):
            seq = dataset.load(sid)
            T_all, q_all = qpos_to_poses(seq.qpos)
            n = seq.n_frames
            end = seq.grasp_begin_frame if data.approach_only else n
            used = min(n, end + F)
            last_current = min(end, n - 1)  # current frames c in [P-1, last_current)
            if last_current <= P - 1:
                continue
            pool = pools.get(sid.object, sid.path(dataset.root), seq.obj_pose[0])
            if sid.object not in pool_points:
                pool_points[sid.object] = hs.points_batch(pool.finger_q)
            kp = giver_keypoints(seq, sid.path(dataset.root))
            clouds = np.stack(
                [
                    cloud_in_hand(
                        T_all[k],
                        sample_fixed(seq.obj_pcd[k], model.n_points, policy.cloud_sample, policy.cloud_seed),
                    )
                    for k in range(used)
                ]
            )
            entry = {
                "T": T_all[:used],
                "q": q_all[:used],
                "obj": seq.obj_pose[:used].astype(np.float64),
                "pts": hs.points_batch(q_all[:used]),
                "clouds": clouds,
                "pool": pool,
                "pool_pts": pool_points[sid.object],
                "id": str(sid),
            }
            k = len(self.seqs)
            entry["frame0"] = self._frames
            self._frames += used
            self.seqs.append(entry)
            for c in range(P - 1, last_current):
                pool_world = entry["obj"][c][None] @ pool.T_obj_hand
                giver = giver_points(kp[c]) if kp is not None else None
                g = select_target(
                    pool_world, T_all[c], policy.top_k, entry["pool_pts"], giver, policy.giver_clearance_m
                )
                index.append((k, c, g))
        self.index = np.array(index, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k, c, g = (int(v) for v in self.index[i])
        s = self.seqs[k]
        P, F = self.model_config.n_past, self.model_config.n_future
        past = slice(c - P + 1, c + 1)
        fut = np.minimum(np.arange(c + 1, c + 1 + F), len(s["T"]) - 1)
        T_target = s["obj"][c] @ s["pool"].T_obj_hand[g]
        return {
            "hist": torch.from_numpy(hand_history(s["T"][past], s["q"][past])),
            "clouds": torch.from_numpy(s["clouds"][past]),
            "geo": torch.from_numpy(
                hand_geometry(
                    s["T"][c - 1], s["pts"][c - 1], s["T"][c], s["pts"][c], T_target, s["pool_pts"][g]
                )
            ),
            "future": torch.from_numpy(future_targets(s["T"][c], s["q"][c], s["T"][fut], s["q"][fut])),
            "frames": torch.arange(c - P + 1, c + 1) + s["frame0"],
        }


# ---- distributed helpers -------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(d.local_rank)
    return d


def epoch_batches(n: int, batch: int, seed: int, epoch: int, d: Dist, chunk: int = 1) -> list[list[int]]:
    """This rank's batches of one epoch: runs of `chunk` consecutive windows (which share most of
    their frames, so a batch encodes fewer clouds) in a (seed, epoch) permutation, rank-strided,
    cut into batches (a last batch of >= 2 kept); every rank gets the same number of batches."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    chunk = max(1, min(chunk, n))
    # Full chunks only, from a random start (every window is used over the epochs); the same count
    # every epoch and on every rank (DDP steps in lockstep; resume maps step -> (epoch, batch)).
    count = n // chunk
    start = int(torch.randint(0, n - count * chunk + 1, (1,), generator=g))
    chunks = [list(range(start + i * chunk, start + (i + 1) * chunk)) for i in range(count)]
    order = torch.randperm(len(chunks), generator=g).tolist()
    per_rank = len(chunks) // d.world
    mine = [i for j in order[d.rank :: d.world][:per_rank] for i in chunks[j]]
    out = [mine[i : i + batch] for i in range(0, len(mine), batch)]
    return [b for b in out if len(b) >= 2]


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stacked items; clouds deduplicated by frame: `clouds` [U, N, 3] and `cloud_index` [B, P]."""
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("clouds", "frames")}
    frames = torch.stack([it["frames"] for it in items])
    unique, inverse = torch.unique(frames, return_inverse=True)
    first = {}
    for b, it in enumerate(items):
        for p, f in enumerate(it["frames"].tolist()):
            first.setdefault(f, (b, p))
    out["clouds"] = torch.stack([items[first[f][0]]["clouds"][first[f][1]] for f in unique.tolist()])
    out["cloud_index"] = inverse
    return out


# ---- training ----------------------------------------------------------------------------------------


def _parse_set(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"dexh2r train: --set expects KEY=VALUE, got '{pair}'")
        out[key] = yaml.safe_load(value)
    return out


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    from dexh2r_core.config import load_config
    from dexh2r_core.paths import config_path

    return load_config(TrainConfig, config_path(path), overrides)


def resolve_data_path(p: str | Path) -> Path:
    """A data path from a config: as given, else under the repository root."""
    from dexh2r_core.paths import repo_root

    path = Path(p)
    if path.is_absolute() or path.exists() or repo_root() is None:
        return path
    return repo_root() / path


def evaluate(model: MotionNet, loader, cfg: TrainConfig, device, max_batches: int) -> dict[str, float]:
    model.eval()
    losses, trans = [], []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            b = {k: v.to(device) for k, v in batch.items()}
            pred = model(b["hist"], None, b["geo"], obj_points=b["clouds"], cloud_index=b["cloud_index"])
            loss, _ = motion_loss(
                pred, b["future"], cfg.loss.w_trans, cfg.loss.w_rot, cfg.loss.w_joints, cfg.loss.scale
            )
            losses.append(float(loss))
            trans.append(float((pred[..., :3] - b["future"][..., :3]).norm(dim=-1).mean()) * 100.0)
    model.train()
    if not losses:
        return {"val_loss": float("nan"), "val_trans_cm": float("nan")}
    return {"val_loss": float(np.mean(losses)), "val_trans_cm": float(np.mean(trans))}


# ---- shared by the trainers (MotionNet here, DP / DP3, grasp CVAE) ---------------------------------


def fail(msg: str) -> int:
    """Print a trainer's setup fault and return its exit status."""
    print(f"dexh2r train: {msg}", file=sys.stderr)
    return 2


def add_trainer_args(
    parser: argparse.ArgumentParser,
    data_help: str = "DexH2R-layout root (overrides data.root)",
    pools_help: str = "grasp pool folder (overrides data.pools)",
) -> None:
    """The data / run overrides and --resume every trainer takes (`parse_trainer_args` ends the list)."""
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--pools", help=pools_help)
    parser.add_argument("--out", help="run folder (overrides run.out)")
    parser.add_argument("--steps", type=int, help="overrides run.steps")
    parser.add_argument("--seed", type=int, help="overrides run.seed")
    parser.add_argument("--resume", nargs="?", const="last", help="continue from <out>/last.pt or CKPT")
    parser.add_argument("--ignore-data-hash", action="store_true", help="resume although the data changed")


def parse_trainer_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Adds the last common options (--set, --no-progress) and parses `argv` (None: sys.argv)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def trainer_overrides(args: argparse.Namespace) -> dict:
    """Config overrides of the command line: the --set pairs, then --data / --pools / --out / ..."""
    overrides = _parse_set(args.set)
    for key, value in (
        ("data.root", args.data),
        ("data.pools", args.pools),
        ("run.out", args.out),
        ("run.steps", args.steps),
        ("run.seed", args.seed),
    ):
        if value is not None:
            overrides[key] = value
    return overrides


def setup_run(
    cfg, no_progress: bool, auto_device: str | None = None, distributed: bool = True
) -> tuple[Path, torch.device, Dist, bool]:
    """(run folder, device, DDP info, show progress) of a loaded config; sets the torch threads and
    seeds python / numpy / torch with run.seed. Device `auto`: `auto_device`, else a GPU when there
    is one. `distributed`: join the torchrun process group (WORLD_SIZE > 1)."""
    out = resolve_data_path(cfg.run.out or f"runs/train/{cfg.name}")
    device_name = cfg.run.device
    if device_name == "auto":
        device_name = auto_device or ("cuda" if torch.cuda.is_available() else "cpu")
    d = setup_distributed(device_name) if distributed else Dist()
    device = torch.device(device_name, d.local_rank) if device_name == "cuda" else torch.device("cpu")
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    seed = cfg.run.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return out, device, d, d.main and not no_progress


def load_split(data: DataConfig):
    """(dataset, pools, train ids, val ids, data hash) of a data section: the split file's train
    and val splits (capped by max_sequences; no val split: the last val_fraction of the training
    sequences). DatasetError when the training split is empty."""
    from dexh2r_policy.data.dexh2r_layout import DatasetError, DexH2RDataset

    ds = DexH2RDataset(resolve_data_path(data.root))
    pools = PoolLibrary(resolve_data_path(data.pools), data.stable_only)
    train_ids = ds.sequence_ids(data.train_split)
    val_ids = ds.sequence_ids(data.val_split) if data.val_split else []
    if data.max_sequences:
        train_ids, val_ids = train_ids[: data.max_sequences], val_ids[: data.max_sequences]
    if not val_ids and data.val_fraction > 0 and len(train_ids) > 1:
        k = max(1, round(len(train_ids) * data.val_fraction))
        val_ids, train_ids = train_ids[-k:], train_ids[:-k]
    if not train_ids:
        raise DatasetError(f"{ds.root}: split '{data.train_split}' has no sequences")
    return ds, pools, train_ids, val_ids, data_hash(ds.root, train_ids + val_ids, pools)


def export_cli(export_weights, error: type[Exception], src_dst: list[str], mb_digits: int) -> int:
    """--export CKPT OUT: write the float16 copy and print its size (exit status 2 on `error`)."""
    try:
        out = export_weights(*src_dst)
    except error as exc:
        return fail(str(exc))
    print(f"exported {src_dst[0]} -> {out} ({out.stat().st_size / 1e6:.{mb_digits}f} MB)")
    return 0


def read_resume(
    args: argparse.Namespace,
    out: Path,
    read,
    error: type[Exception],
    dhash: str,
    model_config: dict | None = None,
):
    """(path, checkpoint) of --resume (`<out>/last.pt` or the file given) read by `read`, its data
    hash checked unless --ignore-data-hash, and its model config when `model_config` is given;
    None (fault printed) when it cannot be used."""
    path = out / "last.pt" if args.resume == "last" else Path(args.resume)
    try:
        ckpt = read(path)
    except error as exc:
        fail(f"--resume: {exc}")
        return None
    if ckpt.get("data_hash") != dhash and not args.ignore_data_hash:
        fail(
            f"--resume: {path} was trained on other data (hash {ckpt.get('data_hash')}, now {dhash}); "
            "pass --ignore-data-hash to continue anyway"
        )
        return None
    if model_config is not None and ckpt.get("model_config") != model_config:
        fail(f"--resume: {path} holds another model config")
        return None
    return path, ckpt


def train_state(cfg, dhash: str, step: int, opt: torch.optim.Optimizer, best: float) -> dict:
    """A training checkpoint's run part: config, data hash, step, optimiser, best val, RNG states."""
    from dexh2r_core.config import to_dict

    return {
        "config": to_dict(cfg),
        "data_hash": dhash,
        "step": step,
        "optimizer": opt.state_dict(),
        "best_val": best,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }


def restore_rng(ckpt: dict) -> None:
    """The RNG states saved by `train_state`."""
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(ckpt["rng"]["numpy"])
    random.setstate(ckpt["rng"]["python"])


def open_log(out: Path, cfg, resume, header: list[str]):
    """(file, csv writer) of `<out>/log.csv`, appended to on --resume; writes `<out>/config.yaml`."""
    from dexh2r_core.config import to_dict

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    new = not (out / "log.csv").exists() or not resume
    log_file = (out / "log.csv").open("w" if new else "a", newline="")
    log = csv.writer(log_file)
    if new:
        log.writerow(header)
    return log_file, log


def due(step: int, run: RunConfig, *every: int) -> bool:
    """Whether `step` is the last or a multiple of one of `every` (validate / log / save)."""
    return step == run.steps or any(step % e == 0 for e in every)


def optimizer_step(
    opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor, clip: float
) -> None:
    """Backward and one optimiser step, the gradient norm clipped to `clip` (0: off)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


def finish_distributed(d: Dist) -> None:
    """Wait for every process and leave the process group (DDP only)."""
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


# A config's top-level `method:` picks its trainer (absent: motionnet, this module). Each trainer
# is `main(argv) -> int` taking the same command line as `dexh2r train`.
TRAINERS: dict[str, str] = {
    "motionnet": "dexh2r_policy.train:train_motionnet",
    "dp": "dexh2r_policy.diffusion.train:main",
    "dp3": "dexh2r_policy.diffusion.train:main",
    "grasp_cvae": "dexh2r_policy.grasps.cvae_train:main",
}


def config_method(config: str) -> str:
    """The `method:` of a policy config file (default motionnet); unknown methods are an error."""
    from dexh2r_core.config import ConfigError
    from dexh2r_core.paths import config_path

    try:
        raw = yaml.safe_load(Path(config_path(config)).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read policy config '{config}': {exc}") from exc
    method = str(raw.get("method", "motionnet")) if isinstance(raw, dict) else "motionnet"
    if method not in TRAINERS:
        raise ConfigError(f"{config}: unknown method '{method}' (known: {', '.join(TRAINERS)})")
    return method


def main(argv: list[str] | None = None) -> int:
    """`dexh2r train`: dispatch on the config's `method:` to its trainer."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
    if config is not None and "--export" not in argv:
        from dexh2r_core.cli import resolve
        from dexh2r_core.config import ConfigError

        try:
            method = config_method(config)
        except ConfigError as exc:
            print(f"dexh2r train: {exc}", file=sys.stderr)
            return 2
        if method != "motionnet":
            return int(resolve(TRAINERS[method])(argv) or 0)
    return train_motionnet(argv)


def train_motionnet(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="config/policy/<name>.yaml (or a path)")
    parser.add_argument(
        "--export",
        nargs=2,
        metavar=("CKPT", "OUT"),
        help="write a float16 weights-only copy of CKPT and exit",
    )
    add_trainer_args(parser)
    parser.add_argument(
        "--init", metavar="CKPT", help="start from these model weights (fine-tuning; fresh optimiser, step 0)"
    )
    args = parse_trainer_args(parser, argv)
    if args.export:
        from dexh2r_policy.motionnet import CheckpointError, export_weights

        return export_cli(export_weights, CheckpointError, args.export, 1)
    if not args.config:
        parser.error("--config is required (or --export CKPT OUT)")

    from dexh2r_core.config import ConfigError, to_dict
    from dexh2r_policy.data.dexh2r_layout import DatasetError
    from dexh2r_policy.dynamic_grasp import DynamicGraspError
    from dexh2r_policy.motionnet import CheckpointError

    try:
        cfg = load_train_config(args.config, trainer_overrides(args))
    except ConfigError as exc:
        return fail(str(exc))
    out, device, d, show = setup_run(cfg, args.no_progress)
    seed = cfg.run.seed

    try:
        ds, pools, train_ids, val_ids, dhash = load_split(cfg.data)
        train_set = MotionWindows(ds, train_ids, cfg.model, cfg.data, cfg.policy, pools, progress=show)
        val_set = MotionWindows(ds, val_ids, cfg.model, cfg.data, cfg.policy, pools, progress=show)
    except (DatasetError, DynamicGraspError, FileNotFoundError) as exc:
        return fail(str(exc))
    if len(train_set) < 2:
        return fail(f"only {len(train_set)} training windows in {ds.root}")

    model = MotionNet(cfg.model).to(device)
    if args.init:  # fine-tuning: weights only (float16 exports too), before the optimiser exists
        if args.resume:
            return fail("--init and --resume exclude each other")
        try:
            init = read_checkpoint(resolve_data_path(args.init))
        except CheckpointError as exc:
            return fail(f"--init: {exc}")
        if init.get("model_config") != to_dict(cfg.model):
            return fail(f"--init: {args.init} holds another model config")
        weights = init["model"]
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
        if d.main:
            print(f"{cfg.name}: initialised from {args.init} (step {init.get('step')})")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.run.lr, weight_decay=cfg.run.weight_decay)
    step, best = 0, math.inf
    if args.resume:
        resumed = read_resume(args, out, read_checkpoint, CheckpointError, dhash, to_dict(cfg.model))
        if resumed is None:
            return 2
        _, ckpt = resumed
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt.get("best_val", math.inf))
        restore_rng(ckpt)
    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)

    loader_kw = {"num_workers": cfg.run.num_workers, "collate_fn": _collate}
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.run.batch_size, **loader_kw)
    writer, log_file, log = None, None, None
    if d.main:
        log_file, log = open_log(
            out,
            cfg,
            args.resume,
            ["step", "epoch", "train_loss", "val_loss", "val_trans_cm", "lr", "ms_per_step", "time"],
        )
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except Exception:  # tensorboard is optional
            writer = None

    def save(name: str, extra: dict) -> None:
        save_checkpoint(out / name, model, **train_state(cfg, dhash, step, opt, best), **extra)

    from tqdm import tqdm

    n_batches = len(epoch_batches(len(train_set), cfg.run.batch_size, seed, 0, d, cfg.run.window_chunk))
    if n_batches == 0:
        return fail("fewer training windows than 2 per process")
    bar = tqdm(total=cfg.run.steps, initial=step, desc=cfg.name, unit="step", disable=not show or None)
    model.train()
    running, t_last, last_val = [], time.perf_counter(), {}
    while step < cfg.run.steps:
        epoch, offset = divmod(step, n_batches)
        batches = epoch_batches(len(train_set), cfg.run.batch_size, seed, epoch, d, cfg.run.window_chunk)[
            offset:
        ]
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, **loader_kw)
        for batch in loader:
            b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            pred = _forward(net, model, b)
            loss, _ = motion_loss(
                pred, b["future"], cfg.loss.w_trans, cfg.loss.w_rot, cfg.loss.w_joints, cfg.loss.scale
            )
            optimizer_step(opt, model, loss, cfg.run.grad_clip)
            step += 1
            running.append(loss.item())
            bar.update(1)
            if d.main and due(step, cfg.run, cfg.run.val_every):
                last_val = evaluate(model, val_loader, cfg, device, cfg.run.val_batches)
                if last_val["val_loss"] < best:
                    best = last_val["val_loss"]
                    save("best.pt", {"val": last_val})
            if d.main and due(step, cfg.run, cfg.run.log_every, cfg.run.val_every):
                now = time.perf_counter()
                ms = (now - t_last) * 1000.0 / max(len(running), 1)
                tl = float(np.mean(running)) if running else float("nan")
                log.writerow(
                    [
                        step,
                        epoch,
                        f"{tl:.6f}",
                        f"{last_val.get('val_loss', float('nan')):.6f}",
                        f"{last_val.get('val_trans_cm', float('nan')):.4f}",
                        cfg.run.lr,
                        f"{ms:.2f}",
                        f"{time.time():.3f}",
                    ]
                )
                log_file.flush()
                if writer is not None:
                    writer.add_scalar("train/loss", tl, step)
                    for key, v in last_val.items():
                        writer.add_scalar(f"val/{key}", v, step)
                bar.set_postfix(loss=f"{tl:.3f}", val=f"{last_val.get('val_loss', float('nan')):.3f}")
                running, t_last = [], now
                last_val = {}
            if d.main and due(step, cfg.run, cfg.run.ckpt_every):
                save("last.pt", {})
            if step >= cfg.run.steps:
                break
    bar.close()
    finish_distributed(d)
    if d.main:
        log_file.close()
        if writer is not None:
            writer.close()
        print(f"{cfg.name}: {step} steps, best val loss {best:.4f} -> {out}/last.pt")
    return 0


def _forward(net, model: MotionNet, b: dict) -> torch.Tensor:
    """Training forward through `net` (the model or its DDP wrapper, whose forward must run for
    the gradient sync): clouds go in as `obj_points` and are encoded inside."""
    return net(b["hist"], None, b["geo"], obj_points=b["clouds"], cloud_index=b["cloud_index"])


if __name__ == "__main__":
    sys.exit(main())
