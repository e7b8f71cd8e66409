"""Tools of the checkout that need no torch, run with numpy + onnxruntime (``python -m runtime.tools.NAME``; the
Makefile's targets): ``smpl_data`` (``make data``), ``plausibility`` (``make plausibility``), ``fitbench_rt`` (the
runtime rows of ``make bench``), ``membench`` (``make bench-memory``).

They read ``../shared/data`` and ``build/`` beside the checkout, so they are not part of the installed package
(``pyproject.toml`` excludes ``runtime.tools``); the layer contracts (``lint-imports``) keep them torch-free.
"""
