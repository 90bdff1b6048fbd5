"""Virtual RealSense cameras: MuJoCo cameras placed from a calibration file, off-screen RGB-D.

The simulated cell publishes the same topics as real D455s, so perception is exercised on images
that follow the RealSense conventions: RGB and depth aligned to colour, depth as uint16 z-depth in
millimetres with 0 = invalid, intrinsics and poses from the calibration store
(`dexh2r_core.calibration`). ROS-free; the sim node wraps it.

Camera frames: the calibration holds the colour *optical* frame (z forward, x right, y down).
A MuJoCo camera looks along its -z with +y up, i.e. the optical frame turned 180 deg about x:
`R_world_mjcam = R_world_optical @ diag(1, -1, -1)`.

Rendering: one off-screen GL context (MUJOCO_GL=egl or osmesa; EGL when headless) and one
`mjr_render` + `mjr_readPixels` pass per camera that reads colour and depth together, with
shadows, reflections, skybox, haze and decorations off (about 6x faster than MuJoCo's defaults
with separate colour and depth passes). The projection is set from K on every render, so the image
matches the calibration exactly, principal point included. The depth buffer is reversed-Z
(`mjDEPTH_ZEROFAR`) and is linearised with the scene's near/far planes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from dataclasses import dataclass
from types import TracebackType

import cv2
import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_core.calibration import CalibrationSet, CameraCalibration, CameraIntrinsics
from dexh2r_core.transforms import quat_wxyz

# Optical frame (z forward, y down) -> MuJoCo camera frame (-z forward, y up): 180 deg about x.
R_OPTICAL_MJCAM = np.diag([1.0, -1.0, -1.0])
# Physical pixel pitch used for MuJoCo's `sensorsize` (OV9782: 3 um); only the ratio matters.
_PIXEL_PITCH_M = 3e-6
# Decorations a real camera does not see.
_VIS_FLAGS_OFF = (
    mujoco.mjtVisFlag.mjVIS_TENDON,
    mujoco.mjtVisFlag.mjVIS_RANGEFINDER,
    mujoco.mjtVisFlag.mjVIS_PERTOBJ,
    mujoco.mjtVisFlag.mjVIS_FLEXEDGE,
    mujoco.mjtVisFlag.mjVIS_CAMERA,
    mujoco.mjtVisFlag.mjVIS_LIGHT,
)
# Costly render effects (and a skybox that a depth camera would not measure).
_RND_FLAGS_OFF = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
    mujoco.mjtRndFlag.mjRND_HAZE,
    mujoco.mjtRndFlag.mjRND_FOG,
    mujoco.mjtRndFlag.mjRND_SEGMENT,
    mujoco.mjtRndFlag.mjRND_IDCOLOR,
)


def gl_context_class(backend: str | None = None) -> type:
    """The off-screen GL context class for `backend` ("egl", "osmesa", "glfw").

    None means MUJOCO_GL, else EGL on a Linux machine without a display. Resolved when a renderer
    is made rather than when mujoco is imported, so the choice holds even if something imported
    mujoco before MUJOCO_GL was set.
    """
    name = (backend if backend is not None else os.environ.get("MUJOCO_GL", "")).lower().strip()
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not name and sys.platform.startswith("linux") and headless:
        name = "egl"
    if name == "egl":
        from mujoco.egl import GLContext
    elif name == "osmesa":
        from mujoco.osmesa import GLContext
    elif name == "glfw":
        from mujoco.glfw import GLContext
    else:
        GLContext = mujoco.GLContext
    return GLContext


def mujoco_principal_pixel(intr: CameraIntrinsics) -> tuple[float, float]:
    """MuJoCo's `principal_pixel` for a ROS principal point.

    MuJoCo 3.17 stores the *image centre minus the principal point* (continuous coordinates from
    the image corner), checked empirically against rendered images in test_cameras.py; ROS puts
    pixel centres on integers, hence the +0.5.
    """
    return (intr.width / 2.0 - (intr.cx + 0.5), intr.height / 2.0 - (intr.cy + 0.5))


def add_cameras(spec: mujoco.MjSpec, calibration: CalibrationSet, *, offsamples: int | None = 0) -> None:
    """Add one fixed world camera per calibrated camera (named `cal.name`) to `spec`.

    Sets MuJoCo's intrinsic-camera attributes (sensor size, focal and principal point in pixels,
    resolution) so that MuJoCo's own viewer shows the calibrated view, and enlarges the
    off-screen framebuffer to hold the largest image.

    `offsamples` sets the MSAA sample count of the model's off-screen buffer (None keeps the
    model's, MuJoCo's default is 4). The default 0 is deliberate: with MSAA the depth read back is
    one sub-sample's, not the pixel centre's (on a surface seen at an angle about -2 mm at 1 m and
    -5 mm at 1.6 m here, and driver-dependent), and rendering is 1.5-3x slower. The cost is
    aliased edges in the colour image.
    """
    if calibration.frame != "world":
        raise ValueError(f"calibration frame is '{calibration.frame}'; the sim places cameras in 'world'")
    existing = {c.name for c in spec.cameras}
    max_w = max((c.intrinsics.width for c in calibration.cameras), default=0)
    max_h = max((c.intrinsics.height for c in calibration.cameras), default=0)
    for cal in calibration.cameras:
        if cal.name in existing:
            raise ValueError(f"the scene already has a camera named '{cal.name}'")
        intr = cal.intrinsics
        T = cal.T
        R_world_mjcam = T[:3, :3] @ R_OPTICAL_MJCAM
        quat = quat_wxyz(Rotation.from_matrix(R_world_mjcam).as_quat())
        cam = spec.worldbody.add_camera(name=cal.name, pos=T[:3, 3].tolist(), quat=quat.tolist())
        cam.mode = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
        cam.fovy = math.degrees(2.0 * math.atan(intr.height / (2.0 * intr.fy)))
        cam.resolution = [intr.width, intr.height]
        cam.sensor_size = [intr.width * _PIXEL_PITCH_M, intr.height * _PIXEL_PITCH_M]
        cam.focal_pixel = [intr.fx, intr.fy]
        cam.principal_pixel = list(mujoco_principal_pixel(intr))
    glob = spec.visual.global_
    glob.offwidth = max(int(glob.offwidth), max_w)
    glob.offheight = max(int(glob.offheight), max_h)
    if offsamples is not None:
        spec.visual.quality.offsamples = int(offsamples)


def gl_frustum(intr: CameraIntrinsics, near: float) -> tuple[float, float, float, float]:
    """(center, half_width, bottom, top) of MuJoCo's `mjvGLCamera` frustum at `near` for K.

    GL camera: x right, y up, looking along -z; image left edge at u = -0.5, top edge at v = -0.5.
    """
    cx_c, cy_c = intr.cx + 0.5, intr.cy + 0.5
    center = near * (intr.width / 2.0 - cx_c) / intr.fx
    half_width = near * intr.width / (2.0 * intr.fx)
    top = near * cy_c / intr.fy
    bottom = -near * (intr.height - cy_c) / intr.fy
    return center, half_width, bottom, top


@dataclass(frozen=True)
class DepthNoise:
    """RealSense-like depth artefacts, deterministic per (seed, frame index, camera index).

    - Range-dependent Gaussian noise, sigma(z) = sigma_a_m + sigma_b_per_m * z^2. Stereo depth error
      grows with z^2 (sigma ~ z^2 * subpixel / (f_px * baseline)); for a D455 (baseline 95 mm,
      f ~ 640 px at 1280x720, subpixel ~ 0.08) the z^2 coefficient is ~0.0013 1/m. Defaults give
      ~1 mm at 0.5 m, ~2 mm at 1 m, ~6.6 mm at 2 m and ~1 cm at 2.5 m.
    - Edge dropouts: pixels within `edge_width_px` of a surface closer by more than
      `edge_threshold_m` (the far side of a depth jump: stereo occlusion) are zeroed with
      probability `edge_dropout_prob`.
    - Random invalid pixels: a fraction `invalid_fraction` of all pixels is zeroed.
    - Valid range `min_range_m`..`max_range_m` (D455: ~0.4-6 m; 0 outside) and quantisation to the
      depth unit (1 mm) always apply; `enabled=False` turns off only the random parts above.
    """

    enabled: bool = True
    seed: int = 0
    sigma_a_m: float = 0.000625
    sigma_b_per_m: float = 0.0015
    edge_threshold_m: float = 0.03
    edge_width_px: int = 1
    edge_dropout_prob: float = 0.5
    invalid_fraction: float = 0.002
    min_range_m: float = 0.4
    max_range_m: float = 6.0

    def __post_init__(self) -> None:
        for key in ("sigma_a_m", "sigma_b_per_m", "edge_threshold_m", "min_range_m"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("edge_dropout_prob", "invalid_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key}: must be in [0, 1], got {getattr(self, key)}")
        if self.edge_width_px < 0:
            raise ValueError(f"edge_width_px: must be >= 0, got {self.edge_width_px}")
        if self.max_range_m <= self.min_range_m:
            raise ValueError(
                f"max_range_m: must exceed min_range_m ({self.min_range_m}), got {self.max_range_m}"
            )

    def sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        """Standard deviation (m) of the depth noise at z-depth `z` (m)."""
        return self.sigma_a_m + self.sigma_b_per_m * np.square(z)

    def rng(self, frame_index: int, stream: int = 0) -> np.random.Generator:
        """The generator for one frame of one camera: same inputs, same numbers (bit-identical replays)."""
        return np.random.default_rng([int(self.seed), int(frame_index), int(stream)])

    def edge_mask(self, depth_m: np.ndarray) -> np.ndarray:
        """Pixels within `edge_width_px` of a surface closer by more than `edge_threshold_m` (bool [H, W]).

        That is the far (background) side of each depth discontinuity, where a stereo camera's
        second imager is occluded; the near object's own pixels are kept.
        """
        z = np.asarray(depth_m, dtype=np.float32)
        if self.edge_width_px == 0:
            return np.zeros(z.shape, dtype=bool)
        z = np.where(z > 0, z, np.float32(np.inf))
        nearest = z
        for _ in range(self.edge_width_px):  # 3x3 minimum filter, separable, by slices (fast)
            h = nearest.copy()
            np.minimum(h[:, 1:], nearest[:, :-1], out=h[:, 1:])
            np.minimum(h[:, :-1], nearest[:, 1:], out=h[:, :-1])
            nearest = h.copy()
            np.minimum(nearest[1:], h[:-1], out=nearest[1:])
            np.minimum(nearest[:-1], h[1:], out=nearest[:-1])
        with np.errstate(invalid="ignore"):
            return (z - nearest) > self.edge_threshold_m

    def apply(
        self, depth_m: np.ndarray, frame_index: int = 0, stream: int = 0, depth_scale_m: float = 0.001
    ) -> np.ndarray:
        """True z-depth (m, 0 = no surface) -> sensor depth image (uint16 in `depth_scale_m`, 0 = invalid)."""
        truth = np.asarray(depth_m, dtype=np.float32)
        z = truth
        if self.enabled:
            rng = self.rng(frame_index, stream)
            sigma = truth * truth
            sigma *= np.float32(self.sigma_b_per_m)
            sigma += np.float32(self.sigma_a_m)
            z = rng.standard_normal(truth.shape, dtype=np.float32)
            z *= sigma
            z += truth
        valid = (truth > 0) & (z >= self.min_range_m) & (z <= self.max_range_m)
        if self.enabled:
            flat = valid.reshape(-1)
            if self.invalid_fraction > 0:
                count = rng.binomial(flat.size, self.invalid_fraction)
                flat[rng.integers(0, flat.size, count)] = False
            if self.edge_dropout_prob > 0 and self.edge_width_px > 0:
                edges = np.flatnonzero(self.edge_mask(truth))
                flat[edges[rng.random(edges.size) < self.edge_dropout_prob]] = False
        counts = np.rint(z * np.float32(1.0 / depth_scale_m))
        counts[~valid | (counts > np.iinfo(np.uint16).max)] = 0
        return counts.astype(np.uint16)


@dataclass
class RgbdFrame:
    """One camera's output: colour, sensor-like depth and the noise-free metric depth."""

    name: str
    rgb: np.ndarray  # uint8 [H, W, 3], top row first
    depth_mm: np.ndarray  # uint16 [H, W] in depth_scale_m units (1 mm), 0 = invalid
    depth_m: np.ndarray  # float32 [H, W] true z-depth along the optical axis, 0 = no surface
    frame_index: int


