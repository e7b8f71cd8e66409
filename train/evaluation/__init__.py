"""Evaluation of a pose prior (docs/design.md §5; issue 4): KS of flow log-density, model-independent sample metrics,
the paper's figures and a Markdown report. ``poseprior evaluate`` / ``make evaluate`` run ``evaluate``.

Modules: ``metrics`` (the formulas), ``sources`` (samples and data, seeds), ``figures``, ``report``, ``run``.
"""

from .run import evaluate

__all__ = ["evaluate"]
