"""The real DexH2R dataset layout: reader, split rules and writer (ROS-free, numpy records).

    root/<subject>/<object>/<seq>/qpos.pt             torch [T, 30]: root t (3), axis-angle (3), 24 joints
                                 obj_pose.pt          torch [T, 4, 4]: object -> world
                                 real_obj_pcd_xyz.pt  torch [T, 4096, >=3]: segmented object cloud, world
                                 left_mano.pt | right_mano.pt  torch [T, 61]: giver hand (MANO)
                                 giver_keypoints.pt   torch [T, 21, 3]: giver hand keypoints (optional)
                                 motion_info.yaml     grasp_begin_frame_index: int (+ giver_side)
    root/dataset_split.json     train/val/test/all_sub_names, train/val/test/all_obj
    root/object_model/          meshes (*.obj, *.urdf)
    root/obj_surface_pcd_4096/<object>.ply

    ds = DexH2RDataset(root)
    ds.sequence_ids("motionnet_train")      # split rules of the official code (method doc 2.3)
    seq = ds.load(ds.sequence_ids()[0])     # DexH2RSequence (numpy), checked on load
    write_sequence(root, seq)               # the same layout (tests, recorder, `dataset convert`)

Every problem is a `DatasetError` naming the file and what is wrong (missing, wrong shape, NaN,
frame counts that disagree, a grasp frame out of range).

Extension (not in the released dataset): `giver_keypoints.pt`, the giver's 21 hand keypoints in
world (MediaPipe order), written by the sim episodes (`dexh2r datagen episodes`), whose giver has
no MANO parameters. A sequence needs exactly one MANO file, or none when it has giver keypoints
(then `mano` is None and `mano_side` comes from motion_info.yaml's `giver_side`, if given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

QPOS_DIM = 30
MANO_DIM = 61
N_KEYPOINTS = 21  # MediaPipe hand landmarks
GIVER_KEYPOINTS_FILE = "giver_keypoints.pt"
EPISODE_INFO_FILE = "episode_info.json"  # sim episodes only
PCD_POINTS = 4096
SPLIT_KEYS = ("train_sub_names", "val_sub_names", "test_sub_names", "train_obj", "val_obj", "test_obj")

Split = Literal[
    "motionnet_train", "motionnet_test", "dp_train", "dp_val", "dp_test", "cvae_train", "cvae_test", "all"
]


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SequenceId:
    subject: str
    object: str
    seq: str

    def path(self, root: Path) -> Path:
        return Path(root) / self.subject / self.object / self.seq

    def __str__(self) -> str:
        return f"{self.subject}/{self.object}/{self.seq}"


@dataclass
class DexH2RSequence:
    """One recorded handover. Frames T; world = the robot (hand-arm) frame; metres, radians."""

    id: SequenceId
    qpos: np.ndarray  # [T, 30] float32: root translation, root axis-angle, 24 Shadow joints
    obj_pose: np.ndarray  # [T, 4, 4] object -> world
    obj_pcd: np.ndarray  # [T, N, 3] observed object cloud (xyz only; extra channels dropped)
    mano: np.ndarray | None  # [T, 61] giver hand: transl 3, global_orient 3, pose 45, betas 10
    mano_side: Literal["left", "right"] | None  # the giver's hand (None: unknown, keypoints only)
    grasp_begin_frame: int
    # [T, 21, 3] giver hand keypoints, world, MediaPipe order (sim episodes; None in DexH2R).
    giver_keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_sequence(self)

    @property
    def n_frames(self) -> int:
        return len(self.qpos)

    @property
    def hand_translation(self) -> np.ndarray:
        return self.qpos[:, :3]

    @property
    def hand_axis_angle(self) -> np.ndarray:
        return self.qpos[:, 3:6]

    @property
    def hand_joints(self) -> np.ndarray:
        """[T, 24] in the paper's Shadow order (WRJ2, WRJ1, FFJ4..1, MFJ4..1, RFJ4..1, LFJ5..1, THJ5..1)."""
        return self.qpos[:, 6:]

    def approach(self) -> slice:
        """Frames before the grasp (what DP/DP3 train on by default)."""
        return slice(0, self.grasp_begin_frame)


