"""Training side of the pose prior (torch): rotations, augmentation, the flow, data loaders, the training loop.

Needs the training extra; without torch ``import train`` raises ImportError saying what to install.
"""
try:
    import torch  # noqa: F401
except ImportError:
    from runtime.extras import TRAIN_EXTRA_HINT
    raise ImportError(f"poseprior's train package {TRAIN_EXTRA_HINT}", name="torch") from None
