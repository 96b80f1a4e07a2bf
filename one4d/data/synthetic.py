"""Procedural synthetic 4D scenes: a camera moving through a textured room with moving objects.

Everything is ray-cast analytically in torch (no rasteriser, no assets), so a scene is exact
ground truth: RGB, z-depth, intrinsics, poses, pointmaps and a mask of the moving objects. It
feeds tests, the tiny demo model and the post-optimisation and evaluation checks.

Conventions (see ``one4d.geometry``): OpenCV cameras, pixel centres at integer coordinates.
The room's world frame is itself OpenCV-like (y points down, the floor is at y = +floor). The
returned ``world_to_camera`` poses are RELATIVE TO FRAME 0 (frame 0 is the identity), so the
"world" of a returned scene is frame 0's camera and ``pointmaps`` live in that same frame.

Textures are procedural (planks, tiles, bricks, stripes, value noise) and shaded by a point
light with cast shadows, so appearance carries the detail that determines geometry. They are
sized for the tiny model's 48 x 64 frames (issue 12): features tens of centimetres wide with soft
edges and moderate contrast, and colour anti-aliased over SUPERSAMPLE x SUPERSAMPLE sub-pixel rays; pixel-scale
grout lines and grain aliased into noise that no tiny VAE could carry (flat mean colour and the
best VAE were within 0.6 dB of each other).

Cameras are rolled (up to ROLL_DEGREES about the view direction) and their gaze turned, so that the
floor, walls and horizon fall differently in every clip and geometry must be read from the frames.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from one4d.data.clip import write_clip
from one4d.geometry import default_intrinsics, invert_pose, look_at, pixel_grid, relative_to_first
from one4d.runtime import ordered_in_processes, raise_if_stopped

SUPERSAMPLE = 3  # colour rays per pixel along each axis: anti-aliased RGB at the tiny model's 48 x 64
CHUNK_RAYS = 1 << 20  # rays per ray-casting pass: bounds memory at large sizes
FPS = 16.0  # Wan2.1 videos are 16 fps; stored in meta.json by the dataset writer.

COLOURS = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.20, 0.70, 0.25),
    "blue": (0.15, 0.30, 0.85),
    "yellow": (0.92, 0.80, 0.15),
    "orange": (0.95, 0.50, 0.10),
    "purple": (0.55, 0.25, 0.75),
    "white": (0.92, 0.92, 0.90),
    "cyan": (0.15, 0.75, 0.80),
}
FLOORS = ("wooden", "tiled", "checkered")
WALLS = ("brick", "striped", "plaster")
CAMERA_MOTIONS = ("forward", "sideways", "orbit", "pan")
# Each clip's camera is rolled about its view direction by up to ROLL_DEGREES and its gaze turned by GAZE_OFFSET
# (x, y ranges in metres added to the look-at target), so no single depth map fits most scenes: with level cameras
# looking at the floor ahead, the mean depth map of the training scenes was within 0.04 Abs Rel of the best a tiny
# VAE can carry, and no model could show that it reads geometry from its input (issue 12,
# benchmarks/RESULTS_tiny_model.md sections 5-6).
ROLL_DEGREES = 60.0
GAZE_OFFSET = ((-1.5, 1.5), (-1.0, 0.6))
MOTION_PHRASES = {
    ("sphere", "rolls"): "rolls across the floor",
    ("sphere", "bounces"): "bounces along the floor",
    ("box", "slides"): "slides across the floor",
    ("box", "spins"): "spins as it drifts",
}


@dataclass
class SyntheticScene:
    """One rendered clip. Poses are relative to frame 0; pointmaps are in frame 0's camera."""

    rgb: torch.Tensor  # (F, H, W, 3) in [0, 1]
    depth: torch.Tensor  # (F, H, W) z in each frame's camera
    intrinsics: torch.Tensor  # (F, 3, 3)
    world_to_camera: torch.Tensor  # (F, 4, 4), frame 0 == identity
    pointmaps: torch.Tensor  # (F, H, W, 3) in frame 0's camera
    dynamic_mask: torch.Tensor  # (F, H, W) bool, True on moving objects
    caption: str
    fps: float = FPS


