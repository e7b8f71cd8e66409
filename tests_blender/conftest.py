"""Tests of the Blender add-on in real Blender (bpy 4.5 as a module): run by `make test-blender` in .venv-blender,
never by the default `make test` (testpaths are tests/ and bindings_tests/). The root conftest.py gives shared_data."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
