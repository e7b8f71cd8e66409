"""Fixtures shared by tests/ and bindings_tests/ (one session trains and exports the tiny model once).

Real data is read from ../shared/data beside the checkout; it is never copied here.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it skip with a clear message when absent, and fail in CI."""
    if not (SHARED_DATA / "cmu_pose" / "train.npz").is_file():
        msg = f"real pose data not found at {SHARED_DATA} (clone the project next to its shared/ folder)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must have it")
        pytest.skip(msg)
    return SHARED_DATA


# --- a trained and exported tiny model (tests/test_export.py, tests/test_runtime.py) ---------------------------------
@pytest.fixture(scope="session")
def tiny_run(shared_data, tmp_path_factory) -> Path:
    """A real run directory: $POSEPRIOR_TEST_RUN when set (CI: the run `make train-tiny` made), else the tiny
    preset trained for 300 steps on the CMU train split (~15 s)."""
    if os.environ.get("POSEPRIOR_TEST_RUN"):
        return Path(os.environ["POSEPRIOR_TEST_RUN"]).resolve()
    from train.config import load_config
    from train.data import load_npz
    from train.trainer import train

    data = {split: load_npz(shared_data / "cmu_pose" / f"{split}.npz") for split in ("train", "val")}
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    train(load_config("tiny"), data["train"], data["val"], run, max_steps=300, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_model(request, tmp_path_factory) -> Path:
    """A model directory: $POSEPRIOR_TEST_MODEL (e.g. one made by `make export`) when set, else `tiny_run`
    exported (~20 s)."""
    given = os.environ.get("POSEPRIOR_TEST_MODEL")
    if given:
        return Path(given).resolve()
    from export import export_model

    out = tmp_path_factory.mktemp("tiny_model") / "model"
    export_model(request.getfixturevalue("tiny_run"), out)
    return out


@pytest.fixture(scope="session")
def baseline_runs(shared_data, tmp_path_factory) -> list[Path]:
    """[VPoser run, GMM run]: tiny baselines trained here (~20 s) on the CMU splits the tiny flow is trained on (the
    committed baselines, runs/smpl3-vposer and runs/smpl3-gmm, are trained on the SMPL conversion, not on these)."""
    from train.data import load_npz
    from train.gmm import fit_gmm
    from train.gmm import load_config as gmm_config
    from train.vposer import load_config as vposer_config
    from train.vposer import train_vposer

    data = {s: load_npz(shared_data / "cmu_pose" / f"{s}.npz") for s in ("train", "val")}
    root = tmp_path_factory.mktemp("baselines")
    train_vposer(vposer_config("tiny"), data["train"], data["val"], root / "vposer-tiny", progress=False)
    fit_gmm(gmm_config("tiny"), data["train"], data["val"], root / "gmm-tiny", progress=False)
    return [root / "vposer-tiny", root / "gmm-tiny"]


# --- tables that tests print at the end of the session (parity figures etc.), even under -q ------------------------
REPORTS = pytest.StashKey[list]()


@pytest.fixture
def report(request):
    """``report(title, lines)``: show a table in the session's terminal summary."""

    def add(title: str, lines: list[str]) -> None:
        request.config.stash.setdefault(REPORTS, []).append((title, lines))

    return add


def pytest_sessionfinish(session):
    """Under pytest-xdist (`make test` runs ``-n auto``) a worker hands its tables to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["poseprior_reports"] = session.config.stash.get(REPORTS, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller's side of `pytest_sessionfinish`: collect each worker's tables (only called under xdist)."""
    tables = getattr(node, "workeroutput", {}).get("poseprior_reports", [])
    node.config.stash.setdefault(REPORTS, []).extend(tuple(t) for t in tables)


def pytest_terminal_summary(terminalreporter, config):
    for title, lines in config.stash.get(REPORTS, []):
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def cmu(shared_data):
    """The CMU train and val splits (shared npz format) as ``train.data.PoseSet``s."""
    from train.data import load_npz

    return {s: load_npz(shared_data / "cmu_pose" / f"{s}.npz") for s in ("train", "val")}
