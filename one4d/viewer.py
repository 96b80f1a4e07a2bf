"""A viser viewer for a sample's output folder: the 4D point cloud, camera frustums and a time slider.

The paper shows its results this way (section 4.1): viser, frames subsampled with a temporal stride
to make motion visible. Reads ``pointmaps.npz`` (pointmaps, rgb) and, when present, ``cameras.json``.
The world is frame 0's OpenCV camera, so "up" is -y. The first view (and "Reset View") looks over the
first camera's shoulder at the whole point cloud (:func:`framing_view`), that camera's frustum in red.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from one4d.geometry import invert_pose, rotation_to_quaternion


@dataclass
class Scene4D:
    """Frames of a 4D output: points and colours (F, N, 3), cameras (F, 3, 3) and (F, 4, 4) or None."""

    frames: list[int]
    points: list[np.ndarray]
    colours: list[np.ndarray]
    intrinsics: np.ndarray | None
    camera_to_world: np.ndarray | None
    image_size: tuple[int, int]


def load_scene(folder: str | Path, stride: int = 1, max_points: int = 20000, seed: int = 0) -> Scene4D:
    """Every ``stride``-th frame of an output folder, each with at most ``max_points`` points (seeded subset)."""
    folder = Path(folder)
    if stride < 1 or max_points < 1:
        raise ValueError(f"stride and max_points must be positive, got {stride} and {max_points}")
    path = folder / "pointmaps.npz"
    if not path.is_file():
        raise ValueError(f"{folder} is not a One4D output folder: pointmaps.npz is missing")
    with np.load(path) as archive:
        pointmaps = archive["pointmaps"].astype(np.float32)  # (F, H, W, 3)
        rgb = archive["rgb"] if "rgb" in archive.files else np.full(pointmaps.shape, 200, dtype=np.uint8)
    height, width = pointmaps.shape[1:3]
    rng = np.random.default_rng(seed)
    frames = list(range(0, len(pointmaps), stride))
    points, colours = [], []
    for index in frames:
        flat, flat_rgb = pointmaps[index].reshape(-1, 3), rgb[index].reshape(-1, 3)
        keep = np.isfinite(flat).all(axis=1).nonzero()[0]
        if len(keep) > max_points:
            keep = np.sort(rng.choice(keep, max_points, replace=False))
        points.append(flat[keep])
        colours.append(flat_rgb[keep])
    intrinsics = camera_to_world = None
    cameras = folder / "cameras.json"
    if cameras.is_file():
        data = json.loads(cameras.read_text())
        intrinsics = np.asarray(data["intrinsics"], dtype=np.float64)[frames]
        world_to_camera = torch.tensor(data["world_to_camera"], dtype=torch.float64)[frames]
        camera_to_world = invert_pose(world_to_camera).numpy()
    return Scene4D(frames, points, colours, intrinsics, camera_to_world, (height, width))


# Vertical field of view of the first view, and how far above the first camera's line of sight it looks from.
VIEW_FOV_DEGREES = 60.0
VIEW_ELEVATION_DEGREES = 20.0


def framing_view(scene: Scene4D, fov: float = math.radians(VIEW_FOV_DEGREES)) -> dict[str, np.ndarray | float]:
    """A view that frames every frame's points (95 % of them around their median) and the first camera.

    It looks along the line from the first camera (frame 0's camera when there are no cameras: the world's
    origin, looking down +z) to the cloud, raised by VIEW_ELEVATION_DEGREES, at the smallest sphere holding
    the cloud and that camera, from just far enough for the sphere to fill the field of view (so the camera
    is in front of the view). Returns position, look_at, up, fov, near, far.
    """
    points = np.concatenate(scene.points) if scene.points else np.zeros((0, 3))
    centre = np.median(points, axis=0) if len(points) else np.array([0.0, 0.0, 1.0])
    radius = float(np.percentile(np.linalg.norm(points - centre, axis=1), 95)) if len(points) else 1.0
    radius = radius if math.isfinite(radius) and radius > 0 else 1.0
    if scene.camera_to_world is not None:
        eye, forward, up = scene.camera_to_world[0, :3, 3], scene.camera_to_world[0, :3, 2], -scene.camera_to_world[0, :3, 1]
    else:
        eye, forward, up = np.zeros(3), np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    line = centre - eye
    behind = float(np.linalg.norm(line))
    direction = line / behind if behind > 1e-9 * radius else forward
    up = up - direction * float(up @ direction)  # up, made orthogonal to the line of sight
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-9 else np.array([0.0, -1.0, 0.0])
    if behind > radius:  # the smallest sphere around the cloud's sphere and the camera
        centre, radius = centre - direction * (behind - radius) / 2, (behind + radius) / 2
    elevation = math.radians(VIEW_ELEVATION_DEGREES)
    direction = direction * math.cos(elevation) - up * math.sin(elevation)  # look down at the cloud from above
    distance = 1.05 * radius / math.sin(fov / 2)  # the sphere just inside the field of view
    return {"position": centre - distance * direction, "look_at": centre, "up": up, "fov": fov,
            "near": 0.01 * distance, "far": 10.0 * (distance + radius)}


class Viewer:
    """A viser server showing a :class:`Scene4D`; ``show(t)`` selects the time step, ``play()`` animates."""

    def __init__(self, scene: Scene4D, host: str = "127.0.0.1", port: int = 8080, point_size: float | None = None):
        import viser

        self.scene = scene
        self.server = viser.ViserServer(host=host, port=port, verbose=False)  # serving from here on
        try:
            self._build(scene, point_size)
        except BaseException:  # e.g. SIGTERM while the page already loads: a server left running keeps the process alive
            self.server.stop()
            raise

    def _build(self, scene: Scene4D, point_size: float | None) -> None:
        """Clouds, frustums, first view and GUI on the running server."""
        self.server.scene.set_up_direction("-y")
        extent = float(np.percentile(np.linalg.norm(np.concatenate(scene.points), axis=1), 95)) if scene.points else 1.0
        extent = extent if math.isfinite(extent) and extent > 0 else 1.0
        point_size = point_size or extent / 200
        self._clouds = [
            self.server.scene.add_point_cloud(f"/points/{frame:06d}", points, colours, point_size=point_size, visible=False)
            for frame, points, colours in zip(scene.frames, scene.points, scene.colours)
        ]
        self._frustums = self._add_frustums(extent * 0.05)
        self.first_view = framing_view(scene)
        for key, value in self.first_view.items():  # new clients start here; "Reset View" returns here
            setattr(self.server.initial_camera, key, value)
        gui = self.server.gui
        last = len(scene.frames) - 1
        self.time_slider = gui.add_slider("frame", min=0, max=max(last, 1), step=1, initial_value=0, disabled=last == 0)
        self.playing = gui.add_checkbox("play", initial_value=False)
        self.fps = gui.add_slider("fps", min=1, max=30, step=1, initial_value=8)
        self.show_all = gui.add_checkbox("all frames", initial_value=False)
        self.time_slider.on_update(lambda _: self.show(int(self.time_slider.value)))
        self.show_all.on_update(lambda _: self.show(int(self.time_slider.value)))
        self.show(0)

    def _add_frustums(self, scale: float) -> list:
        scene = self.scene
        if scene.camera_to_world is None:
            return []
        height, width = scene.image_size
        handles = []
        quaternions = rotation_to_quaternion(torch.from_numpy(scene.camera_to_world[:, :3, :3])).numpy()  # (F, 4) xyzw
        for index, frame in enumerate(scene.frames):
            focal_y = scene.intrinsics[index, 1, 1]
            fov = 2 * math.atan(height / (2 * focal_y)) if focal_y > 0 else math.radians(60)
            qx, qy, qz, qw = quaternions[index]
            handles.append(self.server.scene.add_camera_frustum(
                f"/cameras/{frame:06d}", fov=fov, aspect=width / height, scale=scale,
                wxyz=(qw, qx, qy, qz), position=scene.camera_to_world[index, :3, 3], color=(120, 120, 120),
            ))
        return handles

    def show(self, step: int) -> None:
        """Show time step ``step`` (an index into the strided frames); with "all frames", every cloud up to it."""
        for index, cloud in enumerate(self._clouds):
            cloud.visible = index == step or (self.show_all.value and index <= step)
        for index, frustum in enumerate(self._frustums):
            frustum.color = (255, 60, 60) if index == step else (120, 120, 120)

    def play(self, stop: threading.Event | None = None) -> None:
        """Advance the slider while "play" is ticked, until ``stop`` is set (forever without one)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.playing.value and len(self._clouds) > 1:
                step = (int(self.time_slider.value) + 1) % len(self._clouds)
                self.time_slider.value = step
                self.show(step)
            time.sleep(1.0 / float(self.fps.value))

    @property
    def port(self) -> int:
        return self.server.get_port()

    def stop(self) -> None:
        self.server.stop()


def check_address(host: str, port: int) -> None:
    """One-line ValueError for a port or host the server cannot listen on. viser starts its server in a thread, where
    such an error was printed and the main thread waited forever; a port in use is fine (viser takes the next one)."""
    import errno
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port must be a whole number from 1 to 65535, got {port!r}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise ValueError(f"cannot serve on {host}:{port} ({error.strerror or error}); try another --host or --port") from None


def view(folder: str | Path, host: str = "127.0.0.1", port: int = 8080, stride: int = 1, max_points: int = 20000, point_size: float | None = None) -> Viewer:
    """Load an output folder and serve it; returns the running :class:`Viewer`."""
    check_address(host, port)
    return Viewer(load_scene(folder, stride, max_points), host=host, port=port, point_size=point_size)
