"""``poseprior fit-bench``: the downstream fitting benchmark of docs/design.md §5 on an unseen subject (issue 5).

Every prior is used through ``train.fit`` with the SAME optimiser, budget and initial poses per task; only the
prior weight ``lam`` differs, chosen per prior and task on a small grid on VALIDATION poses (never the test split).
Data terms are Gaussian negative log-likelihoods, so ``lam = 1`` is the MAP weight and the grid brackets it.

Tasks (poses: ``n`` test poses evenly spaced over the split; FK with the test split's mean skeleton, identity root,
pelvis at the origin):

* part completion (docs/design.md §5): the visible joints are fixed (ground truth), the masked joints are free and
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

Modules: ``tasks`` (the poses, the three tasks and their metrics, ``BenchConfig``), ``models`` (the prior
adapters, torch and runtime), ``bench`` (lam tuned on validation, the test runs, paired differences, the files
written), ``report`` (the Markdown tables), ``plot`` (``fits.png``).
"""

from .bench import run
from .tasks import BODY, MASKS, BenchConfig, descendants

__all__ = ["BODY", "MASKS", "BenchConfig", "descendants", "run"]
