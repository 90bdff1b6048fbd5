"""Executables of this package: name -> "module:function".

The single list read by this package's setup.py (colcon), the root setup.py (pip) and the
launcher (`dexh2r launch`), so that a node is declared in exactly one place. Keep this module
free of module-level imports: build scripts execute it.
"""

NODES: dict[str, str] = {
    # Minimal talker/listener pair: the launch smoke graph and the DDS health check.
    "smoke_talker": "dexh2r_core.nodes.smoke:talker_main",
    "smoke_listener": "dexh2r_core.nodes.smoke:listener_main",
}


def share_files(package_dir):
    """The repository's launch/ and config/ trees, installed as dexh2r_core's share (colcon).

    `$(find-pkg-share dexh2r_core)` therefore names the same files under colcon and pip.
    """
    import os

    repo = os.path.dirname(os.path.dirname(str(package_dir)))
    out: dict[str, list[str]] = {}
    for top in ("launch", "config"):
        for root, _dirs, files in os.walk(os.path.join(repo, top)):
            rel = os.path.relpath(root, repo)
            picked = [os.path.relpath(os.path.join(root, f), str(package_dir)) for f in sorted(files)]
            if picked:
                out.setdefault(os.path.join("share", "dexh2r_core", rel), []).extend(picked)
    return sorted(out.items())
