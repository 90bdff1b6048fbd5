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
    The trees are read through the links `launch` and `config` in this package's folder
    (-> ../../launch, ../../config) so that every data-file path stays inside the package:
    `colcon build --symlink-install` mirrors each data file's relative path into the package's
    build folder, and a `../../launch/...` path would put links outside it (next to the build
    base). Where the links are missing (a checkout without symlinks) the repository's trees are
    used directly, which a plain `colcon build` installs just the same.
    """
    import os

    package_dir = str(package_dir)
    repo = os.path.dirname(os.path.dirname(package_dir))
    out: dict[str, list[str]] = {}
    for top in ("launch", "config"):
        linked = os.path.join(package_dir, top)
        tree = linked if os.path.isdir(linked) else os.path.join(repo, top)
        for root, dirs, files in os.walk(tree):
            dirs.sort()
            dest = os.path.normpath(os.path.join("share", "dexh2r_core", top, os.path.relpath(root, tree)))
            picked = [os.path.relpath(os.path.join(root, f), package_dir) for f in sorted(files)]
            if picked:
                out.setdefault(dest, []).extend(picked)
    return sorted(out.items())
