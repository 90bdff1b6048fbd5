"""`dexh2r eval grasps`: the paper's grasp table (succ6, succ1, pen_depth, diversity) for a grasp
generator on held-out objects.

    dexh2r eval grasps --json runs/grasps.json [--objects test] [--limit 5] [--grasps 25]
    dexh2r eval grasps --generator cvae --checkpoint checkpoints/grasp_cvae_small.pt --grasps 500 \
        --json runs/grasps/cvae.json

For every object, the generator proposes `--grasps` grasps (object frame); each goes through the
stability test (`dexh2r_policy.grasps.stability`) and the penetration measure. Metrics (means over
all grasps of all objects, as the paper's table):

- `succ6` / `succ1`: share of grasps stable in all six / at least one push direction;
- `pen_depth_mm`: deepest hand surface point inside the object, mean over all grasps
  (`pen_depth_mm_succ6`: over the succ6 grasps only; the paper's code logs both);
- `diversity`: DexGraspNet's measure, the std of each finger joint angle (rad) over the succ6
  grasps of an object, averaged over joints, then over objects (None where fewer than 2).

Generators (`GENERATORS`, factories `(robot, checkpoint=None, seed=0)`; any object with `name`
and `generate(obj, n)` works with `evaluate_generator`): `pool` (the geometric pool synthesis
with physics closure, the paper's whole-hand grasps), `pinch` (`grasps.pinch`: the expert's
fingertip pinch from above, per approach direction) and `cvae` (`grasps.cvae`: `sample_pool` of
the checkpoint on the object's library surface samples, n grasps spread over the 25 x 20
rotation grid, untested until here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _pool_generator(robot, checkpoint=None, seed=0):
    from dexh2r_policy.grasps.pool import PoolGenerator

    return PoolGenerator(robot)


def _cvae_generator(robot, checkpoint=None, seed=0):
    from dexh2r_policy.grasps.cvae import DEFAULT_CHECKPOINT, CVAEGenerator, load_cvae

    model, _ = load_cvae(checkpoint or DEFAULT_CHECKPOINT)
    if model.config.robot != robot.config.name:
        raise ValueError(f"the CVAE checkpoint is for robot {model.config.robot}, not {robot.config.name}")
    return CVAEGenerator(model, seed=seed)


def _pinch_generator(robot, checkpoint=None, seed=0):
    from dexh2r_policy.grasps.pinch import PinchGenerator

    return PinchGenerator(robot)


# name -> factory(robot, checkpoint=None, seed=0) -> GraspGenerator
GENERATORS = {"pool": _pool_generator, "pinch": _pinch_generator, "cvae": _cvae_generator}


def evaluate_generator(generator, robot, objects: list, n: int, progress=None) -> dict:
    """Metrics of `generator` on `objects` (SimObjects), n grasps each; per-object rows included."""
    from dexh2r_policy.grasps.pool import evaluate_grasps

    rows = []
    stable_all, pen_all = [], []
    for obj in objects:
        t0 = time.perf_counter()
        T, q = generator.generate(obj, n)
        res = evaluate_grasps(robot, obj, T, q)
        rows.append(
            {
                **object_row(obj.id, q, res["stable"], res["pen_depth"]),
                "seconds_per_grasp": (time.perf_counter() - t0) / max(len(T), 1),
            }
        )
        stable_all.append(res["stable"])
        pen_all.append(res["pen_depth"])
        if progress is not None:
            progress(1)
    return {"generator": generator.name, **summarise(rows, stable_all, pen_all)}


def object_row(object_id: str, finger_q: np.ndarray, stable: np.ndarray, pen_depth: np.ndarray) -> dict:
    """One object's metrics from its grasps' joints [n, 22], test results [n, 6] and depths [n] (m)."""
    succ6 = stable.all(axis=1)
    return {
        "object_id": object_id,
        "grasps": len(stable),
        "succ6": float(succ6.mean()) if len(stable) else 0.0,
        "succ1": float(stable.any(axis=1).mean()) if len(stable) else 0.0,
        "pen_depth_mm": float(pen_depth.mean() * 1000.0) if len(stable) else 0.0,
        "diversity": float(np.std(finger_q[succ6], axis=0).mean()) if succ6.sum() >= 2 else None,
    }


def pool_file_metrics(pools: list) -> dict:
    """The same table from tested `GraspPool`s (e.g. `datagen grasps` output): `--generator pool`
    with `--grasps` = the pools' size tests exactly these grasps (the synthesis is deterministic)."""
    rows = [
        {**object_row(p.object_id, p.finger_q, p.stable, p.pen_depth), "seconds_per_grasp": 0.0}
        for p in pools
    ]
    return {
        "generator": "pool (files)",
        **summarise(rows, [p.stable for p in pools], [p.pen_depth for p in pools]),
    }


