"""Post-optimisation: cameras (intrinsics, poses) and depth from generated pointmaps (the paper's post-optimisation, eq. 11-12).

Closed-form per-frame cameras, a short robust refinement of the paper's objective, closed-form
depth; windows merged by Sim(3) for long videos. Usable without the diffusion model.
"""

from one4d.postopt.io import load_cameras, load_pointmaps, recover_folder, save_cameras
from one4d.postopt.recover import CameraRecovery, recover_cameras
from one4d.postopt.windows import recover_cameras_windowed, split_windows

__all__ = [
    "CameraRecovery",
    "load_cameras",
    "load_pointmaps",
    "recover_cameras",
    "recover_cameras_windowed",
    "recover_folder",
    "save_cameras",
    "split_windows",
]
