"""``poseprior fit-bench``: the downstream fitting benchmark of DESIGN §5 on an unseen subject (issue 5).

Every prior is used through ``train.fit`` with the SAME optimiser, budget and initial poses per task; only the
prior weight ``lam`` differs, chosen per prior and task on a small grid on VALIDATION poses (never the test split).
Data terms are Gaussian negative log-likelihoods, so ``lam = 1`` is the MAP weight and the grid brackets it.

Tasks (poses: ``n`` test poses evenly spaced over the split; FK with the test split's mean skeleton, identity root,
pelvis at the origin):

* part completion, masks of DESIGN §5: the visible joints are fixed (ground truth), the masked joints are free and
  nothing else is observed, so the prior alone decides ("most likely completion"). ``hypotheses`` starts per pose:
  masked joints = the training mean pose rotated by N(0, init_sigma^2) per joint (seed = hypothesis index).
  Metrics: MPJPE (mm) of the joints whose position depends on a masked rotation (the masked joints' descendants)
  and geodesic error (deg) of the masked joints; mean over hypotheses, and best of them (per pose, then mean).
  In ambient space the objective is ``lam * prior`` alone, so ``lam`` does not matter (fixed at 1); latent priors
  hold the visible joints with the anchor ``fixed_weight * |6D(GS(x_j)) - v_j|^2`` (``train.fit``), traded
  against ``lam``, which is tuned.
* sparse-effector IK: positions of pelvis, head, wrists, ankles + N(0, sigma_p^2), sigma_p = 1 cm (seeded) ->
  all 21 rotations; data = sum_e |FK(GS(x))_e - y_e|^2 / (2 sigma_p^2), the pelvis placed at its observed
  position; start: the mean pose. Metric: MPJPE (mm) of the 21 non-root joints (both skeletons at the origin).
* denoising, sigma in ``noise_deg``: R' = R exp([eps]x), eps ~ N(0, sigma^2 I_3) per joint (seeded; mean angle
  about 1.6 sigma); data = sum_j |x_j - x'_j|^2 / (2 sigma^2) on the raw 6D; start: the noisy pose. Metrics:
  geodesic error (deg, all 21 joints) and MPJPE (mm), next to the noisy input's.

Selection on validation: completion by mean MPJPE (one hypothesis), IK by MPJPE, denoising by geodesic error.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime.formats.joint_maps import SMPL_NAMES
from runtime.rotations import JOINT_NAMES, PARENTS, geodesic_deg

from . import fit as F
from .data import load_split as load_npz  # shared npz or a converted (make data) split
from .kinematics import forward_kinematics
from .rotations import gram_schmidt, matrix_to_6d

BODY = SMPL_NAMES  # the 22 FK joints
MASKS = {
    "left_leg": ("left_hip", "left_knee", "left_ankle", "left_foot"),
    "right_leg": ("right_hip", "right_knee", "right_ankle", "right_foot"),
    "left_arm": ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
    "right_arm": ("right_collar", "right_shoulder", "right_elbow", "right_wrist"),
    "trunk": ("spine1", "spine2", "spine3", "neck", "head"),
}
EFFECTORS = ("pelvis", "head", "left_wrist", "right_wrist", "left_ankle", "right_ankle")
REFERENCE = "reference, no fit: mean pose (completion, IK start) / noisy input"
ROWS = {  # prior name -> table label
    "none": "no prior",
    "gmm": "GMM (axis-angle, ambient)",
    "vposer": "VPoser (‖z‖², latent)",
    "flow_ambient": "ours, ambient",
    "flow_latent": "ours, latent (-log p, Jacobian)",
    "flow_latent_z2": "ours, latent ‖z‖²/2 (ablation)",
    "runtime_ambient": "ours, ambient, runtime (numpy + onnxruntime)",
    "runtime_latent": "ours, latent (-log p, Jacobian), runtime",
}


@dataclass
class BenchConfig:
    n: int = 500  # test poses
    n_val: int = 100  # validation poses for the lam grid
    hypotheses: int = 10  # completion starts per pose
    init_sigma_deg: float = 20.0  # spread of the completion starts around the mean pose
    noise_deg: tuple = (10.0, 20.0)  # denoising noise levels
    effector_sigma_m: float = 0.01  # IK observation noise (and its data-term sigma)
    iters: dict = field(default_factory=lambda: {"completion": 20, "ik": 30, "denoise": 30})
    chunk: int = 2500  # poses per batched call (memory only: poses never interact)
    lam_grid: tuple = (0.03, 0.1, 0.3, 1.0, 3.0)  # IK and denoising (calibrated data terms: MAP at 1)
    lam_grid_completion: tuple = (3.0, 10.0, 30.0, 100.0, 300.0)  # latent completion: lam against the anchor
    fixed_weight: float = 5000.0  # latent-space anchor of visible joints (1/(2 * 0.01^2))
    seed: int = 0
    priors: tuple = ()  # names from ROWS to run (default: all)


# --- small helpers -----------------------------------------------------------------------------------------------
def evenly(n: int, total: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def mean_pose(aa: np.ndarray) -> torch.Tensor:
    """Per-joint chordal mean rotation (mean matrix projected onto SO(3) by SVD) of poses (N, 21, 3) -> 6D (21, 6)."""
    from runtime.rotations import axis_angle_to_matrix

    M = axis_angle_to_matrix(aa.astype(np.float64)).mean(0)
    U, _, Vt = np.linalg.svd(M)
    D = np.ones((len(M), 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    return matrix_to_6d(torch.from_numpy((U * D[:, None, :]) @ Vt)).float()


def joint_mask(names) -> torch.Tensor:
    return torch.tensor([n in names for n in JOINT_NAMES])


def descendants(names) -> list[int]:
    """FK joints (indices into BODY) whose position depends on the rotation of a joint in ``names``."""
    rotated = {BODY.index(n) for n in names}
    out = []
    for k in range(1, len(BODY)):
        a = PARENTS[k]
        while a > 0 and a not in rotated:
            a = PARENTS[a]
        if a > 0:
            out.append(k)
    return out


class Scorer:
    """Errors of fitted orthonormal 6D poses against ground truth, with the evaluation skeleton."""

    def __init__(self, gt: torch.Tensor, offsets: np.ndarray):
        self.R = gram_schmidt(gt.double())
        self.offsets = torch.from_numpy(np.asarray(offsets, dtype=np.float64))
        self.P = forward_kinematics(self.R, self.offsets)

    def geodesic(self, x: torch.Tensor) -> np.ndarray:
        """(..., N, 21) degrees; x (..., N, 21, 6)."""
        return geodesic_deg(gram_schmidt(x.double()).numpy(), self.R.numpy())

    def joint_errors(self, x: torch.Tensor) -> np.ndarray:
        """(..., N, 22) mm; x (..., N, 21, 6)."""
        R = gram_schmidt(x.double())
        P = forward_kinematics(R.reshape(-1, *R.shape[-3:]), self.offsets).reshape(R.shape[:-3] + (22, 3))
        return 1000.0 * (P - self.P).norm(dim=-1).numpy()


# --- the tasks ---------------------------------------------------------------------------------------------------
class Tasks:
    """The three tasks on one set of ground-truth poses gt (N, 21, 6); all randomness is seeded by ``cfg.seed``."""

    def __init__(self, gt: torch.Tensor, offsets: np.ndarray, mean: torch.Tensor, cfg: BenchConfig):
        self.gt, self.cfg, self.mean = gt, cfg, mean
        self.score = Scorer(gt, offsets)
        self.offsets = torch.from_numpy(np.asarray(offsets, dtype=np.float32))
        n = len(gt)
        self.mean_poses = mean.expand(n, -1, -1).contiguous()
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        eff = [BODY.index(e) for e in EFFECTORS]
        noise = torch.randn(n, len(eff), 3, generator=gen, dtype=torch.float64) * cfg.effector_sigma_m
        self.effectors = eff
        self.targets = (self.score.P[:, eff] + noise).float()
        self.noisy = {s: F.perturb(gt, s, seed=cfg.seed + 1000 + int(s)) for s in cfg.noise_deg}

    def _fit(self, prior, init, data, lam, task, fixed=None):
        c = self.cfg
        if isinstance(prior, RuntimePrior):
            return prior.fit(init, data, lam, fixed, c.fixed_weight, c.iters[task])
        return F.fit(
            prior, init, data, lam, fixed=fixed, fixed_weight=c.fixed_weight, iters=c.iters[task], chunk=c.chunk
        )

    def completion(self, prior, lam: float, mask_name: str, hypotheses: int):
        """(metrics, fitted poses (H, N, 21, 6))."""
        m = joint_mask(MASKS[mask_name])
        n, H = len(self.gt), hypotheses
        base = torch.where(m[:, None], self.mean_poses, self.gt)
        init = torch.cat([F.perturb(base, self.cfg.init_sigma_deg, seed=self.cfg.seed + h, joints=m) for h in range(H)])
        res = self._fit(prior, init, None, lam, "completion", fixed=(~m, self.gt.repeat(H, 1, 1)))
        poses = res.poses.reshape(H, n, 21, 6)
        mpjpe = self.score.joint_errors(poses)[..., descendants(MASKS[mask_name])].mean(-1)  # (H, N)
        geo = self.score.geodesic(poses)[..., m.numpy()].mean(-1)
        return {
            "mpjpe_mm": float(mpjpe.mean()),
            "mpjpe_best_mm": float(mpjpe.min(0).mean()),
            "geodesic_deg": float(geo.mean()),
            "geodesic_best_deg": float(geo.min(0).mean()),
            "seconds": res.seconds,
            PER_POSE: mpjpe.mean(0),
        }, poses

    def ik(self, prior, lam: float):
        data = F.Effectors(
            self.targets, self.effectors, self.offsets, self.cfg.effector_sigma_m, trans=self.targets[:, 0]
        )
        res = self._fit(prior, self.mean_poses, data, lam, "ik")
        err = self.score.joint_errors(res.poses)[:, 1:]
        return {
            "mpjpe_mm": float(err.mean()),
            "geodesic_deg": float(self.score.geodesic(res.poses).mean()),
            "seconds": res.seconds,
            PER_POSE: err.mean(-1),
        }, res.poses

    def denoise(self, prior, lam: float, sigma: float):
        noisy = self.noisy[sigma]
        res = self._fit(prior, noisy, F.Denoise(noisy, 1.0 / (2.0 * math.radians(sigma) ** 2)), lam, "denoise")
        geo = self.score.geodesic(res.poses).mean(-1)
        return {
            "geodesic_deg": float(geo.mean()),
            "mpjpe_mm": float(self.score.joint_errors(res.poses)[:, 1:].mean()),
            "seconds": res.seconds,
            PER_POSE: geo,
        }, res.poses

    def reference(self) -> dict:
        """Errors without fitting: completion with the mean pose in the masked joints, IK's start (the mean pose),
        the noisy inputs of denoising."""
        out = {"completion": {}}
        for name, joints in MASKS.items():
            m = joint_mask(joints)
            x = torch.where(m[:, None], self.mean_poses, self.gt)
            out["completion"][name] = {
                "mpjpe_mm": float(self.score.joint_errors(x)[:, descendants(joints)].mean()),
                "geodesic_deg": float(self.score.geodesic(x)[:, m.numpy()].mean()),
            }
        for metric in ("mpjpe_mm", "geodesic_deg"):
            out["completion"][f"mean_{metric}"] = float(np.mean([out["completion"][n][metric] for n in MASKS]))
        out["ik"] = {
            "mpjpe_mm": float(self.score.joint_errors(self.mean_poses)[:, 1:].mean()),
            "geodesic_deg": float(self.score.geodesic(self.mean_poses).mean()),
        }
        for s in self.noisy:
            out[f"denoise_{s:g}"] = self.noisy_input(s)
        return out

    def noisy_input(self, sigma: float) -> dict:
        x = self.noisy[sigma]
        return {
            "geodesic_deg": float(self.score.geodesic(x).mean()),
            "mpjpe_mm": float(self.score.joint_errors(x)[:, 1:].mean()),
        }


def task_keys(noise_deg) -> list[str]:
    return ["completion", "ik"] + [f"denoise_{float(s):g}" for s in noise_deg]


def evaluate(tasks: Tasks, prior, key: str, lam: float, hypotheses: int = 1):
    """(metrics, poses) of one prior on one task key; completion runs every mask."""
    if key == "completion":
        out, poses = {}, {}
        for name in MASKS:
            out[name], poses[name] = tasks.completion(prior, lam, name, hypotheses)
        for metric in ("mpjpe_mm", "mpjpe_best_mm", "geodesic_deg", "geodesic_best_deg", "seconds"):
            out[f"mean_{metric}"] = float(np.mean([out[name][metric] for name in MASKS]))
        out[PER_POSE] = np.mean([out[name].pop(PER_POSE) for name in MASKS], axis=0)
        return out, poses
    if key == "ik":
        return tasks.ik(prior, lam)
    return tasks.denoise(prior, lam, float(key.split("_")[1]))


SELECT = {"completion": "mean_mpjpe_mm", "ik": "mpjpe_mm"}  # denoising: geodesic_deg
PER_POSE = "_per_pose"  # the selection metric per test pose (N,): standard errors and paired differences
PAIRS = (
    ("runtime_ambient", "flow_ambient"),
    ("runtime_latent", "flow_latent"),
    ("flow_latent", "flow_latent_z2"),
    ("flow_latent", "flow_ambient"),
    ("flow_ambient", "vposer"),
    ("flow_latent", "vposer"),
    ("flow_ambient", "gmm"),
)


def paired(results: dict, keys) -> dict:
    """Mean per-pose difference a - b of the selection metric and its standard error, for the PAIRS of priors."""
    out = {}
    for a, b in PAIRS:
        if a in results and b in results:
            out[f"{a} - {b}"] = {}
            for key in keys:
                d = results[a][key][PER_POSE] - results[b][key][PER_POSE]
                out[f"{a} - {b}"][key] = {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d)))}
    return out


def tune(tasks: Tasks, prior, key: str) -> tuple[float, dict]:
    """The lam of the task's grid with the lowest validation error (one completion start); (lam, {lam: error})."""
    if prior.name == "none" or (key == "completion" and prior.space == "ambient"):
        return 1.0, {}
    metric = SELECT.get(key, "geodesic_deg")
    grid = tasks.cfg.lam_grid_completion if key == "completion" else tasks.cfg.lam_grid
    scores = {lam: evaluate(tasks, prior, key, lam)[0][metric] for lam in grid}
    return min(scores, key=scores.get), scores


