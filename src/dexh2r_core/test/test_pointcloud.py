"""Point-cloud preprocessing: exact back-projection, fusion, cropping, filters, fixed-N sampling."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dexh2r_core.calibration import d455_intrinsics, look_at
from dexh2r_core.pointcloud import (
    Box,
    DepthProjector,
    EmptyCloudError,
    _fps,
    _fps_numpy,
    backproject,
    crop_box,
    fuse_depth,
    radius_outlier_removal,
    sample_fixed,
    statistical_outlier_removal,
    transform,
    voxel_downsample,
)


def _plane_depth(K: np.ndarray, width: int, height: int, n: np.ndarray, d: float) -> np.ndarray:
    """Exact z-depth [H, W] (metres) of the plane n . p = d seen by a pinhole camera at the origin."""
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    return d / (rays @ n)  # z along each ray (z component of the ray is 1)


def test_backprojection_of_a_tilted_plane_is_exact():
    intr = d455_intrinsics(424, 240)
    K = intr.K
    n = np.array([0.2, -0.3, 1.0])
    n /= np.linalg.norm(n)
    z = _plane_depth(K, 424, 240, n, d=0.9)
    pts = backproject(z.astype(np.float32), K)
    assert pts.shape == (424 * 240, 3) and pts.dtype == np.float32
    # Every point lies on the plane and reprojects onto its own pixel.
    np.testing.assert_allclose(pts.astype(float) @ n, 0.9, atol=2e-6)
    u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
    v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
    uu, vv = np.meshgrid(np.arange(424), np.arange(240))
    np.testing.assert_allclose(u, uu.ravel(), atol=1e-3)
    np.testing.assert_allclose(v, vv.ravel(), atol=1e-3)


def test_uint16_millimetres_skip_invalid_and_match_float_metres():
    K = d455_intrinsics(64, 48).K
    rng = np.random.default_rng(1)
    mm = rng.integers(400, 3000, size=(48, 64)).astype(np.uint16)
    mm[::7, ::5] = 0  # invalid pixels
    pts = backproject(mm, K, depth_scale=0.001)
    assert len(pts) == int((mm > 0).sum())
    metres = mm.astype(np.float32) * 0.001
    metres[mm == 0] = np.nan  # a float image marks invalid pixels with NaN
    np.testing.assert_allclose(backproject(metres, K), pts, atol=1e-6)
    # Range limits drop points outside [min, max].
    near = backproject(mm, K, min_depth_m=1.0, max_depth_m=2.0)
    assert np.all((near[:, 2] > 1.0 - 1e-6) & (near[:, 2] <= 2.0 + 1e-6))


def test_projector_equals_backproject_then_transform_and_crops():
    intr = d455_intrinsics(424, 240)
    T = look_at((0.9, 0.85, 1.0), (0.62, 0.0, 0.35))
    z = _plane_depth(intr.K, 424, 240, np.array([0.0, 0.0, 1.0]), 1.1).astype(np.float32)
    proj = DepthProjector(intr.K, 424, 240, T)
    world = proj.points(z)
    np.testing.assert_allclose(world, transform(backproject(z, intr.K), T), atol=1e-5)
    np.testing.assert_allclose(proj.origin, T[:3, 3], atol=1e-6)
    box = Box((0.4, -0.3, -1.0), (1.0, 0.3, 2.0))
    cropped = proj.points(z, box)
    assert 0 < len(cropped) < len(world)
    assert box.contains(cropped).all()
    np.testing.assert_allclose(np.sort(cropped, axis=0), np.sort(crop_box(world, box), axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="calibrated for 424x240"):
        proj.points(np.zeros((48, 64), np.uint16))


def test_fusion_of_two_cameras_and_empty_or_nan_images():
    intr = d455_intrinsics(64, 48)
    cams = [look_at((1.0, s * 0.8, 1.0), (0.6, 0.0, 0.3)) for s in (1, -1)]
    projectors = [DepthProjector(intr.K, 64, 48, T) for T in cams]
    depth = np.full((48, 64), 1200, np.uint16)
    both = fuse_depth(projectors, [depth, depth])
    assert both.shape == (2 * 64 * 48, 3)
    assert len(fuse_depth(projectors, [depth, None])) == 64 * 48
    nan = np.full((48, 64), np.nan, np.float32)
    empty = np.zeros((0, 0), np.uint16)
    assert fuse_depth(projectors, [nan, np.zeros((48, 64), np.uint16)]).shape == (0, 3)
    assert fuse_depth(projectors, [empty, None]).shape == (0, 3)
    assert backproject(empty, intr.K).shape == (0, 3)
    with pytest.raises(ValueError):
        fuse_depth(projectors, [depth])


def test_voxel_downsample_and_outlier_filters():
    rng = np.random.default_rng(2)
    dense = rng.uniform(0, 0.1, size=(5000, 3)).astype(np.float32)
    vox = voxel_downsample(dense, 0.01)
    assert len(vox) <= 1000 and vox.dtype == np.float32
    np.testing.assert_array_equal(vox, voxel_downsample(dense[::-1].copy(), 0.01))  # order-free
    assert voxel_downsample(np.zeros((0, 3)), 0.01).shape == (0, 3)
    cloud = np.concatenate([dense, [[1.0, 1.0, 1.0]]])  # one far outlier
    kept, mask = radius_outlier_removal(cloud, 0.02, 3)
    assert not mask[-1] and mask[:-1].all() and len(kept) == 5000
    kept, mask = statistical_outlier_removal(cloud, k=8, std_ratio=2.0)
    assert not mask[-1] and mask[:-1].mean() > 0.95


@pytest.mark.parametrize("method", ["fps", "random"])
def test_sample_fixed_size_dtype_and_determinism(method):
    rng = np.random.default_rng(3)
    cloud = rng.normal(size=(5000, 3))
    a = sample_fixed(cloud, 1024, method=method, seed=7)
    b = sample_fixed(cloud, 1024, method=method, seed=7)
    c = sample_fixed(cloud, 1024, method=method, seed=8)
    assert a.shape == (1024, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a, axis=0)) == 1024  # distinct input points
    # Every output point is an input point (float32 of it).
    dist, _ = cKDTree(cloud.astype(np.float32)).query(a)
    assert dist.max() == 0.0
    # More than 8n points are pre-reduced, still exactly n.
    big = rng.normal(size=(20000, 3))
    assert sample_fixed(big, 256, method=method, seed=0).shape == (256, 3)


def test_sample_fixed_pads_small_clouds_by_resampling():
    cloud = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = sample_fixed(cloud, 64, method="fps", seed=0)
    assert out.shape == (64, 3)
    # All ten points are present, the rest are repeats of them.
    assert {tuple(p) for p in out} == {tuple(p) for p in cloud}
    np.testing.assert_array_equal(out, sample_fixed(cloud, 64, method="fps", seed=0))
    one = sample_fixed(np.array([[1.0, 2.0, 3.0]]), 5)
    np.testing.assert_array_equal(one, np.tile([1.0, 2.0, 3.0], (5, 1)))


def test_sample_fixed_rejects_empty_and_nan_only_input():
    with pytest.raises(EmptyCloudError):
        sample_fixed(np.zeros((0, 3)), 1024)
    with pytest.raises(EmptyCloudError):
        sample_fixed(np.full((20, 3), np.nan), 16)
    # NaN rows are dropped, the rest sampled.
    mixed = np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert np.isfinite(sample_fixed(mixed, 8)).all()
    with pytest.raises(ValueError):
        sample_fixed(np.ones((5, 3)), 0)
    with pytest.raises(ValueError):
        sample_fixed(np.ones((5, 3)), 4, method="grid")  # type: ignore[arg-type]


def test_open3d_fps_selects_the_same_points_as_the_reference():
    rng = np.random.default_rng(4)
    cloud = rng.random((2000, 3)).astype(np.float32)
    fast = _fps(cloud, 200, 17)
    reference = cloud[_fps_numpy(cloud, 200, 17)]
    assert {tuple(p) for p in fast.tolist()} == {tuple(p) for p in reference.tolist()}