def summarise(rows: list[dict], stable_all: list, pen_all: list) -> dict:
    """Totals over all grasps of all objects (diversity: mean over objects), rows kept."""
    stable = np.concatenate(stable_all) if stable_all else np.zeros((0, 6), bool)
    pen = np.concatenate(pen_all) if pen_all else np.zeros(0)
    s6 = stable.all(axis=1)
    divs = [r["diversity"] for r in rows if r["diversity"] is not None]
    return {
        "objects": len(rows),
        "grasps": len(stable),
        "succ6": float(s6.mean()) if len(s6) else 0.0,
        "succ1": float(stable.any(axis=1).mean()) if len(s6) else 0.0,
        "pen_depth_mm": float(pen.mean() * 1000.0) if len(pen) else 0.0,
        "pen_depth_mm_succ6": float(pen[s6].mean() * 1000.0) if s6.any() else None,
        "diversity": float(np.mean(divs)) if divs else None,
        "seconds_per_grasp": float(np.mean([r["seconds_per_grasp"] for r in rows])) if rows else 0.0,
        "per_object": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r eval grasps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write the metrics here")
    parser.add_argument("--generator", default="pool", choices=sorted(GENERATORS))
    parser.add_argument("--objects", default="test", help="test (held out), train, all, or ids/patterns")
    parser.add_argument("--limit", type=int, default=None, help="at most this many objects")
    parser.add_argument("--grasps", type=int, default=25, help="per object (the paper tests 25)")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--checkpoint", help="cvae: the model file (default checkpoints/grasp_cvae_small.pt)")
    parser.add_argument("--seed", type=int, default=0, help="cvae: latent sampling seed")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.grasps < 1:
        print("dexh2r eval grasps: --grasps must be >= 1", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.datagen import resolve_objects
    from dexh2r_sim.objects import ObjectLibrary, UnknownObjectError

    library = ObjectLibrary()
    try:
        ids = resolve_objects(args.objects, library)
    except (ValueError, UnknownObjectError) as exc:
        print(f"dexh2r eval grasps: {exc}", file=sys.stderr)
        return 2
    ids = ids[: args.limit] if args.limit is not None else ids
    if not ids:
        print("dexh2r eval grasps: no objects selected", file=sys.stderr)
        return 2
    robot = RobotDescription.load(args.robot)
    from dexh2r_policy.motionnet import CheckpointError

    try:
        generator = GENERATORS[args.generator](robot, checkpoint=args.checkpoint, seed=args.seed)
    except (CheckpointError, ValueError) as exc:
        print(f"dexh2r eval grasps: {exc}", file=sys.stderr)
        return 2
    with tqdm(total=len(ids), desc=f"eval grasps ({args.generator})", unit="obj", disable=None) as bar:
        result = evaluate_generator(generator, robot, [library.get(i) for i in ids], args.grasps, bar.update)
    result.update({"object_selection": args.objects, "grasps_per_object": args.grasps, "robot": args.robot})
    if args.generator == "cvae":
        result.update({"checkpoint": args.checkpoint or "checkpoints/grasp_cvae_small.pt", "seed": args.seed})
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    div = "n/a" if result["diversity"] is None else f"{result['diversity']:.3f}"
    print(
        f"{args.generator}: {result['objects']} objects, {result['grasps']} grasps: "
        f"succ6 {result['succ6']:.3f} succ1 {result['succ1']:.3f} "
        f"pen {result['pen_depth_mm']:.2f} mm diversity {div} -> {path}"
    )
    return 0