class RuntimePrior:
    """The flow through the torch-free runtime (``runtime.fit``, onnxruntime graphs, numpy data terms) in one
    space, with the SAME problems, budgets and starts as the torch rows: the torch data terms are rebuilt as their
    numpy twins (``Denoise``, ``Effectors``), fixed joints become ``free = ~mask`` (latent: the same anchor). The
    fitting itself never calls torch; tensors are converted at this boundary only."""

    def __init__(self, prior, space: str):
        self.prior, self.space, self.name = prior, space, f"runtime_{space}"
        self._latents = {}  # start poses (bytes) -> encode(start): the lam grid re-fits the same starts

    def _init_z(self, x0):
        from runtime import fit as rfit

        if self.space != "latent":
            return None
        key = x0.tobytes()
        if key not in self._latents:
            self._latents[key] = rfit.encode(self.prior, x0)[0]
        return self._latents[key]

    def fit(self, init, data, lam, fixed, fixed_weight, iters) -> F.FitResult:
        from runtime import fit as rfit

        x0 = init.numpy()
        free = None
        if fixed is not None:
            mask = fixed[0].expand(len(x0), -1).numpy()
            x0, free = np.where(mask[..., None], fixed[1].numpy(), x0), ~mask
        term = None
        if isinstance(data, F.Denoise):
            term = rfit.Denoise(data.observed.numpy(), data.weight)
        elif isinstance(data, F.Effectors):
            term = rfit.Effectors(
                data.targets.numpy(),
                data.joints,
                data.offsets.numpy(),
                data.sigma,
                None if data.trans is None else data.trans.numpy(),
            )
        elif data is not None:
            raise TypeError(f"no runtime twin for the data term {type(data).__name__}")
        r = rfit.fit(
            self.prior,
            x0,
            term,
            lam,
            free,
            space=self.space,
            init_z=self._init_z(x0),
            fixed_weight=fixed_weight,
            iters=iters,
        )
        t = {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in dict(
                poses=r.poses, raw=r.raw, params=r.params, loss=r.loss, data=r.data, prior=r.neg_log_p
            ).items()
        }
        return F.FitResult(t["poses"], t["raw"], t["params"], t["loss"], t["data"], t["prior"], r.seconds)


