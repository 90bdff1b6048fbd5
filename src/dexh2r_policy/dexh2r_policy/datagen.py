"""`dexh2r datagen`: training data from the sim.

    dexh2r datagen grasps --objects train --out data/pools [--candidates 500] [--workers 2]
    dexh2r datagen grasps --objects train --out data/pools --family pinch    # fingertip pinches
    dexh2r datagen grasps --objects prim/mug,pb/duck --out /tmp/pools --candidates 20

`grasps` writes one tested grasp pool per object and family (`<out>/<source>__<name>.npz` for the
paper's whole-hand grasps, `dexh2r_policy.grasps.pool`; `<out>/<source>__<name>.pinch.npz` for
`--family pinch`, `dexh2r_policy.grasps.pinch`; the pool of an object is every family found) and
`<out>/summary.json` (`summary.pinch.json`): the run's settings and, per object and in total,
succ6 / succ1 / penetration depth / seconds per candidate. An object whose pool file exists is
skipped unless `--overwrite` (so an interrupted run resumes).

    dexh2r datagen episodes --scenarios config/scenarios/train.yaml --episodes 500 --out data/episodes
    dexh2r datagen episodes --episodes 4 --out /tmp/ep --rate-hz 10 --workers 2 --seed 7

`episodes` records handovers of the sim cell driven by the privileged scripted expert in the
DexH2R layout (`dexh2r_policy.episodes`, docs/policy_data.md): successful episodes become
sequences `<out>/<subject>/<object>/<scenario>/`; every episode's outcome goes to
`<out>/episodes.jsonl` and the expert's success rate per set to `<out>/summary.json`, next to
`dataset_split.json`, `objects.json` (object names, ids, pool files) and the objects' surface
samples. Scenarios already in episodes.jsonl are skipped unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from contextlib import contextmanager
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


@contextmanager
def _results(worker, jobs: list, workers: int, initializer=None, initargs: tuple = ()):
    """`worker(job)` for every job: inline, in order, with one worker; else in `workers` spawned
    processes, as they finish (the pool is closed afterwards, terminated on an error)."""
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        yield map(worker, jobs)
        return
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield pool.imap_unordered(worker, jobs)
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _pool_worker(job: tuple) -> dict:
    """One object's pool (runs in a worker process or inline)."""
    object_id, out, candidates, robot_name, position, family, scale = job
    from tqdm import tqdm

    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.grasps.pool import generate_pool, pool_filename
    from dexh2r_sim.objects import ObjectLibrary

    robot = RobotDescription.load(robot_name)
    obj = ObjectLibrary().get(object_id, scale=scale)
    generator = None
    if family == "pinch":
        from dexh2r_policy.grasps.pinch import PinchGenerator

        generator = PinchGenerator(robot)
    t0 = time.perf_counter()
    with tqdm(
        total=2 * candidates, desc=object_id, position=position, leave=False, unit="step", disable=None
    ) as bar:
        pool = generate_pool(robot, obj, n=candidates, progress=bar.update, generator=generator)
    path = pool.save(Path(out) / pool_filename(object_id, scale, family=family))
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
    parser.add_argument(
        "--family",
        choices=("power", "pinch"),
        default="power",
        help="power: the paper's whole-hand grasps; pinch: fingertip pinches from above (the expert's)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="per object (default the family's grid: power 25 x 20 = 500 as the paper, pinch 25 x 8 = 200)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (objects in parallel)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="the objects' scale (a scenario's object_scale; files <id>@<scale>.npz)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many objects")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--overwrite", action="store_true", help="recompute pools that exist")
    args = parser.parse_args(argv)
    from dexh2r_policy.grasps.pinch import PinchConfig
    from dexh2r_policy.grasps.pool import GraspPool, PoolConfig, pool_filename

    grid = PinchConfig().n_candidates if args.family == "pinch" else PoolConfig().n_candidates
    if args.candidates is None:
        args.candidates = grid
    if args.candidates < 1 or args.workers < 1:
        print("dexh2r datagen grasps: --candidates and --workers must be >= 1", file=sys.stderr)
        return 2

    from tqdm import tqdm

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
        path = out / pool_filename(oid, args.scale, family=args.family)
        if path.exists() and not args.overwrite:
            pool = GraspPool.load(path)
            if pool.info.get("requested", len(pool)) == min(args.candidates, grid):
                rows.append({"object_id": oid, "file": path.name, **pool_stats(pool), "skipped": True})
                continue
        todo.append(oid)
    t0 = time.perf_counter()
    jobs = [
        (oid, str(out), args.candidates, args.robot, 1 + k % args.workers, args.family, args.scale)
        for k, oid in enumerate(todo)
    ]
    with (
        tqdm(total=len(ids), initial=len(rows), desc="objects", unit="obj", disable=None) as bar,
        _results(_pool_worker, jobs, args.workers) as results,
    ):
        for row in results:
            rows.append(row)
            bar.update(1)
            bar.set_postfix(succ6=f"{row['succ6']:.2f}")
    rows.sort(key=lambda r: ids.index(r["object_id"]))
    total = sum(r["candidates"] for r in rows)

    def weighted(key: str) -> float:
        return sum(r[key] * r["candidates"] for r in rows) / total if total else 0.0

    summary = {
        "family": args.family,
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
    stem = "summary" if args.scale == 1.0 else f"summary@{args.scale:g}"
    name = f"{stem}.json" if args.family == "power" else f"{stem}.{args.family}.json"
    (out / name).write_text(json.dumps(summary, indent=2))
    t = summary["total"]
    print(
        f"{len(rows)} objects, {total} grasps: succ6 {t['succ6']:.3f} succ1 {t['succ1']:.3f} "
        f"pen {t['pen_depth_mm']:.2f} mm, {t['seconds_per_candidate']:.3f} s/candidate -> {out}/{name}"
    )
    return 0


# ---- episodes ------------------------------------------------------------------------------------

_RECORDER = None  # one sim cell per worker process


def _episode_init(config) -> None:
    global _RECORDER
    from dexh2r_policy.episodes import EpisodeRecorder

    _RECORDER = EpisodeRecorder(config)


def _episode_worker(job: tuple) -> dict:
    """Run one expert episode; write its sequence when it succeeded; return its record."""
    import torch

    from dexh2r_policy.data.dexh2r_layout import EPISODE_INFO_FILE, write_sequence

    index, scenario, subject, out, pool_file = job
    if _RECORDER is None:
        raise RuntimeError("_episode_init was not called in this process")
    rec = _RECORDER.run(scenario, subject)
    s = scenario
    row = {
        "episode": index,
        "scenario": s.name,
        "object_id": s.object_id,
        "object_scale": s.object_scale,
        "difficulty": s.difficulty,
        "motion": s.motion.type,
        "giver_side": s.giver_side,
        "seed": s.seed,
        "subject": subject,
        "outcome": rec.outcome,
        "detail": rec.detail,
        "time_s": rec.time_s,
        "time_to_handover_s": rec.time_to_handover_s,
        "close_time_s": rec.close_time_s,
        "cloud_sources": rec.cloud_sources,
        "wall_s": rec.wall_s,
        "sequence": None,
    }
    if rec.sequence is not None:
        seq = rec.sequence
        folder = write_sequence(out, seq)
        torch.save(torch.from_numpy(rec.robot_joints), folder / "robot_joints.pt")
        info = {
            **{k: v for k, v in row.items() if k not in ("sequence", "wall_s")},
            "rate_hz": _RECORDER.config.rate_hz,
            "frames": seq.n_frames,
            "grasp_begin_frame_index": seq.grasp_begin_frame,
            "pool_file": pool_file,
            "robot_joint_names": list(_RECORDER.cell.robot.joint_names),
            "qpos_root_frame": "hand mount (rh_wrist) with the hand's wrist joints folded in; qpos[6:8] = 0",
        }
        (folder / EPISODE_INFO_FILE).write_text(json.dumps(info, indent=2))
        row["sequence"] = str(seq.id)
        row["frames"] = seq.n_frames
        row["bytes"] = sum(f.stat().st_size for f in folder.iterdir())
    return row


def _rate(rows: list[dict]) -> dict:
    n = len(rows)
    ok = sum(r["outcome"] == "success" for r in rows)
    return {"episodes": n, "success": ok, "success_rate": ok / n if n else None}


def episode_summary(rows: list[dict], held_out: set[str]) -> dict:
    """The expert's success rate per set (easy / hard x train / held-out objects) and costs."""
    from collections import Counter

    sets: dict[str, list[dict]] = {"all": rows}
    for diff in ("easy", "hard"):
        sets[diff] = [r for r in rows if r["difficulty"] == diff]
    for name, test in (("train_objects", False), ("held_out_objects", True)):
        sets[name] = [r for r in rows if (r["object_id"] in held_out) == test]
        for diff in ("easy", "hard"):
            sets[f"{diff}/{name}"] = [r for r in sets[name] if r["difficulty"] == diff]
    written = [r for r in rows if r.get("sequence")]
    n = len(rows)
    return {
        "expert": {k: _rate(v) for k, v in sets.items() if v},
        "per_object": {
            oid: _rate([r for r in rows if r["object_id"] == oid])
            for oid in sorted({r["object_id"] for r in rows})
        },
        "outcomes": dict(Counter(r["outcome"] for r in rows)),
        "written_sequences": len(written),
        "frames": sum(r["frames"] for r in written),
        "seconds_per_episode": sum(r["wall_s"] for r in rows) / n if n else None,
        "seconds_per_written_episode": sum(r["wall_s"] for r in rows) / len(written) if written else None,
        "sim_seconds_per_episode": sum(r["time_s"] for r in rows) / n if n else None,
        "bytes_per_sequence": sum(r["bytes"] for r in written) / len(written) if written else None,
    }


def episodes(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r datagen episodes", description="expert handover episodes")
    parser.add_argument("--scenarios", default="scenarios/train.yaml", help="scenario-set YAML (a generator)")
    parser.add_argument("--episodes", type=int, default=100, help="how many episodes to run")
    parser.add_argument("--out", required=True, help="dataset root (DexH2R layout)")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="recorded frames per sim second")
    parser.add_argument("--workers", type=int, default=1, help="processes (episodes in parallel)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: the file's)")
    parser.add_argument("--held-out-fraction", type=float, default=0.2, help="episodes on held-out objects")
    parser.add_argument(
        "--held-out-objects", default="prim", help="'prim' (held-out primitives), 'test', or ids/patterns"
    )
    parser.add_argument("--points", type=int, default=1024, help="object cloud points per frame")
    parser.add_argument("--cloud", choices=("depth", "surface"), default="depth")
    parser.add_argument("--keep-scale", action="store_true", help="keep the generator's object scales")
    parser.add_argument("--subjects", type=int, default=10, help="giver subjects (motion-seed groups)")
    parser.add_argument("--pools", default="data/pools", help="where `datagen grasps` put the pools")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--overwrite", action="store_true", help="run again scenarios already recorded")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.workers < 1 or not 0.0 <= args.held_out_fraction <= 1.0:
        print(
            "dexh2r datagen episodes: --episodes/--workers >= 1, --held-out-fraction in [0, 1]",
            file=sys.stderr,
        )
        return 2

    from tqdm import tqdm

    from dexh2r_core.config import ConfigError
    from dexh2r_policy.data.dexh2r_layout import write_split
    from dexh2r_policy.episodes import (
        EpisodeConfig,
        episode_scenarios,
        object_entry,
        object_name,
        subject_names,
        subject_of,
        write_objects,
    )
    from dexh2r_policy.grasps.pool import pool_filename
    from dexh2r_sim.objects import ObjectLibrary, UnknownObjectError
    from dexh2r_sim.scenario import load_scenario_set

    library = ObjectLibrary()
    try:
        config = EpisodeConfig(
            rate_hz=args.rate_hz, n_points=args.points, cloud=args.cloud, keep_scale=args.keep_scale,
            robot=args.robot, n_subjects=args.subjects,
        )  # fmt: skip
        if args.held_out_objects == "prim":
            held_spec = None
        else:
            held_spec = resolve_objects(args.held_out_objects, library)
        path = args.scenarios
        if args.seed is not None:  # a generator with another seed: a temporary copy of the file
            path = _reseeded(path, args.seed, Path(args.out))
        scenarios = episode_scenarios(
            path, args.episodes, library, args.held_out_fraction, held_spec, args.keep_scale
        )
        load_scenario_set(path, split_objects=library.ids)  # validates the file's objects too
        from dexh2r_sim.scenario import validate_objects

        validate_objects(scenarios, library.ids("all"))
    except (ValueError, FileNotFoundError, ConfigError, UnknownObjectError) as exc:
        print(f"dexh2r datagen episodes: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "episodes.jsonl"
    done: dict[str, dict] = {}
    if log.exists() and not args.overwrite:
        for line in log.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["scenario"]] = row
    elif log.exists():
        log.unlink()
    held_out = set(library.ids("test"))
    jobs = []
    for i, s in enumerate(scenarios):
        if s.name in done:
            continue
        pool = str(Path(args.pools) / pool_filename(s.object_id, s.object_scale))
        jobs.append((i, s, subject_of(s, config), str(out), pool))
    t0 = time.perf_counter()
    rows = [done[s.name] for s in scenarios if s.name in done]
    with (
        tqdm(total=len(scenarios), initial=len(rows), desc="episodes", unit="ep", disable=None) as bar,
        _results(_episode_worker, jobs, args.workers, _episode_init, (config,)) as results,
    ):
        for row in results:
            rows.append(row)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.update(1)
            bar.set_postfix(ok=f"{_rate(rows)['success_rate']:.2f}")
    if args.workers == 1 and _RECORDER is not None:
        _RECORDER.close()
    rows.sort(key=lambda r: r["episode"])
    # Objects of the written sequences: names, surface samples (the layout's obj_surface_pcd_4096),
    # meshes, and the grasp pool each one uses.
    objects: dict[str, dict] = {}
    for r in rows:
        if r.get("sequence"):
            name = object_name(r["object_id"], r["object_scale"])
            objects[name] = object_entry(r["object_id"], r["object_scale"], held_out, args.pools)
    write_objects(out, objects, args.pools, library, config.surface_points)
    train_sub, val_sub, test_sub = subject_names(config)
    write_split(
        out,
        {
            "train_sub_names": train_sub,
            "val_sub_names": val_sub,
            "test_sub_names": test_sub,
            "train_obj": sorted(n for n, o in objects.items() if o["split"] == "train"),
            "val_obj": [],
            "test_obj": sorted(n for n, o in objects.items() if o["split"] == "test"),
        },
    )
    summary = {
        "scenarios": str(args.scenarios),
        "seed": args.seed,
        "episodes": len(rows),
        "rate_hz": config.rate_hz,
        "cloud": config.cloud,
        "points": config.n_points,
        "keep_scale": config.keep_scale,
        "held_out_fraction": args.held_out_fraction,
        "workers": args.workers,
        "robot": args.robot,
        "wall_s": time.perf_counter() - t0,
        **episode_summary(rows, held_out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    e = summary["expert"]["all"]
    spe = summary["seconds_per_episode"]
    print(
        f"{len(rows)} episodes: expert success {e['success']}/{e['episodes']} ({e['success_rate']:.2f}), "
        f"{summary['written_sequences']} sequences, {spe:.2f} s/episode -> {out}/summary.json"
    )
    return 0


def _reseeded(path: str, seed: int, out: Path) -> str:
    """A copy of a generator scenario file with `generator.seed` replaced (next to the output)."""
    import yaml

    from dexh2r_core.paths import config_path

    data = yaml.safe_load(config_path(path).read_text())
    if "generator" not in data:
        raise ValueError(f"--seed: {path} has no generator (a list of scenarios has no seed to change)")
    gen = data["generator"]
    gen["seed"] = int(seed)
    # Scenario names carry the seed: a resumed or shared output folder tells the runs apart.
    gen["name_prefix"] = f"{gen.get('name_prefix', 'gen')}_s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "scenarios.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(copy.resolve())


def _hold_worker(job: tuple) -> dict:
    """One pool file's close-hold results (runs in a worker process or inline)."""
    path, robot_name, position, all_rows = job
    import numpy as np
    from tqdm import tqdm

    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.grasps.close_hold import hold_path, run_pool
    from dexh2r_policy.grasps.pool import GraspPool
    from dexh2r_sim.objects import ObjectLibrary

    pool = GraspPool.load(path)
    robot = RobotDescription.load(robot_name)
    obj = ObjectLibrary().get(pool.object_id, scale=pool.object_scale)
    rows = np.ones(len(pool), bool) if all_rows or not pool.succ6.any() else pool.succ6
    t0 = time.perf_counter()
    with tqdm(
        total=int(rows.sum()), desc=Path(path).name, position=position, leave=False, disable=None
    ) as bar:
        res = run_pool(robot, obj, pool, progress=bar.update, rows=rows)
    res.save(hold_path(path))
    holds = res.holds()
    return {
        "file": Path(path).name,
        "tested": int(rows.sum()),
        "holds": int(holds.sum()),
        "holds_of_succ6": int((holds & pool.succ6).sum()),
        "succ6": int(pool.succ6.sum()),
        "seconds_per_grasp": (time.perf_counter() - t0) / max(int(rows.sum()), 1),
    }


def hold(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dexh2r datagen hold",
        description="close-hold results of grasp pools: does the closed loop's close (open -> squeezed) "
        "hold the object's weight (dexh2r_policy.grasps.close_hold)",
    )
    parser.add_argument(
        "--pools", default="data/pools", help="pool folder (writes <pool>.hold.npz next to each)"
    )
    parser.add_argument(
        "--objects", default="*", help="fnmatch patterns of pool file stems (a,b), e.g. prim__mug*"
    )
    parser.add_argument("--all-rows", action="store_true", help="test every row, not only the succ6 grasps")
    parser.add_argument("--workers", type=int, default=1, help="processes (pool files in parallel)")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--overwrite", action="store_true", help="recompute results that exist and match")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from dexh2r_policy.grasps.close_hold import hold_path, load_holds
    from dexh2r_policy.grasps.pool import GraspPool

    folder = Path(args.pools)
    if not folder.is_dir():
        where = f"{folder} is not a folder (make pools with `dexh2r datagen grasps`)"
        print(f"dexh2r datagen hold: {where}", file=sys.stderr)
        return 2
    patterns = [p.strip() for p in args.objects.split(",") if p.strip()]
    files = sorted(
        p
        for p in folder.glob("*.npz")
        if not p.name.endswith((".hold.npz", ".tmp.npz"))
        and any(fnmatch.fnmatch(p.name[: -len(".npz")], pat) for pat in patterns)
    )
    if not files:
        what = f"no pool file in {folder} matches --objects {args.objects}"
        print(f"dexh2r datagen hold: {what}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("dexh2r datagen hold: --workers must be >= 1", file=sys.stderr)
        return 2
    todo = []
    for p in files:
        if hold_path(p).exists() and not args.overwrite:
            try:
                load_holds(p, GraspPool.load(p))
                continue  # results of these grasps exist
            except ValueError:
                pass  # stale or unreadable: recompute
        todo.append(p)
    t0 = time.perf_counter()
    jobs = [(str(p), args.robot, 1 + k % args.workers, args.all_rows) for k, p in enumerate(todo)]
    rows = []
    done = len(files) - len(todo)
    with (
        tqdm(total=len(files), initial=done, desc="pools", unit="file", disable=None) as bar,
        _results(_hold_worker, jobs, args.workers) as results,
    ):
        for row in results:
            rows.append(row)
            bar.update(1)
            tqdm.write(
                f"{row['file']}: {row['holds']} of {row['tested']} tested hold "
                f"({row['holds_of_succ6']} of {row['succ6']} succ6)"
            )
    summary_path = folder / "summary.hold.json"
    if rows:  # merged with the files tested before (a run on some files keeps the others' rows)
        old = json.loads(summary_path.read_text())["files"] if summary_path.exists() else []
        merged = {r["file"]: r for r in old + rows}
        summary = {
            "pools": str(folder),
            "wall_s": time.perf_counter() - t0,
            "files": sorted(merged.values(), key=lambda r: r["file"]),
        }
        summary_path.write_text(json.dumps(summary, indent=2))
    print(f"{len(rows)} pool files tested, {done} up to date -> {folder}/summary.hold.json")
    return 0


SUBCOMMANDS = {
    "grasps": (grasps, "tested grasp pools per object (whole-hand 25 x 20, or --family pinch)"),
    "hold": (hold, "close-hold results of pools: does the closed loop's close hold the weight"),
    "episodes": (episodes, "expert handover episodes in the DexH2R layout"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = ["usage: dexh2r datagen <what> [args...]", "", "what:"]
        lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
        print("\n".join(lines), file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return SUBCOMMANDS[argv[0]][0](argv[1:])