def _check_array(a: np.ndarray, shape: tuple, where: str) -> None:
    """shape: ints are exact, None any, negative -k means at least k."""
    if a.ndim != len(shape) or any(
        (s is not None and s >= 0 and d != s) or (s is not None and s < 0 and d < -s)
        for d, s in zip(a.shape, shape, strict=True)
    ):
        want = "[" + ", ".join("T" if s is None else (f">={-s}" if s < 0 else str(s)) for s in shape) + "]"
        raise DatasetError(f"{where}: wrong shape {list(a.shape)}, expected {want}")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0].tolist()
        raise DatasetError(f"{where}: contains NaN or inf (first at index {bad})")


def _check_sequence(s: DexH2RSequence, where: str | None = None) -> None:
    where = where or str(s.id)
    _check_array(s.qpos, (None, QPOS_DIM), f"{where}/qpos.pt")
    T = len(s.qpos)
    if T == 0:
        raise DatasetError(f"{where}/qpos.pt: no frames")
    _check_array(s.obj_pose, (T, 4, 4), f"{where}/obj_pose.pt")
    _check_array(s.obj_pcd, (T, None, 3), f"{where}/real_obj_pcd_xyz.pt")
    if s.mano is None and s.giver_keypoints is None:
        raise DatasetError(
            f"{where}: no giver hand: neither left_mano.pt / right_mano.pt nor {GIVER_KEYPOINTS_FILE}"
        )
    if s.mano is not None:
        if s.mano_side not in ("left", "right"):
            raise DatasetError(f"{where}: mano_side must be 'left' or 'right' with MANO, got {s.mano_side!r}")
        _check_array(s.mano, (T, MANO_DIM), f"{where}/{s.mano_side}_mano.pt")
    elif s.mano_side not in ("left", "right", None):
        raise DatasetError(f"{where}/motion_info.yaml: giver_side must be left or right, got {s.mano_side!r}")
    if s.giver_keypoints is not None:
        _check_array(s.giver_keypoints, (T, N_KEYPOINTS, 3), f"{where}/{GIVER_KEYPOINTS_FILE}")
    if not np.allclose(s.obj_pose[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-5):
        raise DatasetError(f"{where}/obj_pose.pt: last row of a pose is not [0, 0, 0, 1]")
    if not 0 <= s.grasp_begin_frame <= T:
        raise DatasetError(
            f"{where}/motion_info.yaml: grasp_begin_frame_index {s.grasp_begin_frame} is outside [0, {T}]"
        )


def _torch():
    import torch  # lazily: the rest of the stack does not need it to import this module

    return torch


def _load_tensor(path: Path) -> np.ndarray:
    if not path.exists():
        raise DatasetError(f"{path}: missing file")
    try:
        value = _torch().load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if hasattr(value, "numpy"):
        value = value.detach().float().numpy() if value.is_floating_point() else value.numpy()
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: expected a numeric tensor, got dtype {value.dtype}")
    return value.astype(np.float32)


class DexH2RDataset:
    """A DexH2R dataset root: its split file and its sequences."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root is not a directory")
        self.split = load_split(self.root / "dataset_split.json")

    def all_sequence_ids(self) -> list[SequenceId]:
        """Every <subject>/<object>/<seq> folder holding a qpos.pt, sorted."""
        return sorted(
            (SequenceId(p.parts[-4], p.parts[-3], p.parts[-2]) for p in self.root.glob("*/*/*/qpos.pt")),
            key=lambda s: (s.subject, s.object, _natural(s.seq)),
        )

    def sequence_ids(self, split: Split = "all") -> list[SequenceId]:
        return [s for s in self.all_sequence_ids() if in_split(self.split, s.subject, s.object, split)]

    def load(self, seq: SequenceId | str) -> DexH2RSequence:
        if isinstance(seq, str):
            parts = seq.strip("/").split("/")
            if len(parts) != 3:
                raise DatasetError(f"sequence id '{seq}': expected <subject>/<object>/<seq>")
            seq = SequenceId(*parts)
        return read_sequence(seq.path(self.root), seq)

    def sequence_info(self, seq: SequenceId | str) -> dict:
        """The sim episode's `episode_info.json` (scenario, object id and scale, difficulty, motion,
        outcome, rate_hz, pool_file, ...); {} for a sequence without one (the real dataset)."""
        seq_id = seq if isinstance(seq, SequenceId) else SequenceId(*str(seq).strip("/").split("/"))
        path = seq_id.path(self.root) / EPISODE_INFO_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from exc

    def objects(self) -> dict[str, dict]:
        """objects.json of sim datasets: layout object name -> {object_id, scale, split, pool_file};
        {} when absent (the real dataset)."""
        path = self.root / "objects.json"
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()).get("objects", {}))
        except (json.JSONDecodeError, AttributeError) as exc:
            raise DatasetError(f"{path}: not a valid objects file ({exc})") from exc

    def object_surface_points(self, object_name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(points [4096, 3], normals or None) of obj_surface_pcd_4096/<object>.ply, object frame."""
        path = self.root / "obj_surface_pcd_4096" / f"{object_name}.ply"
        if not path.exists():
            raise DatasetError(f"{path}: missing file")
        import open3d as o3d  # reads ASCII and binary PLY, with normals

        cloud = o3d.io.read_point_cloud(str(path), format="ply")
        points = np.asarray(cloud.points, dtype=np.float32)
        if len(points) == 0:
            raise DatasetError(f"{path}: cannot read any points")
        _check_array(points, (None, 3), str(path))
        normals = np.asarray(cloud.normals, dtype=np.float32) if cloud.has_normals() else None
        return points, normals

    def object_model(self, object_name: str) -> Path:
        """The object's mesh file under object_model/ (.obj preferred, else .urdf)."""
        for ext in (".obj", ".urdf"):
            for path in (
                self.root / "object_model" / f"{object_name}{ext}",
                self.root / "object_model" / object_name / f"{object_name}{ext}",
            ):
                if path.exists():
                    return path
        raise DatasetError(f"{self.root / 'object_model'}: no mesh for object '{object_name}'")


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def load_split(path: Path) -> dict[str, list[str]]:
    if not path.exists():
        raise DatasetError(f"{path}: missing file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    missing = [k for k in SPLIT_KEYS if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    for key in SPLIT_KEYS:
        if not isinstance(data[key], list) or not all(isinstance(v, str) for v in data[key]):
            raise DatasetError(f"{path}: {key} must be a list of names")
    return {k: list(v) for k, v in data.items() if isinstance(v, list)}


def in_split(split: dict[str, list[str]], subject: str, obj: str, which: Split) -> bool:
    """The official code's split rules (method doc 2.3), by subject and object."""
    s_tr, s_va, s_te = (subject in split[k] for k in ("train_sub_names", "val_sub_names", "test_sub_names"))
    o_tr, o_va, o_te = (obj in split[k] for k in ("train_obj", "val_obj", "test_obj"))
    if which == "all":
        return True
    if which == "motionnet_train":  # datasets/DynamicMotion.py
        return s_tr and o_tr
    if which == "motionnet_test":
        return (s_tr and o_te) or (s_te and o_tr) or ((s_te or s_va) and (o_te or o_va))
    if which == "dp_train":  # dataset_generation/merge_dataset.py
        return s_tr and o_tr
    if which == "dp_val":
        return (s_va and o_va) or (s_tr and o_va) or (s_va and o_tr)
    if which == "dp_test":
        return (s_te and (o_tr or o_va)) or (s_te and o_te) or ((s_tr or s_va) and o_te)
    if which == "cvae_train":  # grasp cVAE: by object only
        return o_tr
    if which == "cvae_test":
        return o_te or o_va
    raise ValueError(f"unknown split '{which}'")


def read_sequence(folder: Path, seq_id: SequenceId | None = None) -> DexH2RSequence:
    """One sequence folder, checked (see DatasetError)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: sequence folder does not exist")
    seq_id = seq_id or SequenceId(folder.parts[-3], folder.parts[-2], folder.parts[-1])
    qpos = _load_tensor(folder / "qpos.pt")
    _check_array(qpos, (None, QPOS_DIM), str(folder / "qpos.pt"))
    obj_pose = _load_tensor(folder / "obj_pose.pt")
    pcd = _load_tensor(folder / "real_obj_pcd_xyz.pt")
    _check_array(pcd, (len(qpos), None, -3), str(folder / "real_obj_pcd_xyz.pt"))
    sides = [s for s in ("left", "right") if (folder / f"{s}_mano.pt").exists()]
    has_keypoints = (folder / GIVER_KEYPOINTS_FILE).exists()
    if len(sides) > 1:
        raise DatasetError(
            f"{folder}/left_mano.pt or right_mano.pt: both left_mano.pt and right_mano.pt present"
        )
    if not sides and not has_keypoints:
        raise DatasetError(
            f"{folder}/left_mano.pt or right_mano.pt: missing file (and no {GIVER_KEYPOINTS_FILE})"
        )
    mano = _load_tensor(folder / f"{sides[0]}_mano.pt") if sides else None
    keypoints = _load_tensor(folder / GIVER_KEYPOINTS_FILE) if has_keypoints else None
    info_path = folder / "motion_info.yaml"
    if not info_path.exists():
        raise DatasetError(f"{info_path}: missing file")
    try:
        info = yaml.safe_load(info_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{info_path}: not valid YAML ({exc})") from exc
    begin = info.get("grasp_begin_frame_index") if isinstance(info, dict) else None
    if not isinstance(begin, int) or isinstance(begin, bool):
        raise DatasetError(f"{info_path}: grasp_begin_frame_index must be an integer, got {begin!r}")
    # Checked against the folder's full path first, so an error names the file on disk.
    seq = DexH2RSequence.__new__(DexH2RSequence)
    seq.id, seq.qpos, seq.obj_pose, seq.obj_pcd = seq_id, qpos, obj_pose, pcd[..., :3]
    side = sides[0] if sides else info.get("giver_side")
    seq.mano, seq.mano_side, seq.grasp_begin_frame = mano, side, begin
    seq.giver_keypoints = keypoints
    _check_sequence(seq, str(folder))
    return seq


def write_sequence(root: str | Path, seq: DexH2RSequence, pcd_extra: np.ndarray | None = None) -> Path:
    """Write `seq` in the DexH2R layout under root/<subject>/<object>/<seq>/ (float32 tensors).

    pcd_extra: optional [T, N, k] channels appended to the cloud (the real files may carry more
    than xyz).
    """
    _check_sequence(seq)
    torch = _torch()
    folder = seq.id.path(Path(root))
    folder.mkdir(parents=True, exist_ok=True)
    pcd = seq.obj_pcd if pcd_extra is None else np.concatenate([seq.obj_pcd, pcd_extra], axis=-1)

    def save(name: str, a: np.ndarray) -> None:
        torch.save(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), folder / name)

    save("qpos.pt", seq.qpos)
    save("obj_pose.pt", seq.obj_pose)
    save("real_obj_pcd_xyz.pt", pcd)
    for side in ("left", "right"):  # a rewrite must not leave the other (or a stale) MANO file
        if seq.mano is None or side != seq.mano_side:
            (folder / f"{side}_mano.pt").unlink(missing_ok=True)
    if seq.mano is not None:
        save(f"{seq.mano_side}_mano.pt", seq.mano)
    if seq.giver_keypoints is not None:
        save(GIVER_KEYPOINTS_FILE, seq.giver_keypoints)
    else:
        (folder / GIVER_KEYPOINTS_FILE).unlink(missing_ok=True)
    info = {"grasp_begin_frame_index": int(seq.grasp_begin_frame)}
    if seq.mano is None and seq.mano_side is not None:
        info["giver_side"] = seq.mano_side  # no MANO file name to carry it
    (folder / "motion_info.yaml").write_text(yaml.safe_dump(info))
    return folder


def write_split(root: str | Path, split: dict[str, list[str]]) -> Path:
    """dataset_split.json; the all_* lists are filled in from the others when absent."""
    data = {k: list(split.get(k, [])) for k in SPLIT_KEYS}
    data["all_sub_names"] = list(
        split.get("all_sub_names", data["train_sub_names"] + data["val_sub_names"] + data["test_sub_names"])
    )
    data["all_obj"] = list(split.get("all_obj", data["train_obj"] + data["val_obj"] + data["test_obj"]))
    path = Path(root) / "dataset_split.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def write_object_surface(root: str | Path, object_name: str, points: np.ndarray, normals: np.ndarray) -> Path:
    """obj_surface_pcd_4096/<object>.ply with normals (ASCII PLY)."""
    path = Path(root) / "obj_surface_pcd_4096" / f"{object_name}.ply"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "ply\nformat ascii 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property float nx\nproperty float ny\nproperty float nz\nend_header\n"
    )
    rows = np.concatenate([points, normals], axis=1)
    path.write_text(header + "\n".join(" ".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
    return path
