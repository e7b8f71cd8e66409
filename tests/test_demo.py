"""`make demo` on the shipped default model: runs end to end, writes its figure, and ranks poses sensibly."""

from runtime import demo


def test_demo_runs_on_the_default_model(shared_data, tmp_path):
    rows = demo.main(
        ["--n", "200", "--data", str(shared_data / "cmu_pose" / "test.npz"), "--out", str(tmp_path / "demo.png")]
    )
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    real = rows["real, unseen subject"]
    assert real["plausible"] > 0.95
    for corrupted in ("real + 3 joints off by 60 deg", "real, knees bent backwards", "random rotations"):
        assert rows[corrupted]["median"] < real["median"] - 50
    # above the manifest's tau: knees bent backwards and random rotations are rejected, and most 3 x 60 degree
    # glitches (one frame alone: the take-QA detector adds motion, docs/takes.md)
    for corrupted in ("real, knees bent backwards", "random rotations"):
        assert rows[corrupted]["plausible"] < 0.05
    assert rows["real + 3 joints off by 60 deg"]["plausible"] < 0.25
    assert rows["samples (orthonormalised)"]["plausible"] > 0.9