@dataclass
class _Object:
    kind: str  # "sphere" or "box"
    colour: str
    motion: str
    size: np.ndarray  # sphere: (radius,), box: half extents (3,)
    start: np.ndarray  # (3,) centre at t = 0
    velocity: np.ndarray  # (3,) displacement over the whole clip
    spin: float  # box: yaw turned over the clip (radians); sphere bounce: number of hops
    yaw: float

    def pose(self, t: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Centre (3,) and rotation (3, 3) (object to world) at normalised time t in [0, 1]."""
        centre = self.start + t * self.velocity
        if self.kind == "sphere":
            radius = self.size[0]
            if self.motion == "bounces":
                centre = centre.copy()
                centre[1] = floor - radius - 0.6 * abs(math.sin(math.pi * self.spin * t))
            # Rolling without slipping: turn about (up x velocity) by distance / radius.
            up = np.array([0.0, -1.0, 0.0])
            axis = np.cross(up, self.velocity)
            distance = t * np.linalg.norm(self.velocity)
            return centre, _axis_angle(axis, distance / radius) @ _yaw(self.yaw)
        return centre, _yaw(self.yaw + t * self.spin)


def _yaw(angle: float) -> np.ndarray:
    """Rotation about the world's vertical (y) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation; the identity for a zero axis."""
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        return np.eye(3)
    x, y, z = axis / norm
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# ----------------------------------------------------------------------------- textures


def _hash(ix: torch.Tensor, iy: torch.Tensor, seed: int) -> torch.Tensor:
    """Deterministic integer hash of lattice cells -> uniform values in [0, 1]."""
    h = ix * 73856093 ^ iy * 19349663 ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() / 65535.0


def _value_noise(x: torch.Tensor, y: torch.Tensor, seed: int, octaves: int = 3) -> torch.Tensor:
    """Fractal value noise in [0, 1] on a unit lattice, smoothstep-interpolated."""
    total, amplitude, norm = torch.zeros_like(x), 1.0, 0.0
    for octave in range(octaves):
        fx, fy = torch.floor(x), torch.floor(y)
        tx, ty = x - fx, y - fy
        tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
        ix, iy = fx.long(), fy.long()
        s = seed + 101 * octave
        top = _hash(ix, iy, s) * (1 - tx) + _hash(ix + 1, iy, s) * tx
        bottom = _hash(ix, iy + 1, s) * (1 - tx) + _hash(ix + 1, iy + 1, s) * tx
        total = total + amplitude * (top * (1 - ty) + bottom * ty)
        norm += amplitude
        x, y, amplitude = x * 2.03, y * 2.03, amplitude * 0.5
    return total / norm


def _soft_line(coordinate: torch.Tensor, period: float, width: float) -> torch.Tensor:
    """A soft line every ``period`` (grout, mortar, plank gaps): 1 at the line, falling smoothly to 0 at ``width``.

    Lines a few centimetres wide with hard edges alias at 48 x 64 pixels; a soft profile a tenth of the
    period wide stays visible from across the room and can be represented by an x4 VAE (issue 12).
    """
    phase = torch.remainder(coordinate, period) / period
    distance = torch.minimum(phase, 1 - phase) / width  # 0 at the line, 1 at its edge
    return (1 - distance.clamp(0, 1)) ** 2


def _soft_step(x: torch.Tensor) -> torch.Tensor:
    """A square wave of period 1 with smooth edges, in [0, 1]: alternating cells without aliasing.

    Steepness 1.5 (3.0 before): edges a tiny x4 VAE reproduces; with the softer tones and lines of ``_material``
    its held-out RGB gain rose from +7.25 to +8.21 dB (+8.37 with the 3200-step decoder polish) while the demo's depth
    checks held on its 10 scenes (RESULTS_tiny_model.md sections 17-18).
    """
    return 0.5 + 0.5 * torch.tanh(1.5 * torch.sin(math.tau * x))


def _soft_checker(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A 2D checkerboard in [0, 1] with cells of period 1 in u and v and soft edges."""
    step_u, step_v = _soft_step(u), _soft_step(v)
    return step_u * step_v + (1 - step_u) * (1 - step_v)


def _material(name: str, a: torch.Tensor, b: torch.Tensor, tint: torch.Tensor, seed: int) -> torch.Tensor:
    """Albedo (N, 3) of a named material at surface coordinates (a, b) in metres.

    Features are tens of centimetres wide with soft edges (a few pixels at 48 x 64 from across the
    room): detail the tiny model's scale can represent, not pixel-scale aliasing. Per-plank and per-brick tones vary
    by 10 % and lines darken by 11-30 % (section 17's "softer patterns"); a stronger, metre-scale mottle on top of
    them lifted the VAE further but cost depth accuracy (sections 16-17).
    """
    noise = _value_noise(a * 1.0, b * 1.0, seed, octaves=2)
    if name == "wooden":  # wide planks along a, per-plank tone, soft gaps
        plank = torch.floor(b / 0.4).long()
        offset = _hash(plank, plank * 0 + 7, seed) * 3.0
        board = torch.floor((a + offset) / 1.6).long()
        tone = 0.9 + 0.1 * _hash(plank, board, seed + 1)
        value = tone * (0.9 + 0.2 * noise) * (1 - 0.15 * _soft_line(b, 0.4, 0.15))
    elif name in ("tiled", "checkered"):
        size = 0.5 if name == "tiled" else 0.7
        checker = _soft_checker(a / (2 * size), b / (2 * size))
        if name == "tiled":
            checker = 0.5 * checker
        tone = 0.95 - 0.3 * checker
        grout = torch.maximum(_soft_line(a, size, 0.12), _soft_line(b, size, 0.12))
        value = tone * (0.9 + 0.2 * noise) * (1 - 0.1125 * grout)
    elif name == "brick":  # running bond of large blocks, per-block tone, soft mortar
        row = torch.floor(b / 0.3).long()
        shifted = a + 0.3 * (row % 2).float()
        column = torch.floor(shifted / 0.6).long()
        tone = 0.9 + 0.1 * _hash(column, row, seed)
        mortar = torch.maximum(_soft_line(b, 0.3, 0.2), _soft_line(shifted, 0.6, 0.1))
        value = tone * (0.9 + 0.2 * noise) * (1 - 0.15 * mortar)
    elif name == "striped":  # wallpaper: wide soft vertical stripes
        value = (0.7 + 0.3 * _soft_step(a / 0.6)) * (0.9 + 0.2 * noise)
    elif name == "plaster":  # mottled plaster with a soft wainscot band
        value = 0.7 + 0.4 * noise
        value = value * (1 - 0.3 * _soft_line(b, 0.9, 0.1))
    else:
        raise ValueError(f"unknown material {name!r}")
    return value[:, None] * tint


def _object_albedo(kind: str, local: torch.Tensor, tint: torch.Tensor, seed: int) -> torch.Tensor:
    """Albedo (N, 3) on an object from points in its own frame, so the pattern moves with it.

    Spheres get a soft longitude/latitude checker (rolling is visible); boxes a soft 3D checker.
    """
    if kind == "sphere":
        direction = local / local.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        a = torch.atan2(direction[:, 2], direction[:, 0]) * 2 / math.pi
        b = torch.asin(direction[:, 1].clamp(-1, 1)) * 3 / math.pi
        checker = _soft_checker(a / 2, b / 2)
    else:
        cells = [_soft_step(local[:, axis] / 0.4) for axis in range(3)]
        checker = cells[0] * cells[1] * cells[2] + (1 - cells[0]) * (1 - cells[1]) * cells[2]
        checker = checker + cells[0] * (1 - cells[1]) * (1 - cells[2]) + (1 - cells[0]) * cells[1] * (1 - cells[2])
    colour = tint * (1 - checker[:, None]) + 0.85 * checker[:, None]
    return colour


# ----------------------------------------------------------------------------- ray casting


def _intersect_sphere(origins, directions, centre, radius):
    """First hit of rays (C, N, 3) on a sphere: t (C, N) (inf where missed) and unit normals (C, N, 3).

    ``origins`` is (C, 1, 3) for camera rays or (C, N, 3) for shadow rays; ``centre`` is (C, 1, 3).
    """
    oc = origins - centre
    a = (directions * directions).sum(-1)
    b = (directions * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    t = torch.where((disc > 0) & (t > 1e-4), t, torch.full_like(t, math.inf))
    hit = origins + t.clamp(max=1e6)[..., None] * directions
    return t, (hit - centre) / radius


def _intersect_box(origins, directions, centre, rotation, half):
    """Slab test for an oriented box (rotation (C, 3, 3) is box-to-world): t (C, N), normals (C, N, 3)."""
    local_origins = (origins - centre) @ rotation  # world -> box frame
    local_directions = directions @ rotation
    safe = torch.where(local_directions.abs() < 1e-12, torch.full_like(local_directions, 1e-12), local_directions)
    t1, t2 = (-half - local_origins) / safe, (half - local_origins) / safe
    t_enter, axis = torch.minimum(t1, t2).max(dim=-1)
    t_exit = torch.maximum(t1, t2).min(dim=-1).values
    t = torch.where((t_exit > t_enter) & (t_enter > 1e-4), t_enter, torch.full_like(t_enter, math.inf))
    sign = -torch.sign(safe.gather(-1, axis[..., None]))
    normals_local = torch.zeros_like(local_directions).scatter(-1, axis[..., None], sign)
    return t, normals_local @ rotation.transpose(-1, -2)


def _intersect_room(origins, directions, low, high):
    """Exit of rays cast from inside an axis-aligned room: t (C, N) and face index (C, N) in 0..5."""
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_exit = torch.where(safe > 0, (high - origins) / safe, (low - origins) / safe)  # (C, N, 3) per axis
    t, axis = t_exit.min(dim=-1)
    positive = safe.gather(-1, axis[..., None])[..., 0] > 0
    return t, axis * 2 + positive.long()  # face = 2 * axis + (hit the high side)


# ----------------------------------------------------------------------------- scene sampling


def _sample_layout(rng: np.random.Generator):
    """Room size, materials, camera path and objects for one seed."""
    half_width, half_depth = rng.uniform(2.5, 4.0), rng.uniform(2.5, 4.0)
    floor, ceiling = rng.uniform(1.2, 1.6), -rng.uniform(1.3, 1.9)
    room = dict(
        low=np.array([-half_width, ceiling, -half_depth]),
        high=np.array([half_width, floor, half_depth]),
        floor_material=FLOORS[rng.integers(len(FLOORS))],
        wall_material=WALLS[rng.integers(len(WALLS))],
        floor_tint=rng.uniform(0.3, 1.0, 3) * np.array([1.0, 0.8, 0.6]),
        wall_tint=rng.uniform(0.2, 1.0, 3),  # saturated: surfaces differ in colour at a scale the tiny model represents
        ceiling_tint=rng.uniform(0.8, 1.0, 3),
        light=np.array([rng.uniform(-1, 1), ceiling + 0.2, rng.uniform(-1, 1)]),
    )
    names = list(COLOURS)
    objects = []
    count = int(rng.integers(1, 4))
    lanes = rng.permutation(np.linspace(-1.4, 1.4, 3))[:count]
    for lane in lanes:
        kind = "sphere" if rng.random() < 0.5 else "box"
        motion = ("rolls", "bounces")[rng.integers(2)] if kind == "sphere" else ("slides", "spins")[rng.integers(2)]
        size = np.array([rng.uniform(0.25, 0.45)]) if kind == "sphere" else rng.uniform(0.2, 0.4, 3)
        lift = size[0] if kind == "sphere" else size[1]
        # Objects stay at z >= 0.5 - 0.45 and the camera at z <= 0, so it never enters one.
        start = np.array([lane + rng.uniform(-0.2, 0.2), floor - lift, rng.uniform(1.0, 1.8)])
        velocity = np.array([rng.uniform(-0.6, 0.6), 0.0, rng.uniform(-0.5, 0.5)])  # lanes rarely cross
        spin = float(rng.integers(1, 3)) if motion == "bounces" else rng.uniform(-2.5, 2.5)
        if motion == "spins":
            velocity *= 0.3
        objects.append(_Object(kind, names[rng.integers(len(names))], motion, size, start, velocity, spin, rng.uniform(0, math.tau)))
    camera = dict(
        motion=CAMERA_MOTIONS[rng.integers(len(CAMERA_MOTIONS))],
        eye=np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.2), -half_depth + rng.uniform(0.8, 1.3)]),
        target=np.array([rng.uniform(-0.3, 0.3), floor - 0.6, 1.0]),
        amount=rng.uniform(0.6, 1.2) * (1 if rng.random() < 0.5 else -1),
        fov_degrees=rng.uniform(55, 75),
    )
    # Drawn from a child generator after every other draw, so each seed keeps its room, objects, motion and caption.
    view = np.random.default_rng(rng.integers(1 << 31))
    camera["target"] = camera["target"] + np.array([view.uniform(*GAZE_OFFSET[0]), view.uniform(*GAZE_OFFSET[1]), 0.0])
    camera["roll_degrees"] = view.uniform(-ROLL_DEGREES, ROLL_DEGREES)
    return room, objects, camera


def _camera_down(camera: dict, eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World +y (the floor's normal, downwards) rolled by ``camera["roll_degrees"]`` about the view direction."""
    rotation = _axis_angle((target - eye).numpy(), math.radians(camera["roll_degrees"]))
    return torch.tensor(rotation @ np.array([0.0, 1.0, 0.0]), dtype=eye.dtype)


def _camera_at(camera: dict, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Eye and look-at target at normalised time t: a smooth path for each motion type."""
    eye, target, amount = camera["eye"].copy(), camera["target"].copy(), camera["amount"]
    sway = 0.05 * math.sin(math.tau * t)
    if camera["motion"] == "forward":
        eye[2] += 0.8 * abs(amount) * t  # eye z stays <= -half_depth + 1.3 + 0.96 <= 0
        eye[1] += sway
    elif camera["motion"] == "sideways":
        eye[0] += amount * (t - 0.5)
        target[0] += 0.5 * amount * (t - 0.5)
    elif camera["motion"] == "orbit":
        offset = eye - target
        angle = 0.35 * amount * t
        offset[0], offset[2] = (offset[0] * math.cos(angle) - offset[2] * math.sin(angle),
                                offset[0] * math.sin(angle) + offset[2] * math.cos(angle))
        eye = target + offset
    else:  # pan: the eye stays, the gaze sweeps
        target[0] += 1.5 * amount * (t - 0.5)
        eye[1] += sway
    return eye, target


def _caption(room: dict, objects: list[_Object], camera: dict) -> str:
    """A short scene description in the style of the training captions."""
    floor = f"a {room['floor_material']} floor"
    parts = []
    for index, obj in enumerate(objects):
        phrase = MOTION_PHRASES[(obj.kind, obj.motion)]
        if index == 0:
            phrase = phrase.replace("the floor", floor) if "the floor" in phrase else f"{phrase} on {floor}"
        article = "an" if obj.colour[0] in "aeiou" else "a"
        parts.append(f"{article} {obj.colour} {obj.kind} {phrase}")
    direction = "right" if camera["amount"] > 0 else "left"
    camera_phrase = {
        "forward": "while the camera moves forward",
        "sideways": f"while the camera slides to the {direction}",
        "orbit": "while the camera orbits around the scene",
        "pan": f"while the camera pans to the {direction}",
    }[camera["motion"]]
    return f"{', and '.join(parts)} in a room with {room['wall_material']} walls, {camera_phrase}"


# ----------------------------------------------------------------------------- rendering


def _face_albedo(room: dict, points: torch.Tensor, face: torch.Tensor, visible: torch.Tensor, seed: int) -> torch.Tensor:
    """Albedo (..., 3) of the room where ``visible``: faces 0/1 = x walls, 2 = ceiling, 3 = floor, 4/5 = z walls."""
    dtype, device = points.dtype, points.device
    x, y, z = points.unbind(-1)
    albedo = torch.zeros_like(points)
    surfaces = [
        (face == 3, room["floor_material"], x, z, room["floor_tint"], seed),
        (face == 2, "plaster", x, z, room["ceiling_tint"], seed + 5),
        (face <= 1, room["wall_material"], z, y, room["wall_tint"], seed + 3),
        (face >= 4, room["wall_material"], x, y, room["wall_tint"], seed + 4),
    ]
    for where, material, a, b, tint, surface_seed in surfaces:
        where = where & visible
        if where.any():
            albedo[where] = _material(material, a[where], b[where], torch.tensor(tint, dtype=dtype, device=device), surface_seed)
    return albedo


def _render_frames(rays, camera_to_world, room, object_poses, objects, seed):
    """Ray-cast C frames at once: colour (C, N, 3), depth (C, N), world points (C, N, 3), dynamic (C, N).

    ``rays`` (N, 3) are K^-1 (u, v, 1) with z == 1, so the ray parameter t is the z-depth.
    ``object_poses`` holds per object a centre (C, 1, 3) and a rotation (C, 3, 3).
    """
    dtype, device = rays.dtype, rays.device
    origins = camera_to_world[:, None, :3, 3]  # (C, 1, 3)
    directions = rays @ camera_to_world[:, :3, :3].transpose(-1, -2)  # (C, N, 3)
    low = torch.tensor(room["low"], dtype=dtype, device=device)
    high = torch.tensor(room["high"], dtype=dtype, device=device)
    t, face = _intersect_room(origins, directions, low, high)
    face_normals = torch.tensor(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=dtype, device=device
    )  # inward normals of the faces x-, x+, y- (ceiling), y+ (floor), z-, z+
    normals = face_normals[face]  # (C, N, 3)
    owner = torch.full_like(face, -1)  # index of the object hit, -1 for the room
    halves = [torch.tensor(obj.size, dtype=dtype, device=device) for obj in objects]
    for index, (obj, (centre, rotation)) in enumerate(zip(objects, object_poses)):
        if obj.kind == "sphere":
            t_obj, n_obj = _intersect_sphere(origins, directions, centre, float(obj.size[0]))
        else:
            t_obj, n_obj = _intersect_box(origins, directions, centre, rotation, halves[index])
        closer = t_obj < t
        t = torch.where(closer, t_obj, t)
        normals = torch.where(closer[..., None], n_obj, normals)
        owner = torch.where(closer, torch.full_like(owner, index), owner)
    points = origins + t[..., None] * directions  # (C, N, 3) world

    albedo = _face_albedo(room, points, face, owner < 0, seed)
    for index, (obj, (centre, rotation)) in enumerate(zip(objects, object_poses)):
        mine = owner == index
        if mine.any():
            local = ((points - centre) @ rotation)[mine]  # (M, 3) in the object's frame
            tint = torch.tensor(COLOURS[obj.colour], dtype=dtype, device=device)
            albedo[mine] = _object_albedo(obj.kind, local, tint, seed + 11 + index)

    # Point light with cast shadows from the objects: a strong cue for depth and contact.
    light = torch.tensor(room["light"], dtype=dtype, device=device)
    to_light = light - points
    distance = to_light.norm(dim=-1)  # (C, N)
    to_light = to_light / distance[..., None]
    lit = torch.ones_like(t)
    start = points + 1e-3 * normals
    for index, (obj, (centre, rotation)) in enumerate(zip(objects, object_poses)):
        if obj.kind == "sphere":
            t_shadow, _ = _intersect_sphere(start, to_light, centre, float(obj.size[0]))
        else:
            t_shadow, _ = _intersect_box(start, to_light, centre, rotation, halves[index])
        lit = torch.where((t_shadow < distance) & (owner != index), lit * 0.35, lit)
    diffuse = (normals * to_light).sum(-1).clamp_min(0) * lit
    shading = 0.35 + 0.75 * diffuse / (1 + 0.05 * distance**2)
    colour = (albedo * shading[..., None]).clamp(0, 1)
    return colour, t, points, owner >= 0


@contextmanager
def _single_intra_op_thread(device):
    """Run CPU ray casting on one intra-op thread, restoring the setting afterwards.

    Rendering is thousands of small element-wise ops; on a loaded CPU, waiting for a second
    intra-op thread made a 17x64x64 scene 20x slower (0.1 s -> 2-4 s) than one thread.
    """
    if torch.device(device or "cpu").type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def render_scene(seed: int, num_frames: int = 17, height: int = 64, width: int = 64, device=None) -> SyntheticScene:
    """Render one deterministic synthetic 4D clip for ``seed`` at any resolution and length.

    Motion is parameterised by normalised time, so the same seed with more frames is the same
    motion sampled more densely. Returned poses are relative to frame 0 (frame 0 == identity).
    """
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(f"render_scene needs num_frames >= 1 and a size of at least 2x2, got {num_frames}x{height}x{width}")
    with _single_intra_op_thread(device):
        return _render_scene(seed, num_frames, height, width, device)


def _render_scene(seed: int, num_frames: int, height: int, width: int, device) -> SyntheticScene:
    """:func:`render_scene` without its argument checks and thread setting."""
    rng = np.random.default_rng(seed)
    room, objects, camera = _sample_layout(rng)
    dtype = torch.float32
    focal = (width / 2) / math.tan(math.radians(camera["fov_degrees"]) / 2)
    intrinsics = default_intrinsics(height, width, focal, dtype=dtype).to(device)
    pixels = pixel_grid(height, width, dtype, device).reshape(-1, 3)  # (HW, 3) homogeneous pixel centres
    rays = pixels @ torch.linalg.inv(intrinsics).T  # (HW, 3)
    # Colour is the mean of SUPERSAMPLE x SUPERSAMPLE sub-pixel rays (anti-aliased edges); geometry is the centre ray's.
    offsets = (torch.arange(SUPERSAMPLE, dtype=dtype, device=device) + 0.5) / SUPERSAMPLE - 0.5
    sub_rays = [(pixels + torch.stack([du, dv, du * 0]).to(dtype)) @ torch.linalg.inv(intrinsics).T
                for dv in offsets for du in offsets]  # SUPERSAMPLE^2 x (HW, 3)

    times = [frame / max(num_frames - 1, 1) for frame in range(num_frames)]
    eyes, targets = zip(*(_camera_at(camera, t) for t in times))
    eyes, targets = torch.tensor(np.stack(eyes), dtype=torch.float64), torch.tensor(np.stack(targets), dtype=torch.float64)
    # (F, 4, 4), float64 so that relative poses stay exact; one roll for the whole clip, about frame 0's view direction
    world_to_camera = look_at(eyes, targets, down=_camera_down(camera, eyes[0], targets[0]))
    camera_to_world = invert_pose(world_to_camera).to(dtype=dtype, device=device)

    chunk = max(1, CHUNK_RAYS // (height * width))
    rgb, depth, points, dynamic = [], [], [], []
    for first in range(0, num_frames, chunk):
        frames = range(first, min(first + chunk, num_frames))
        object_poses = []
        for obj in objects:
            centres, rotations = zip(*(obj.pose(times[frame], room["high"][1]) for frame in frames))
            object_poses.append((
                torch.tensor(np.stack(centres)[:, None], dtype=dtype, device=device),  # (C, 1, 3)
                torch.tensor(np.stack(rotations), dtype=dtype, device=device),  # (C, 3, 3)
            ))
        cameras = camera_to_world[first:frames.stop]
        _, z, world_points, moving = _render_frames(rays, cameras, room, object_poses, objects, seed)
        colour = sum(_render_frames(sub, cameras, room, object_poses, objects, seed)[0] for sub in sub_rays) / len(sub_rays)
        rgb.append(colour)
        depth.append(z)
        points.append(world_points)
        dynamic.append(moving)

    world_to_first = world_to_camera[0].to(dtype=dtype, device=device)
    world_points = torch.cat(points)  # (F, HW, 3)
    pointmaps = world_points @ world_to_first[:3, :3].T + world_to_first[:3, 3]  # (F, HW, 3) in frame 0's camera
    shape = (num_frames, height, width)
    return SyntheticScene(
        rgb=torch.cat(rgb).reshape(*shape, 3),
        depth=torch.cat(depth).reshape(shape),
        intrinsics=intrinsics.expand(num_frames, 3, 3).clone(),
        world_to_camera=relative_to_first(world_to_camera).to(dtype=dtype, device=device),
        pointmaps=pointmaps.reshape(*shape, 3),
        dynamic_mask=torch.cat(dynamic).reshape(shape),
        caption=_caption(room, objects, camera),
    )


def write_synthetic_dataset(
    root, num_clips: int, num_frames: int = 17, height: int = 64, width: int = 64, seed: int = 0, rgb_format: str = "mp4",
    workers: int = 1,
) -> list[Path]:
    """Render ``num_clips`` scenes (seeds seed, seed + 1, ...) into clip folders ``root/synthetic_XXXXX``.

    Each clip is written into a partial sibling folder and renamed when complete (as the dataset converters do,
    :func:`one4d.data.cutter.partial_folder`), so a stopped run never leaves a clip that looks complete.
    ``workers`` > 1 renders in that many processes of one torch thread each: a scene is thousands of small tensor
    operations, as fast on one thread as on two, and its pixels are the same whichever process renders it.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    jobs = [(Path(root), seed + index, num_frames, height, width, rgb_format) for index in range(num_clips)]
    if workers == 1:
        return [_write_scene(*job) for job in jobs]
    raise_if_stopped()  # before any worker starts
    folders = []
    with ordered_in_processes(_write_scene_job, jobs, min(workers, num_clips)) as written:
        for folder in written:
            raise_if_stopped()
            folders.append(folder)
    return folders


def _write_scene_job(job: tuple) -> Path:
    return _write_scene(*job)


def _write_scene(root: Path, scene_seed: int, num_frames: int, height: int, width: int, rgb_format: str) -> Path:
    """Render one scene and write it as ``root/synthetic_<seed>``, through a partial folder."""
    import os
    import shutil

    from one4d.data.cutter import partial_folder

    raise_if_stopped()
    scene = render_scene(scene_seed, num_frames, height, width)
    meta = {"fps": scene.fps, "source": "synthetic", "caption": scene.caption, "seed": scene_seed}
    folder = root / f"synthetic_{scene_seed:05d}"
    partial = partial_folder(folder)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write_clip(partial, scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics, scene.world_to_camera, meta,
                   rgb_format=rgb_format)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return folder
