"""`dexh2r datagen`: training data from the sim.

    dexh2r datagen grasps --objects train --out data/pools [--candidates 500] [--workers 2]
    dexh2r datagen grasps --objects prim/mug,pb/duck --out /tmp/pools --candidates 20

`grasps` writes one tested grasp pool per object (`<out>/<source>__<name>.npz`, see
`dexh2r_policy.grasps.pool`) and `<out>/summary.json`: the run's settings and, per object and in
total, succ6 / succ1 / penetration depth / seconds per candidate. An object whose pool file exists
is skipped unless `--overwrite` (so an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path


def resolve_objects(spec: str, library) -> list[str]:
    """`train` / `test` / `all`, or comma-separated ids and fnmatch patterns (`pbr/9??`)."""
    if spec in ("train", "test", "all"):
        return library.ids(spec)
    out: list[str] = []
    known = library.ids("all")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        hits = fnmatch.filter(known, item) if any(ch in item for ch in "*?[") else [item]
        if not hits:
            raise ValueError(f"--objects: '{item}' matches no object id")
        for oid in hits:
            library.get(oid)  # unknown / excluded ids fail here, with the library's message
            if oid not in out:
                out.append(oid)
    return out


def _pool_worker(job: tuple) -> dict:
    """One object's pool (runs in a worker process or inline)."""
    object_id, out, candidates, robot_name, position = job
    from tqdm import tqdm

    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.grasps.pool import generate_pool, pool_filename
    from dexh2r_sim.objects import ObjectLibrary

    robot = RobotDescription.load(robot_name)
    obj = ObjectLibrary().get(object_id)
    t0 = time.perf_counter()
    with tqdm(
        total=2 * candidates, desc=object_id, position=position, leave=False, unit="step", disable=None
    ) as bar:
        pool = generate_pool(robot, obj, n=candidates, progress=bar.update)
    path = pool.save(Path(out) / pool_filename(object_id))
    return {
        "object_id": object_id,
        "file": path.name,
        **pool_stats(pool),
        "seconds": time.perf_counter() - t0,
    }


def pool_stats(pool) -> dict:
    n = len(pool)
    return {
        "candidates": n,
        "succ6": float(pool.succ6.mean()) if n else 0.0,
        "succ1": float(pool.succ1.mean()) if n else 0.0,
        "pen_depth_mm": float(pool.pen_depth.mean() * 1000.0) if n else 0.0,
        "seconds_per_candidate": float(pool.info.get("seconds_per_candidate", float("nan"))),
    }


def grasps(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r datagen grasps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", default="train", help="train, test, all, or ids/patterns (a,b)")
    parser.add_argument("--out", required=True, help="output folder (pools + summary.json)")
    parser.add_argument("--candidates", type=int, default=500, help="per object (the paper's 25 x 20 = 500)")
    parser.add_argument("--workers", type=int, default=1, help="processes (objects in parallel)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many objects")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--overwrite", action="store_true", help="recompute pools that exist")
    args = parser.parse_args(argv)
    if args.candidates < 1 or args.workers < 1:
        print("dexh2r datagen grasps: --candidates and --workers must be >= 1", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from dexh2r_policy.grasps.pool import GraspPool, PoolConfig, pool_filename
    from dexh2r_sim.objects import ObjectLibrary, UnknownObjectError

    try:
        ids = resolve_objects(args.objects, ObjectLibrary())
    except (ValueError, UnknownObjectError) as exc:
        print(f"dexh2r datagen grasps: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None:
        ids = ids[: args.limit]
    if not ids:
        print("dexh2r datagen grasps: no objects selected", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    todo = []
    for oid in ids:
        path = out / pool_filename(oid)
        if path.exists() and not args.overwrite:
            pool = GraspPool.load(path)
            if len(pool) == min(args.candidates, PoolConfig().n_candidates):
                rows.append({"object_id": oid, "file": path.name, **pool_stats(pool), "skipped": True})
                continue
        todo.append(oid)
    t0 = time.perf_counter()
    jobs = [(oid, str(out), args.candidates, args.robot, 1 + k % args.workers) for k, oid in enumerate(todo)]
    with tqdm(total=len(ids), initial=len(rows), desc="objects", unit="obj", disable=None) as bar:
        if args.workers == 1:
            results = map(_pool_worker, jobs)
        else:
            import multiprocessing as mp

            pool_ctx = mp.get_context("spawn").Pool(args.workers)
            results = pool_ctx.imap_unordered(_pool_worker, jobs)
        for row in results:
            rows.append(row)
            bar.update(1)
            bar.set_postfix(succ6=f"{row['succ6']:.2f}")
        if args.workers > 1:
            pool_ctx.close()
            pool_ctx.join()
    rows.sort(key=lambda r: ids.index(r["object_id"]))
    total = sum(r["candidates"] for r in rows)

    def weighted(key: str) -> float:
        return sum(r[key] * r["candidates"] for r in rows) / total if total else 0.0

    summary = {
        "objects": args.objects,
        "candidates_per_object": args.candidates,
        "robot": args.robot,
        "workers": args.workers,
        "wall_s": time.perf_counter() - t0,
        "total": {
            "objects": len(rows),
            "candidates": total,
            "succ6": weighted("succ6"),
            "succ1": weighted("succ1"),
            "pen_depth_mm": weighted("pen_depth_mm"),
            "seconds_per_candidate": weighted("seconds_per_candidate"),
        },
        "per_object": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    t = summary["total"]
    print(
        f"{len(rows)} objects, {total} grasps: succ6 {t['succ6']:.3f} succ1 {t['succ1']:.3f} "
        f"pen {t['pen_depth_mm']:.2f} mm, {t['seconds_per_candidate']:.3f} s/candidate -> {out}/summary.json"
    )
    return 0


SUBCOMMANDS = {"grasps": (grasps, "tested grasp pools per object (25 x 20 candidates)")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = ["usage: dexh2r datagen <what> [args...]", "", "what:"]
        lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
        print("\n".join(lines), file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return SUBCOMMANDS[argv[0]][0](argv[1:])
