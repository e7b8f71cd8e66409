"""The add-on's one door into the prior: score, repair and complete SMPL poses of a take (numpy in, numpy out).

Every operator of ``runtime.blender.addon`` goes through these functions. The take-QA detector comes with the model:
a model directory calibrated by ``poseprior calibrate`` (``has_detector``) flags by ``runtime.detect`` as well.

* ``score(prior, poses, fps)``: ``runtime.takes.score`` of the converted take: per-frame log p, the flagged frame
  indices (log p < the model's threshold tau, or the detector's flags), tau.
* ``repair(prior, poses, fps, rows=None, joints=None)``: ``runtime.takes.repair`` with ``flagged=True`` (each
  detector span's suspect joints; the worst joints of frames flagged by log p alone), or ``joints=`` (those SMPL
  joints in every frame), in ``runtime.takes.default_space`` (as ``poseprior repair --space auto``); ``rows``
  restricts it to those frames (``runtime.takes.repair``'s ``frames``: the take is solved whole, the frames
  around ``rows`` held, so a repaired range joins its neighbours). Returns the repaired body rotations
  (T, 63) axis-angle and the freed-joint mask (T, 21).
* ``complete(prior, pose, free)``: ``runtime.fit.complete`` of one pose: the ``free`` SMPL joints, started at the
  prior's mode f(0), optimised for log p in ambient space with the other joints held exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import rotations, takes
from ..convert import load_rest_joints
from ..fit import complete as fit_complete
from ..prior import PosePrior

_PRIORS: dict[str, PosePrior] = {}


def load_prior(model_dir: str | Path | None = None) -> PosePrior:
    """The model at ``model_dir`` (None or "": the shipped default), loaded once per process and path."""
    key = str(Path(model_dir).resolve()) if model_dir else ""
    if key not in _PRIORS:
        prior = PosePrior.load(key or None, providers=["CPUExecutionProvider"])
        takes.check_smpl_prior(prior)
        _PRIORS[key] = prior
    return _PRIORS[key]


def has_detector(prior: PosePrior) -> bool:
    """Whether the model records a take-QA detector calibration (``poseprior calibrate``): then ``score`` and
    ``repair`` flag by the motion-aware detector (``runtime.detect``) as well as by log p."""
    return takes.calibration(prior) is not None


def rest_joints(prior: PosePrior) -> np.ndarray:
    """SMPL's rest joints recorded with the model (what the take is converted on)."""
    return load_rest_joints(prior.path)


def _take(poses: np.ndarray, fps: float, source: str) -> takes.Take:
    poses = np.asarray(poses, np.float64)
    return takes.Take(source, poses, np.zeros((len(poses), 3)), float(fps), [source], [0])


def score(
    prior: PosePrior, poses: np.ndarray, fps: float, source: str = "armature", progress=None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(log p (T,), flagged frame indices, threshold) of SMPL ``poses`` (T, 72)."""
    s = takes.score(prior, _take(poses, fps, source), progress=progress)
    return s.log_prob.astype(np.float64), s.flagged, float(s.threshold)


def repair(
    prior: PosePrior, poses: np.ndarray, fps: float, rows=None, joints=None, source: str = "armature", progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """(repaired body rotations (T, 63) axis-angle, freed-joint mask (T, 21)); module docstring."""
    poses = np.asarray(poses, np.float64)
    flagged = joints is None
    r = takes.repair(
        prior,
        _take(poses, fps, source),
        joints=joints,
        flagged=flagged,
        space=takes.default_space(prior, flagged),
        frames=rows,
        progress=progress,
    )
    return r.take.poses[:, 3:66].copy(), r.mask


def complete(prior: PosePrior, pose: np.ndarray, free: list[str], iters: int = 300) -> np.ndarray:
    """The body rotations (63,) axis-angle of SMPL ``pose`` (72,) with the ``free`` joints (SMPL names) replaced by
    the prior's most likely completion given the others."""
    x = rotations.axis_angle_to_6d(np.asarray(pose, np.float64)[3:66].reshape(1, 21, 3)).astype(np.float32)
    mask = np.array([[n in free for n in prior.joint_names]])
    x = np.where(mask[..., None], takes.prior_mode(prior), x)
    res = fit_complete(prior, x, mask, space="ambient", iters=iters)
    out = rotations.orthonormalize_6d(np.where(mask[..., None], res.poses, x).astype(np.float64))
    return rotations.sixd_to_axis_angle(out).reshape(63)