# --- models ------------------------------------------------------------------------------------------------------
def load_priors(
    model_dir: Path, vposer_path: Path, gmm_path: Path, check_poses: torch.Tensor, only: tuple = ()
) -> tuple[dict, str]:
    """The prior adapters (all of ``ROWS``, or the names in ``only``; the runtime latent row only for models with
    latent_vjp); the flow is the model's (.pt2, else its training checkpoint under runs/), checked against the
    model's ONNX log_prob on ``check_poses``. VPoser and the GMM are loaded only when asked for."""
    from runtime import PosePrior
    from runtime import fit as rfit

    from .gmm import load_gmm
    from .loading import torch_flow
    from .vposer import load_vposer

    onnx_prior = PosePrior.load(model_dir, intra_op_num_threads=1, allow_spinning=False)
    flow, origin = torch_flow(onnx_prior)
    if "untrained" in origin:
        t = onnx_prior.manifest["training"]
        raise FileNotFoundError(
            f"{model_dir}: no .pt2, and its training checkpoint runs/{t['run']}/{t['checkpoint']} "
            f"is not here: the torch fitting needs the flow's weights"
        )
    flow.requires_grad_(False)
    with torch.no_grad():
        diff = np.abs(flow.log_prob(check_poses).numpy() - onnx_prior.log_prob(check_poses.numpy())).max()
    if diff > 1e-2:
        raise ValueError(f"{model_dir}: torch flow ({origin}) and ONNX log p differ by {diff:.3g}: not the same model")
    unknown = set(only) - set(ROWS)
    if unknown:
        raise ValueError(f"--priors: unknown {sorted(unknown)}; choose from {list(ROWS)}")
    wanted = set(only or ROWS)
    priors = {"none": F.NoPrior()}
    if "gmm" in wanted:
        priors["gmm"] = F.GMMPrior(load_gmm(gmm_path)[0])
    if "vposer" in wanted:
        priors["vposer"] = F.VPoserLatent(load_vposer(vposer_path)[0].requires_grad_(False))
    priors |= {
        "flow_ambient": F.FlowAmbient(flow),
        "flow_latent": F.FlowLatent(flow, True),
        "flow_latent_z2": F.FlowLatent(flow, False),
        "runtime_ambient": RuntimePrior(onnx_prior, "ambient"),
    }
    if rfit.has_latent_space(onnx_prior):  # models exported before latent_vjp get no runtime latent row
        priors["runtime_latent"] = RuntimePrior(onnx_prior, "latent")
    priors = {k: v for k, v in priors.items() if k in wanted}
    return priors, f"{origin} (torch vs ONNX log p max diff {diff:.2g})"


