"""The optional extras of the ``poseprior`` distribution, as the torch-free side names them.

``import train`` / ``import export`` without the training extra raise ImportError with ``TRAIN_EXTRA_HINT``; the
``poseprior`` command says the same for its torch commands.
"""

#: what the torch commands need
TRAIN_EXTRA_HINT = "needs the training extra (torch): pip install 'poseprior[train]'"
#: the distributions of the training extra (an ImportError naming one of them means: the extra is missing)
TRAIN_EXTRA_MODULES = ("torch", "scipy", "tqdm", "onnx", "onnxscript", "matplotlib")
