"""Checkpoint file I/O shared by the policy models (MotionNet, DP / DP3, grasp CVAE).

Each model module keeps its own format name, version and error class; these helpers do the
atomic write, the float16 export and the checked read with the same error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def write_checkpoint(path: str | Path, state: dict) -> Path:
    """Atomic torch.save of `state` to `path` (parent folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def model_state(fmt: str, version: int, model: torch.nn.Module, **extra: Any) -> dict:
    """{'format', 'version', 'model_config', 'model', **extra}: the MotionNet-style layout."""
    from dexh2r_core.config import to_dict

    return {
        "format": fmt,
        "version": version,
        "model_config": to_dict(model.config),
        "model": model.state_dict(),
        **extra,
    }


def export_half(ckpt: dict, src: str | Path, dst: str | Path, drop: tuple[str, ...]) -> Path:
    """A deployable copy of `ckpt` (read from `src`): weights in float16, the keys in `drop`
    left out, `exported_from` added."""
    keep = {k: v for k, v in ckpt.items() if k not in drop and k != "model"}
    weights = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return write_checkpoint(dst, {**keep, "model": weights, "exported_from": str(src)})


def read_checked(
    path: str | Path,
    fmt: str,
    version: int,
    kind: str,
    error: type[Exception],
    known: dict[str, str] | None = None,
) -> dict:
    """The checkpoint dict at `path`, checked for format `fmt` and `version`; faults raise
    `error` naming the file ("not a <kind> checkpoint (...)"; `known` names other formats)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise error(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    got = ckpt.get("format") if isinstance(ckpt, dict) else None
    if got != fmt:
        what = (known or {}).get(got) if isinstance(got, str) else None
        what = what or f"format {got!r}"
        raise error(f"{path}: not a {kind} checkpoint ({what})")
    if ckpt.get("version") != version:
        raise error(f"{path}: checkpoint version {ckpt.get('version')}, this code reads {version}")
    return ckpt