# --- the benchmark -----------------------------------------------------------------------------------------------
def run(
    model_dir: Path,
    test_path: Path,
    out: Path,
    cfg: BenchConfig,
    val_path: Path | None = None,
    train_path: Path | None = None,
    vposer_path: Path = Path("runs/smpl3-vposer"),
    gmm_path: Path = Path("runs/smpl3-gmm"),
    threads: int = 1,
    log=print,
) -> dict:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread per process: a shared CPU makes torch's pool spin badly
    try:
        return _run(model_dir, test_path, out, cfg, val_path, train_path, vposer_path, gmm_path, threads, log)
    finally:
        torch.set_num_threads(threads_before)


def _run(model_dir, test_path, out, cfg, val_path, train_path, vposer_path, gmm_path, threads, log) -> dict:
    t_start = time.monotonic()
    val_path = val_path or test_path.with_name("val.npz")
    train_path = train_path or test_path.with_name("train.npz")
    test, val = load_npz(test_path), load_npz(val_path)
    mean = mean_pose(load_npz(train_path).rotations)
    gt_test = test.to_6d()[torch.from_numpy(evenly(cfg.n, len(test)))]
    gt_val = val.to_6d()[torch.from_numpy(evenly(cfg.n_val, len(val)))]
    priors, origin = load_priors(model_dir, vposer_path, gmm_path, gt_val[:64], tuple(cfg.priors))
    log(f"flow: {origin}")
    val_tasks = Tasks(gt_val, val.offsets, mean, cfg)
    test_tasks = Tasks(gt_test, test.offsets, mean, cfg)

    chosen, grids, results, figures = {}, {}, {}, {}
    for name, prior in priors.items():
        chosen[name], grids[name], results[name] = {}, {}, {}
        for key in task_keys(cfg.noise_deg):
            t0 = time.monotonic()
            lam, scores = tune(val_tasks, prior, key)
            t1 = time.monotonic()
            metrics, poses = evaluate(test_tasks, prior, key, lam, cfg.hypotheses if key == "completion" else 1)
            per_pose = metrics[PER_POSE]
            metrics["se"] = float(per_pose.std(ddof=1) / math.sqrt(len(per_pose))) if len(per_pose) > 1 else 0.0
            chosen[name][key], grids[name][key] = lam, {f"{k:g}": v for k, v in scores.items()}
            metrics.update(lam=lam, tune_seconds=round(t1 - t0, 1), test_seconds=round(time.monotonic() - t1, 1))
            results[name][key] = metrics
            figures[(name, key)] = poses
            log(
                f"{name:15s} {key:12s} lam={lam:<5g} {headline(key, metrics)}  "
                f"(tune {t1 - t0:.0f} s, test {time.monotonic() - t1:.0f} s)"
            )
    reference = test_tasks.reference()
    pairs = paired(results, task_keys(cfg.noise_deg))
    for r in results.values():
        for m in r.values():
            m.pop(PER_POSE)
    report = {
        "config": asdict(cfg),
        "model_dir": str(model_dir),
        "flow": origin,
        "test": str(test_path),
        "val": str(val_path),
        "n_test": len(gt_test),
        "n_val": len(gt_val),
        "threads": threads,
        "lam": chosen,
        "val_grid": grids,
        "results": results,
        "paired": pairs,
        "reference": reference,
        "seconds": round(time.monotonic() - t_start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    log(table)
    plot(test_tasks, figures, out / "fits.png")
    (out / "report.md").write_text(report_md(report, table))
    return report


def headline(key: str, m: dict) -> str:
    if key == "completion":
        return (
            f"MPJPE {m['mean_mpjpe_mm']:.1f} mm (best {m['mean_mpjpe_best_mm']:.1f}), "
            f"geodesic {m['mean_geodesic_deg']:.1f} deg (best {m['mean_geodesic_best_deg']:.1f})"
        )
    return f"MPJPE {m['mpjpe_mm']:.1f} mm, geodesic {m['geodesic_deg']:.2f} deg"


def format_table(report: dict) -> str:
    """Markdown table: one row per prior; completion mean / best-of-H per mask average, IK, denoising."""
    keys = task_keys(report["config"]["noise_deg"])
    H = report["config"]["hypotheses"]
    head = [
        "prior",
        f"completion MPJPE mm (mean / best of {H})",
        "completion geodesic deg (mean / best)",
        "IK MPJPE mm",
    ] + [f"denoise {k.split('_')[1]}° geodesic deg / MPJPE mm" for k in keys[2:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = report["reference"]
    lines.append(
        f"| {REFERENCE} | {ref['completion']['mean_mpjpe_mm']:.1f} | "
        f"{ref['completion']['mean_geodesic_deg']:.1f} | {ref['ik']['mpjpe_mm']:.1f} | "
        + " | ".join(f"{ref[k]['geodesic_deg']:.2f} / {ref[k]['mpjpe_mm']:.1f}" for k in keys[2:])
        + " |"
    )
    for name, label in ROWS.items():
        r = report["results"].get(name)
        if r is None:
            continue
        c = r["completion"]
        cells = [
            label,
            f"{c['mean_mpjpe_mm']:.1f} / {c['mean_mpjpe_best_mm']:.1f}",
            f"{c['mean_geodesic_deg']:.1f} / {c['mean_geodesic_best_deg']:.1f}",
            f"{r['ik']['mpjpe_mm']:.1f}",
        ]
        cells += [f"{r[k]['geodesic_deg']:.2f} / {r[k]['mpjpe_mm']:.1f}" for k in keys[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    per_mask = [
        "",
        "Completion per mask, MPJPE mm mean / best:",
        "",
        "| prior | " + " | ".join(MASKS) + " |",
        "|" + "---|" * (len(MASKS) + 1),
        f"| {REFERENCE} | " + " | ".join(f"{ref['completion'][m]['mpjpe_mm']:.1f}" for m in MASKS) + " |",
    ]
    for name, label in ROWS.items():
        if name in report["results"]:
            c = report["results"][name]["completion"]
            per_mask.append(
                f"| {label} | "
                + " | ".join(f"{c[m]['mpjpe_mm']:.1f} / {c[m]['mpjpe_best_mm']:.1f}" for m in MASKS)
                + " |"
            )
    return "\n".join(lines + per_mask)


def report_md(report: dict, table: str) -> str:
    cfg = report["config"]
    keys = task_keys(cfg["noise_deg"])
    lam_rows = ["| prior | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, label in ROWS.items():
        if name in report["lam"]:
            cells = []
            for k, v in report["lam"][name].items():
                grid = [float(g) for g in report["val_grid"][name][k]]
                cells.append("n/a" if not grid else f"{v:g}" + (" (grid edge)" if v in (min(grid), max(grid)) else ""))
            lam_rows.append(f"| {label} | " + " | ".join(cells) + " |")
    pair_rows = ["| a − b | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for pair, by_key in report["paired"].items():
        a, b = pair.split(" - ")
        pair_rows.append(
            f"| {ROWS[a]} − {ROWS[b]} | "
            + " | ".join(f"{by_key[k]['mean']:+.2f} ± {by_key[k]['se']:.2f}" for k in keys)
            + " |"
        )
    return "\n".join(
        [
            "# Downstream fitting benchmark (`poseprior fit-bench`)",
            "",
            f"Model: `{report['model_dir']}`; flow weights: {report['flow']}.",
            f"Test: `{report['test']}` ({report['n_test']} poses, evenly spaced); lam tuned on `{report['val']}` "
            f"({report['n_val']} poses), grid {cfg['lam_grid']} (latent completion: {cfg['lam_grid_completion']}). "
            f"Optimiser: one L-BFGS per pose (runtime.lbfgs, both sides), iterations {cfg['iters']}, chunks of {cfg['chunk']} poses; "
            f"{cfg['hypotheses']} completion starts (mean pose + N(0, {cfg['init_sigma_deg']}°) per masked joint). "
            f"Total {report['seconds']:.0f} s on {report['threads']} thread(s).",
            "",
            "Lower is better everywhere. See `train/fitbench.py` for the exact objectives.",
            "",
            table,
            "",
            "## Paired differences on the test poses",
            "",
            "Mean per-pose difference ± its standard error, of completion MPJPE (mm, mean over masks and starts), "
            "IK MPJPE (mm) and denoising geodesic error (deg). Negative: a is better.",
            "",
            *pair_rows,
            "",
            "## Chosen prior weights (validation)",
            "",
            "n/a: no weight to choose (no prior; ambient completion, where the prior is the whole objective).",
            "",
            *lam_rows,
            "",
            "![fits](fits.png)",
            "",
        ]
    )


def plot(tasks: Tasks, figures: dict, path: Path) -> None:
    """Skeletons (front view, yawed 30°) of a few test poses: ground truth (grey) and each prior's fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ROWS)
    panels = [("completion", "left_arm"), ("completion", "trunk"), ("ik", None), ("denoise_20", None)]
    panels = [p for p in panels if any((n, p[0]) in figures for n in names)]
    idx = [0, len(tasks.gt) // 2]
    rows = len(panels) * len(idx)
    fig, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 2.6 * rows), squeeze=False)
    yaw = math.radians(30)
    view = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0]], dtype=torch.float64)

    def draw(ax, x6, color):
        P = forward_kinematics(gram_schmidt(x6.double())[None], tasks.score.offsets)[0] @ view.T
        for k in range(1, 22):
            ax.plot(*zip(P[PARENTS[k]].numpy(), P[k].numpy()), color=color, lw=1.5)

    for r, ((key, mask), i) in enumerate([(p, i) for p in panels for i in idx]):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.set_aspect("equal")
            ax.axis("off")
            poses = figures.get((name, key))
            if poses is None:
                continue
            fitted = poses[mask][0, i] if mask else poses[i]
            draw(ax, tasks.gt[i], "0.7")
            draw(ax, fitted, "C3" if name.startswith("flow") else "C0")
            if r == 0:
                ax.set_title(ROWS[name], fontsize=7)
            if c == 0:
                ax.text(
                    -0.1,
                    0.5,
                    f"{key}{'/' + mask if mask else ''}\npose {i}",
                    transform=ax.transAxes,
                    rotation=90,
                    va="center",
                    ha="right",
                    fontsize=7,
                )
    fig.suptitle("fits (colour) vs ground truth (grey); completion: first start", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
