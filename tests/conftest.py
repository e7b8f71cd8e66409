"""Shared fixtures. Real data is read from ../shared/data beside the checkout; it is never copied here."""
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it skip with a clear message when absent, and fail in CI."""
    if not (SHARED_DATA / "cmu_pose" / "train.npz").is_file():
        msg = f"real pose data not found at {SHARED_DATA} (clone the project next to its shared/ folder)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must have it")
        pytest.skip(msg)
    return SHARED_DATA
