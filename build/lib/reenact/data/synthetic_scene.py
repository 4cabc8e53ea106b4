"""The synthetic talking-face scene: identities, motion and the analytic renderer behind ``reenact.data.synthetic``.

Each identity is a textured ellipsoid head (own size, shape and colours; eyes, iris, brows, nose, lips, hair,
cheeks) over a torso and a static textured background. Per clip the head translates, scales and rotates in
3D (yaw, pitch, roll), blinks and opens its mouth; everything is rendered with anti-aliased coverage from
analytic shapes, so the same seed gives the same scene at any resolution.

Geometry: world X right, Y up, Z towards the camera; orthographic camera; image u = X, v = -Y in [-1, 1]
(pixel = (u + 1) / 2 * (S - 1)). The head rotation is R = Rz(roll) @ Rx(pitch) @ Ry(yaw) (``head_rotation``):
positive yaw turns the nose towards image right, positive pitch tilts the face down, positive roll turns the face
counter-clockwise on screen. A horizontal image flip negates yaw and roll and keeps pitch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANDMARK_NAMES = (
    "left_eye_outer", "left_eye_inner", "left_eye_top", "left_eye_bottom",
    "right_eye_inner", "right_eye_outer", "right_eye_top", "right_eye_bottom",
    "nose_tip", "mouth_left", "mouth_right", "upper_lip", "lower_lip", "chin", "left_brow", "right_brow",
)  # "left" = image left in a frontal view
LANDMARK_FLIP_PERMUTATION = (5, 4, 6, 7, 1, 0, 2, 3, 8, 10, 9, 11, 12, 13, 15, 14)


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head -> world rotation Rz(roll) @ Rx(pitch) @ Ry(yaw) for angles in degrees: the pose labels' convention."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Identity:
    radii: np.ndarray  # (3,) head ellipsoid semi-axes in image units
    skin: np.ndarray  # (3,) RGB in [0, 1]; likewise hair, iris, lips, shirt, cheek
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    shirt: np.ndarray
    cheek: np.ndarray
    hairline: float  # head-frame y (fraction of radius) above which hair covers the head
    eye_dx: float  # eye centre offset from the midline, fraction of the x radius
    eye_size: tuple[float, float]  # eye half-width, half-height in head units
    mouth_width: float
    nose_length: float
    texture: np.ndarray  # (3, 4) rows: 3D frequency + phase of the skin pattern

    @staticmethod
    def sample(rng: np.random.Generator) -> Identity:
        height = rng.uniform(0.56, 0.66)
        width = height * rng.uniform(0.74, 0.86)
        colour = lambda lo, hi: np.clip(rng.uniform(lo, hi, 3), 0, 1)  # noqa: E731
        skin_base = rng.choice([[0.95, 0.78, 0.66], [0.78, 0.57, 0.42], [0.52, 0.36, 0.26], [0.7, 0.8, 0.55],
                                [0.62, 0.68, 0.9], [0.92, 0.62, 0.62]])
        return Identity(
            radii=np.array([width, height, width * rng.uniform(0.85, 0.95)]),
            skin=np.clip(np.asarray(skin_base) + rng.uniform(-0.06, 0.06, 3), 0, 1),
            hair=colour(0.02, 0.55), iris=colour(0.05, 0.6),
            lips=np.clip([0.75, 0.25, 0.3] + rng.uniform(-0.15, 0.15, 3), 0, 1),
            shirt=colour(0.1, 0.95), cheek=np.clip([0.95, 0.45, 0.45] + rng.uniform(-0.1, 0.1, 3), 0, 1),
            hairline=rng.uniform(0.42, 0.62), eye_dx=rng.uniform(0.32, 0.42),
            eye_size=(rng.uniform(0.085, 0.115), rng.uniform(0.045, 0.065)),
            mouth_width=rng.uniform(0.13, 0.2), nose_length=rng.uniform(0.09, 0.15),
            texture=np.concatenate([rng.normal(0, 9, (3, 3)), rng.uniform(0, 2 * np.pi, (3, 1))], axis=1),
        )


@dataclass(frozen=True)
class Motion:
    """Per-frame animation curves of one clip, each (T,)."""

    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    shift: np.ndarray  # (T, 2) head translation in image units (u, v)
    scale: np.ndarray
    eye_open: np.ndarray  # 1 open, ~0.06 closed
    mouth_open: np.ndarray  # 0 closed .. 1 wide open
    gaze: np.ndarray  # (T, 2) iris offset, fraction of the eye size

    @staticmethod
    def sample(rng: np.random.Generator, num_frames: int, fps: float) -> Motion:
        t = np.arange(num_frames) / fps

        def wave(amplitude: float) -> np.ndarray:  # smooth, head-motion-rate curve in [-amplitude, amplitude]
            freqs, phases, weights = rng.uniform(0.5, 1.2, 2), rng.uniform(0, 2 * np.pi, 2), rng.dirichlet([2, 2])
            terms = zip(freqs, phases, weights, strict=True)
            return amplitude * sum(w * np.sin(2 * np.pi * f * t + p) for f, p, w in terms)

        eye_open = np.ones(num_frames)
        blink_at, blink_len = rng.uniform(0.15, 0.6), 0.24
        while blink_at < t[-1]:
            phase = (t - blink_at) / blink_len
            inside = (phase >= 0) & (phase <= 1)
            closing = 0.06 + 0.94 * (0.5 + 0.5 * np.cos(2 * np.pi * phase[inside]))  # 1 -> 0.06 -> 1
            eye_open[inside] = np.minimum(eye_open[inside], closing)
            blink_at += rng.uniform(0.7, 2.2)
        syllable = np.clip(np.sin(2 * np.pi * rng.uniform(1.6, 3.0) * t + rng.uniform(0, 6.3)), 0, None) ** 0.7
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3))
        return Motion(
            yaw=wave(rng.uniform(20, 32)), pitch=wave(rng.uniform(10, 18)), roll=wave(rng.uniform(8, 14)),
            shift=np.stack([wave(rng.uniform(0.12, 0.2)), wave(rng.uniform(0.06, 0.1))], axis=1),
            scale=1 + wave(rng.uniform(0.08, 0.14)), eye_open=eye_open, mouth_open=syllable * envelope,
            gaze=np.stack([wave(0.3), wave(0.2)], axis=1),
        )


class Canvas:
    """An (S, S, 3) float image with anti-aliased compositing of analytic shapes in image units."""

    def __init__(self, background: np.ndarray) -> None:
        self.image = background.astype(np.float32).copy()
        self.size = background.shape[0]
        self.axis = np.linspace(-1.0, 1.0, self.size, dtype=np.float32)
        self.pixel = 2.0 / (self.size - 1)

    def window(self, center: np.ndarray, extent: np.ndarray) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        lo = np.floor((center - extent + 1) / self.pixel).astype(int) - 2
        hi = np.ceil((center + extent + 1) / self.pixel).astype(int) + 3
        cols, rows = slice(max(lo[0], 0), min(hi[0], self.size)), slice(max(lo[1], 0), min(hi[1], self.size))
        return rows, cols, self.axis[cols][None, :], self.axis[rows][:, None]

    def ellipse(self, center: np.ndarray, axes: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
        """Coverage of {center + axes @ w : |w| <= 1}; axes (2, 2) holds the two semi-axis vectors as columns."""
        rows, cols, u, v = self.window(center, np.sqrt((axes**2).sum(1)))
        (a, b), (_, d) = axes @ axes.T + 1e-9 * np.eye(2)
        metric = np.array([[d, -b], [-b, a]]) / (a * d - b * b)  # inverse of the symmetric 2x2
        du, dv = u - center[0], v - center[1]
        gu, gv = metric[0, 0] * du + metric[0, 1] * dv, metric[1, 0] * du + metric[1, 1] * dv
        norm = np.sqrt(np.maximum(du * gu + dv * gv, 1e-12))
        inside = norm * (1 - norm) / np.maximum(np.hypot(gu, gv), 1e-9)  # signed distance to the rim
        return (rows, cols), np.clip(0.5 + inside / self.pixel, 0, 1)

    def capsule(self, a: np.ndarray, b: np.ndarray, radius: float) -> tuple[tuple[slice, slice], np.ndarray]:
        rows, cols, u, v = self.window((a + b) / 2, np.abs(a - b) / 2 + radius)
        ab = b - a
        h = np.clip(((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12), 0, 1)
        dist = np.hypot(u - a[0] - h * ab[0], v - a[1] - h * ab[1])
        return (rows, cols), np.clip(0.5 + (radius - dist) / self.pixel, 0, 1)

    def paint(self, region: tuple[tuple[slice, slice], np.ndarray], colour: np.ndarray, alpha: float = 1.0) -> None:
        (rows, cols), coverage = region
        cover = (coverage * alpha)[..., None]
        self.image[rows, cols] = self.image[rows, cols] * (1 - cover) + np.asarray(colour, np.float32) * cover


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static textured backdrop: smooth colour noise, soft stripes and a few flat shapes."""
    grid = rng.uniform(0.2, 0.8, (6, 6, 3))
    axis = np.linspace(0, 5, size)
    i0 = np.minimum(axis.astype(int), 4)
    f = (axis - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # (S, 6, 3)
    image = rows[:, i0] * (1 - f.T[..., None]) + rows[:, i0 + 1] * f.T[..., None]  # (S, S, 3)
    canvas = Canvas(image)
    u, v = canvas.axis[None, :], canvas.axis[:, None]
    # Soft, low-frequency detail: the backdrop must be textured enough to show a wrong warp, yet cheap for a
    # small model to reproduce, so that the error left is about motion, not about drawing stripes.
    direction, frequency = rng.uniform(0, np.pi), rng.uniform(3, 6)
    stripes = 0.04 * np.sin(frequency * (np.cos(direction) * u + np.sin(direction) * v))
    canvas.image += stripes[..., None].astype(np.float32)
    for _ in range(3):
        center, radii, angle = rng.uniform(-1, 1, 2), rng.uniform(0.15, 0.35, 2), rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        canvas.paint(canvas.ellipse(center, rot * radii), rng.uniform(0, 1, 3), alpha=0.5)
    return np.clip(canvas.image, 0, 1)


def _surface_point(identity: Identity, x: float, y: float) -> np.ndarray:
    """Point on the front of the head ellipsoid at head-frame (x, y), both fractions of the radii."""
    ax, ay, az = identity.radii
    return np.array([x * ax, y * ay, az * np.sqrt(max(1 - x * x - y * y, 0.0))])


def _tangents(identity: Identity, point: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normal = point / identity.radii**2
    normal /= np.sqrt(normal @ normal)
    across = np.array([normal[2], 0.0, -normal[0]]) / np.hypot(normal[2], normal[0])  # (0, 1, 0) x normal
    up = np.array([normal[1] * across[2] - normal[2] * across[1], normal[2] * across[0] - normal[0] * across[2],
                   normal[0] * across[1] - normal[1] * across[0]])  # normal x across
    return across, up, normal  # horizontal, vertical (up), outward normal


def render_frame(
    canvas: Canvas, identity: Identity, motion: Motion, frame: int, light: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame onto `canvas` (already holding the background); returns (image uint8, landmarks (L, 2) px)."""
    rotation = head_rotation(motion.yaw[frame], motion.pitch[frame], motion.roll[frame])
    scale, shift = motion.scale[frame], motion.shift[frame]
    center = np.array([shift[0], -(shift[1] - 0.08)])  # world XY of the head centre

    def project(point: np.ndarray) -> np.ndarray:  # head frame -> image (u, v)
        world = center + scale * (rotation @ point)[:2]
        return np.array([world[0], -world[1]])

    def surface_ellipse(point: np.ndarray, half: tuple[float, float], angle: float = 0.0) -> tuple:
        across, up, normal = _tangents(identity, point)
        a1 = np.cos(angle) * across + np.sin(angle) * up
        a2 = -np.sin(angle) * across + np.cos(angle) * up
        axes = scale * (rotation @ np.stack([a1 * half[0], a2 * half[1]], axis=1))[:2]  # (2, 2) world XY
        facing = float(np.clip((rotation @ normal)[2] * 4, 0, 1))  # fade features turning away
        region = canvas.ellipse(project(point), axes * np.array([[1.0], [-1.0]]))
        return region[0], region[1] * facing

    # Torso and neck follow the head's translation but not its rotation.
    canvas.paint(canvas.ellipse(np.array([0.7 * shift[0], 1.12]), np.diag([0.8, 0.5])), identity.shirt * 0.9)
    neck_axes = np.diag([0.16 * identity.radii[0] / 0.45, 0.3])
    canvas.paint(canvas.ellipse(np.array([0.85 * shift[0], 0.62 + 0.3 * shift[1]]), neck_axes), identity.skin * 0.75)
    _paint_head(canvas, identity, rotation, scale, center, light)

    ex, (ew, eh) = identity.eye_dx, identity.eye_size
    eyes = [_surface_point(identity, -ex, 0.08), _surface_point(identity, ex, 0.08)]
    opening = eh * motion.eye_open[frame]
    for side, eye in zip((-1, 1), eyes, strict=True):
        brow = _surface_point(identity, side * ex, 0.08 + 2.6 * eh / identity.radii[1])
        canvas.paint(surface_ellipse(brow, (ew * 1.15, eh * 0.3), angle=-side * 0.12), identity.hair * 0.8)
        canvas.paint(surface_ellipse(eye, (ew * 1.08, opening + 0.012)), identity.skin * 0.35)  # lid line
        sclera = surface_ellipse(eye, (ew, opening))
        canvas.paint(sclera, np.array([0.97, 0.97, 0.95]))
        across, up, _ = _tangents(identity, eye)
        iris_at = eye + across * motion.gaze[frame, 0] * ew * 0.5 + up * motion.gaze[frame, 1] * eh * 0.3
        for colour, radius in ((identity.iris, 0.88 * eh), (np.zeros(3), 0.4 * eh)):
            canvas.paint(_intersect(surface_ellipse(iris_at, (radius, radius)), sclera), colour)  # lids hide the iris
        canvas.paint(surface_ellipse(_surface_point(identity, side * ex * 1.05, -0.3), (ew * 0.9, ew * 0.6)),
                     identity.cheek, alpha=0.35)

    bridge, tip_base = _surface_point(identity, 0, 0.0), _surface_point(identity, 0, -0.3)
    tip = tip_base + _tangents(identity, tip_base)[2] * identity.nose_length
    canvas.paint(canvas.capsule(project(bridge), project(tip), 0.035 * scale), identity.skin * 0.8)
    for side in (-1, 1):
        nostril = tip + np.array([side * 0.035, -0.03, -0.03])
        canvas.paint(canvas.ellipse(project(nostril), np.eye(2) * 0.018 * scale), identity.skin * 0.3)

    mouth = _surface_point(identity, 0, -0.55)
    mw, gap = identity.mouth_width, 0.07 * motion.mouth_open[frame]
    lip = 0.028
    canvas.paint(surface_ellipse(mouth, (mw, gap + lip)), identity.lips)
    inner = surface_ellipse(mouth, (mw * 0.82, gap + 0.004))
    canvas.paint(inner, np.array([0.25, 0.05, 0.08]))
    teeth = surface_ellipse(mouth + _tangents(identity, mouth)[1] * gap * 0.6, (mw * 0.6, gap * 0.45 + 1e-4))
    canvas.paint(_intersect(teeth, inner), np.array([0.95, 0.95, 0.9]))

    landmarks = []
    for eye in eyes:  # image-left corner, image-right corner, top lid, bottom lid
        across, up, _ = _tangents(identity, eye)
        landmarks += [eye - across * ew, eye + across * ew, eye + up * opening, eye - up * opening]
    across, up, _ = _tangents(identity, mouth)
    landmarks += [tip, mouth - across * mw, mouth + across * mw, mouth + up * (gap + lip), mouth - up * (gap + lip),
                  _surface_point(identity, 0, -0.93)]
    landmarks += [_surface_point(identity, side * ex, 0.08 + 2.6 * eh / identity.radii[1]) for side in (-1, 1)]
    size = canvas.size
    pixels = np.stack([(project(p) + 1) / 2 * (size - 1) for p in landmarks]).astype(np.float32)
    return (np.clip(canvas.image, 0, 1) * 255 + 0.5).astype(np.uint8), pixels


def _intersect(region: tuple[tuple[slice, slice], np.ndarray], mask: tuple[tuple[slice, slice], np.ndarray]) -> tuple:
    """`region`'s coverage multiplied by `mask`'s coverage (zero outside the mask's window)."""
    (rows, cols), coverage = region
    (mask_rows, mask_cols), mask_coverage = mask
    aligned = np.zeros_like(coverage)
    r0, r1 = max(rows.start, mask_rows.start), min(rows.stop, mask_rows.stop)
    c0, c1 = max(cols.start, mask_cols.start), min(cols.stop, mask_cols.stop)
    if r1 > r0 and c1 > c0:
        aligned[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start] = mask_coverage[
            r0 - mask_rows.start : r1 - mask_rows.start, c0 - mask_cols.start : c1 - mask_cols.start]
    return (rows, cols), coverage * aligned


def _paint_head(
    canvas: Canvas, identity: Identity, rotation: np.ndarray, scale: float, center: np.ndarray, light: np.ndarray
) -> None:
    """Shaded, textured ellipsoid with a hair cap; shading and texture live on the 3D surface, so they move with it."""
    quadric = rotation @ np.diag(1 / identity.radii**2) @ rotation.T / scale**2  # world: d^T Q d = 1
    q_xy, q_z, q_zz = quadric[:2, :2], quadric[:2, 2], quadric[2, 2]
    outline = q_xy - np.outer(q_z, q_z) / q_zz  # silhouette ellipse in world XY
    flip = np.diag([1.0, -1.0])
    axes = np.linalg.cholesky(np.linalg.inv(flip @ outline @ flip))
    (rows, cols), coverage = canvas.ellipse(np.array([center[0], -center[1]]), axes)
    u, v = canvas.axis[cols][None, :], canvas.axis[rows][:, None]
    dx, dy = u - center[0], -v - center[1]
    b = q_z[0] * dx + q_z[1] * dy
    c = q_xy[0, 0] * dx * dx + 2 * q_xy[0, 1] * dx * dy + q_xy[1, 1] * dy * dy - 1
    dz = (-b + np.sqrt(np.maximum(b * b - q_zz * c, 0))) / q_zz  # the front intersection
    world = np.stack([dx + 0 * dz, dy + 0 * dz, dz], axis=-1)  # (h, w, 3)
    head = world @ rotation / scale  # rows are R^T d
    normal = (head / identity.radii**2) @ rotation.T
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    shade = 0.55 + 0.45 * np.clip(normal @ light, 0, 1)
    unit = head / identity.radii
    pattern = np.sin(unit @ identity.texture[:, :3].T + identity.texture[:, 3]).mean(-1)
    skin = identity.skin * (shade * (1 + 0.08 * pattern))[..., None]
    wave = 0.06 * np.sin(7 * unit[..., 0])
    above = (unit[..., 1] - identity.hairline + wave) * identity.radii[1] * scale  # image units above the hairline
    hair_cover = np.clip(0.5 + above / canvas.pixel, 0, 1)
    hair = identity.hair * (shade * (1 + 0.15 * np.sin(40 * unit[..., 0] + 9 * unit[..., 1])))[..., None]
    colour = skin * (1 - hair_cover[..., None]) + hair * hair_cover[..., None]
    cover = coverage[..., None]
    canvas.image[rows, cols] = canvas.image[rows, cols] * (1 - cover) + colour.astype(np.float32) * cover


def render_clip(
    identity: Identity, motion: Motion, background: np.ndarray, light: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """All frames (uint8), landmarks (T, L, 2) float32 pixels and pose (T, 3) float32 degrees of one clip."""
    frames, landmarks = [], []
    for index in range(len(motion.yaw)):
        image, points = render_frame(Canvas(background), identity, motion, index, light)
        frames.append(image)
        landmarks.append(points)
    pose = np.stack([motion.yaw, motion.pitch, motion.roll], axis=1).astype(np.float32)
    return frames, np.stack(landmarks), pose