class RgbdRenderer:
    """Renders every calibrated camera off-screen with one GL context and one pass per camera.

    GL contexts are bound to a thread: create, render and close from the same thread (the sim
    node's timer thread); other threads get a RuntimeError. Use as a context manager or call
    `close()`.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        calibration: CalibrationSet,
        noise: DepthNoise | None = None,
        *,
        max_geom: int = 10000,
        gl_backend: str | None = None,
        rgb_blur_px: float = 0.0,
    ):
        if rgb_blur_px < 0:
            raise ValueError(f"rgb_blur_px: must be >= 0, got {rgb_blur_px}")
        self.model = model
        self.calibration = calibration
        self.noise = noise if noise is not None else DepthNoise()
        # Gaussian sigma (px) of the colour optics: lens, demosaicing and compression keep a real
        # camera's edges from being pixel-sharp; MediaPipe's landmarks on aliased renders are
        # off by a few pixels more than on blurred ones (docs/perception_hand.md).
        self.rgb_blur_px = float(rgb_blur_px)
        self._thread = threading.get_ident()
        self._cam_ids: list[int] = []
        for cal in calibration.cameras:
            cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cal.name)
            if cam_id < 0:
                raise ValueError(f"model has no camera '{cal.name}': build the scene with add_cameras()")
            self._cam_ids.append(cam_id)
        width = max((c.intrinsics.width for c in calibration.cameras), default=1)
        height = max((c.intrinsics.height for c in calibration.cameras), default=1)
        off_w, off_h = model.vis.global_.offwidth, model.vis.global_.offheight
        if width > off_w or height > off_h:
            raise ValueError(
                f"off-screen buffer {off_w}x{off_h} is smaller than the images ({width}x{height}): "
                "build the scene with add_cameras() or raise visual/global offwidth/offheight"
            )
        self.near = float(model.vis.map.znear * model.stat.extent)
        self.far = float(model.vis.map.zfar * model.stat.extent)

        self._gl = None
        self._con = None
        try:
            self._gl = gl_context_class(gl_backend)(width, height)
            self._gl.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100.value)
        except Exception as exc:
            self.close()
            raise RuntimeError(
                f"cannot create an off-screen GL context ({exc!r}); use MUJOCO_GL=egl (or osmesa with "
                "libosmesa6 installed)"
            ) from exc
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR

        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        for flag in _RND_FLAGS_OFF:
            self._scene.flags[flag] = 0
        self._option = mujoco.MjvOption()
        for flag in _VIS_FLAGS_OFF:
            self._option.flags[flag] = 0
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._catmask = mujoco.mjtCatBit.mjCAT_STATIC | mujoco.mjtCatBit.mjCAT_DYNAMIC
        self._rgb_buf = [
            np.empty((c.intrinsics.height, c.intrinsics.width, 3), np.uint8) for c in calibration.cameras
        ]
        self._depth_buf = [
            np.empty((c.intrinsics.height, c.intrinsics.width), np.float32) for c in calibration.cameras
        ]

    @property
    def names(self) -> list[str]:
        return self.calibration.names

    def _check_thread(self) -> None:
        if self._con is None:
            raise RuntimeError("RgbdRenderer is closed")
        if threading.get_ident() != self._thread:
            raise RuntimeError("RgbdRenderer must be used from the thread that created it (GL context)")

    def linearize_depth(self, zbuf: np.ndarray) -> np.ndarray:
        """Reversed-Z buffer values (1 = near, 0 = far) -> metric z-depth (m); far plane -> 0."""
        n, f = np.float32(self.near), np.float32(self.far)
        # float32 is enough in reversed-Z: zb ~ near/z keeps full relative precision (< 1 um at 6 m).
        depth = (n * f) / (zbuf * (f - n) + n)
        depth[zbuf <= 0.0] = 0.0  # nothing drawn (cleared to the far plane): no surface
        return depth

    def render(self, data: mujoco.MjData, frame_index: int = 0) -> list[RgbdFrame]:
        """RGB + depth of every camera for the state in `data` (mj_forward/mj_step already run)."""
        self._check_thread()
        self._gl.make_current()
        frames = []
        for i, cal in enumerate(self.calibration.cameras):
            self._camera.fixedcamid = self._cam_ids[i]
            # Per camera: cheap (microseconds) and keeps camera-dependent parts (transparency order) right.
            mujoco.mjv_updateScene(
                self.model, data, self._option, None, self._camera, self._catmask, self._scene
            )
            frames.append(self._render_one(i, cal, frame_index))
        return frames

    def _render_one(self, index: int, cal: CameraCalibration, frame_index: int) -> RgbdFrame:
        intr = cal.intrinsics
        center, half_width, bottom, top = gl_frustum(intr, self.near)
        for glcam in self._scene.camera:  # both eyes: mono rendering may combine them
            glcam.frustum_near = self.near
            glcam.frustum_far = self.far
            glcam.frustum_center = center
            glcam.frustum_width = half_width
            glcam.frustum_bottom = bottom
            glcam.frustum_top = top
        viewport = mujoco.MjrRect(0, 0, intr.width, intr.height)
        mujoco.mjr_render(viewport, self._scene, self._con)
        rgb_buf, depth_buf = self._rgb_buf[index], self._depth_buf[index]
        mujoco.mjr_readPixels(rgb_buf, depth_buf, viewport, self._con)
        rgb = np.ascontiguousarray(rgb_buf[::-1])
        if self.rgb_blur_px > 0:
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.rgb_blur_px)
        depth_m = self.linearize_depth(depth_buf[::-1])
        depth_mm = self.noise.apply(depth_m, frame_index, stream=index, depth_scale_m=cal.depth_scale_m)
        return RgbdFrame(name=cal.name, rgb=rgb, depth_mm=depth_mm, depth_m=depth_m, frame_index=frame_index)

    def close(self) -> None:
        """Release the GL resources (idempotent)."""
        if self._con is not None:
            if self._gl is not None:
                self._gl.make_current()
            self._con.free()
            self._con = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> RgbdRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Only a best effort: freeing from the GC thread may not have the context current.
        if getattr(self, "_con", None) is not None and threading.get_ident() == self._thread:
            with contextlib.suppress(Exception):
                self.close()


def camera_info_dict(cal: CameraCalibration) -> dict:
    """sensor_msgs/CameraInfo fields as plain data (ROS 2 lowercase names; `frame_id` -> header).

    No rectification: R is identity and P = [K | 0] (monocular, Tx = 0), as realsense-ros publishes
    for the colour stream.
    """
    intr = cal.intrinsics
    K = intr.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {
        "frame_id": cal.frame_id,
        "width": int(intr.width),
        "height": int(intr.height),
        "distortion_model": intr.distortion_model,
        "d": [float(v) for v in intr.D],
        "k": [float(v) for v in K.ravel()],
        "r": [float(v) for v in np.eye(3).ravel()],
        "p": [float(v) for v in P.ravel()],
        "binning_x": 0,
        "binning_y": 0,
    }


__all__ = [
    "DepthNoise",
    "RgbdFrame",
    "RgbdRenderer",
    "add_cameras",
    "camera_info_dict",
    "gl_context_class",
    "gl_frustum",
    "mujoco_principal_pixel",
]
