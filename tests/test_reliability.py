"""Issue 19, "Reliability, round 2": one regression test per numbered case, the reproducer in each docstring.

Cases 1-6: nothing the user gave is lost, no run is silently mixed. Cases 7-12: one line (exit 2, the file named)
instead of a traceback. Cases 13-17: nothing wrong without a word. Case 18: memory (measured by
``tests/memory_check.py``; the chunking itself is tested here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.formats import FormatError, read_bvh
from runtime.prior import DEFAULT_MODEL_DIR, ModelError, PosePrior

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def poseprior(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "runtime.cli", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600, **kw
    )


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """rc 2 and exactly one 'error:' line on stderr holding every word; no traceback, no warning lines."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("note: ")]  # notes inform
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def with_line(src: Path, dst: Path, line_no: int, new: str) -> Path:
    lines = src.read_text().splitlines()
    lines[line_no] = new
    dst.write_text("\n".join(lines) + "\n")
    return dst


def bvh_motion_start(lines: list[str]) -> int:
    """Index of the first frame line of a BVH's MOTION section."""
    return next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time")) + 1


# ---- 1. two trainings on one --out --------------------------------------------------------------------------------
def test_case01_second_training_on_same_out_is_refused(shared_data, tmp_path):
    """Reproducer: ``poseprior train --data D --out R --config tiny --set seed=1 &`` and the same with ``seed=2``:
    both exited 0, and R could hold seed 1's config.json with seed 2's checkpoints. Now the second is refused while
    the first runs (``runtime.locking``: an exclusive lock beside R, held for the run's life), exactly one runs,
    and R's config, checkpoints and summary are the same run's. (20 repeats: ``make concurrency-check``.)"""
    spec = importlib.util.spec_from_file_location("concurrent_runs", ROOT / "tests" / "concurrent_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for offset in (0.0, 0.7):
        root = tmp_path / f"o{offset}"
        root.mkdir()
        r = mod.one_round(shared_data / "cmu_pose", root, offset)
        assert not r["problems"], r


def test_case01_lock_is_exclusive_and_released(tmp_path):
    """The lock itself: a second holder in another process is refused naming the path and the holder; a killed
    holder's lock is free again; export takes the same lock (``train.cli`` calls ``hold(out, 'export')``)."""
    from runtime.locking import OutputLocked, hold, lock_path

    out = tmp_path / "model"
    holder = subprocess.Popen(
        [
            PY,
            "-c",
            "import sys, time; from runtime.locking import hold; "
            f"hold({str(out)!r}, 'export'); print('held', flush=True); time.sleep(60)",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=f"{out}: in use by pid {holder.pid} \\(export\\)"):
            hold(out, "export")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold(out, "export"):  # the kernel released the killed holder's lock
        assert lock_path(out).is_file()
    assert not lock_path(out).exists()


# ---- 2. OUT == SRC -----------------------------------------------------------------------------------------------
def test_case02_output_onto_the_input_is_refused(shared_data, tmp_path):
    """Reproducer: ``poseprior convert same.npz --to smpl --out same.npz`` on an AMASS SMPL-H file replaced its
    (500, 156) poses by (500, 72) and lost betas and gender; ``repair --out`` = input did the same. Now both are
    refused, for the same path, another spelling of it, and a link to it; the file is unchanged."""
    src = tmp_path / "same.npz"
    shutil.copy(shared_data / "smpl_reference" / "amass_dev_sample.npz", src)
    before = src.read_bytes()
    (tmp_path / "link.npz").symlink_to(src)
    os.link(src, tmp_path / "hard.npz")
    for out in (src, tmp_path / "." / "same.npz", tmp_path / "link.npz", tmp_path / "hard.npz"):
        one_line_error(poseprior("convert", src, "--to", "smpl", "--out", out), "is the input file")
        one_line_error(poseprior("repair", src, "--flagged", "--out", out), "is the input file")
    assert src.read_bytes() == before


# ---- 3. convert writes inf ---------------------------------------------------------------------------------------
def test_case03_out_of_range_values_are_refused_before_writing(shared_data, tmp_path):
    """Reproducer: a root position of 1e300 in a BVH / AMC, ``poses`` or ``trans`` of 1e39 in an npz, an ASF
    ``length 1e-300``: ``convert`` exited 0 with a RuntimeWarning and wrote ``inf``. Now: a FormatError naming the
    file and the frame, exit 2, nothing written."""
    bvh_src = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    lines = bvh_src.read_text().splitlines()
    first = bvh_motion_start(lines)
    vals = lines[first + 5].split()
    vals[0] = "1e300"
    bvh = with_line(bvh_src, tmp_path / "far.bvh", first + 5, " ".join(vals))
    amc_dir = shared_data / "cmu_extra" / "asf_amc"
    amc_lines = (amc_dir / "35_01.amc").read_text().splitlines()
    k = next(i for i, ln in enumerate(amc_lines) if ln.startswith("root"))
    amc = with_line(amc_dir / "35_01.amc", tmp_path / "35_01.amc", k, "root 1e300 17.8 -21 -0.9 -8.3 -7.4")
    shutil.copy(amc_dir / "35.asf", tmp_path / "35.asf")
    asf_lines = (amc_dir / "35.asf").read_text().splitlines()
    u = next(i for i, ln in enumerate(asf_lines) if ln.strip().startswith("length"))
    (tmp_path / "tiny").mkdir()
    with_line(amc_dir / "35.asf", tmp_path / "tiny" / "35.asf", u, "  length 1e-300")
    shutil.copy(amc_dir / "35_01.amc", tmp_path / "tiny" / "35_01.amc")
    a = dict(np.load(shared_data / "smpl_reference" / "amass_dev_sample.npz"))
    cases = [(bvh, "frame 5"), (amc, "frame 1"), (tmp_path / "tiny" / "35_01.amc", "frame 0")]
    for key in ("poses", "trans"):
        b = {k: v.copy() for k, v in a.items()}
        b[key] = b[key].astype(np.float64)
        b[key][7, 1] = 1e39
        np.savez(tmp_path / f"{key}.npz", **b)
        cases.append((tmp_path / f"{key}.npz", "frame 7"))
    for src, frame in cases:
        out = tmp_path / "out.npz"
        r = poseprior("convert", src, "--out", out)
        line = one_line_error(r, src.name.split(".")[0], frame)
        assert "RuntimeWarning" not in r.stderr and not out.exists(), line
        assert not list(tmp_path.glob(".out.npz.partial-*"))


# ---- 4. interrupted convert --------------------------------------------------------------------------------------
def test_case04_sigterm_and_stale_partials_leave_nothing(shared_data, tmp_path):
    """Reproducer: SIGTERM while ``convert`` writes left ``.OUT.partial-PID.npz`` (up to 86 MB) that nothing
    removed. Now ``atomic_write`` turns SIGTERM into SystemExit while it writes (the partial is removed, exit
    143), and every write removes the partials that dead processes left beside its output."""
    out = tmp_path / "out.npz"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from runtime.atomic import atomic_write
        def write(tmp):
            tmp.write_bytes(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(30)
        atomic_write(Path({str(out)!r}), write)
    """)
    p = subprocess.Popen([PY, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".out.npz.partial-*.npz"))) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []
    # a partial of a process killed outright (SIGKILL): removed by the next convert of the same OUT
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.npz.partial-{dead.pid}.npz"
    stale.write_bytes(b"left by a SIGKILL")
    alive = tmp_path / f".out.npz.partial-{os.getpid()}.npz"  # a live process's write is left alone
    alive.write_bytes(b"being written by a live process")
    r = poseprior("convert", shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", "--out", out, "--fps", "30")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and out.is_file()
    assert alive.exists()


# ---- 5. a full disk during training ------------------------------------------------------------------------------
def test_case05_failed_checkpoint_write_is_one_line_and_resumable(shared_data, tmp_path):
    """Reproducer: training with ``ulimit -f`` (a write failure: a full disk) gave a torch RuntimeError traceback
    and left ``last.pt.tmp``. Now: one line naming the file, exit 2, no ``*.tmp``, the files written before are
    intact, and ``--resume`` continues the run. Here the limit (1 MB) lets ``best.pt`` (0.7 MB) through and stops
    ``last.pt`` (2 MB)."""
    out = tmp_path / "run"
    args = (
        "train",
        "--data",
        shared_data / "cmu_pose",
        "--out",
        out,
        "--config",
        "tiny",
        "--max-steps",
        "3",
        "--set",
        "max_val=200",
        "--quiet",
    )

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    r = poseprior(*args, preexec_fn=limit)
    one_line_error(r, out / "last.pt", "cannot write")
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "metrics.jsonl"]
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", out, "--resume", "--max-steps", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


# ---- 6. the model changing between the checksum and the load -------------------------------------------------------
def test_case06_load_runs_the_bytes_it_checked(tmp_path):
    """Reproducer: ``weights.bin`` replaced by atomic renames from another process during ``PosePrior.load``:
    66 of 902 loads ran the wrong weights silently (log p off by up to 0.13). Now the bytes hashed are the bytes
    given to onnxruntime: every load either refuses (ModelError: sha256 differs) or gives exactly the right log p."""
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    good = (model / "weights.bin").read_bytes()
    w = np.frombuffer(good, np.float32).copy()
    w *= np.float32(1.01)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(w.tobytes())
    x = PosePrior.load(DEFAULT_MODEL_DIR).sample(64, seed=0)
    ref = PosePrior.load(DEFAULT_MODEL_DIR).log_prob(x)
    swap = textwrap.dedent(f"""
        import os, time
        d = {str(tmp_path)!r}
        i = 0
        while True:
            src = os.path.join(d, "bad.bin" if i % 2 else "good.bin")
            os.link(src, os.path.join(d, "next.bin"))
            os.replace(os.path.join(d, "next.bin"), os.path.join(d, "model", "weights.bin"))
            i += 1
            time.sleep(0.0005)
    """)
    replacer = subprocess.Popen([PY, "-c", swap])
    ok = refused = 0
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and ok + refused < 150:
            try:
                p = PosePrior.load(model, intra_op_num_threads=1)
            except ModelError as e:
                assert "sha256" in str(e)
                refused += 1
                continue
            np.testing.assert_array_equal(p.log_prob(x), ref)
            ok += 1
    finally:
        replacer.kill()
        replacer.wait()
    print(f"case 6: {ok} loads ran the checked weights, {refused} refused, 0 wrong")
    assert ok > 0 and refused > 0


# ---- 7-12: one line instead of a traceback -----------------------------------------------------------------------
def deep_bvh(path: Path, n: int = 1000) -> Path:
    """A BVH of ``n`` joints, each the child of the one before (1.7 units tall)."""
    lines = [
        "HIERARCHY",
        "ROOT j0",
        "{",
        "OFFSET 0 0 0",
        "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation",
    ]
    for i in range(1, n):
        lines += [f"JOINT j{i}", "{", f"OFFSET 0 {1.7 / n} 0", "CHANNELS 3 Zrotation Xrotation Yrotation"]
    lines += ["End Site", "{", "OFFSET 0 0.001 0", "}"] + ["}"] * n
    lines += ["MOTION", "Frames: 2", "Frame Time: 0.0333333"] + [" ".join(["0"] * (3 + 3 * n))] * 2
    path.write_text("\n".join(lines) + "\n")
    return path


def small_shared(shared_data: Path, path: Path, **changes) -> Path:
    """The first 60 frames of CMU's shared-format test split (one sequence), with ``changes`` applied."""
    with np.load(shared_data / "cmu_pose" / "test.npz") as d:
        a = {k: d[k] for k in d.files}
    for k in ("rotations", "root_orient", "trans", "frame_index", "sequence", "subject"):
        a[k] = a[k][:60]
    a.update(changes)
    np.savez(path, **a)
    return path


def test_case07_deeply_nested_bvh_reads_and_refuses_in_one_line(shared_data, tmp_path):
    """Reproducer: a BVH with 1,000 nested joints gave ``RecursionError`` in convert / score / train. Now the
    HIERARCHY is parsed with a stack: the file reads (1,000 joints, round trip through ``write_bvh``), and the
    commands refuse the unknown skeleton in one line."""
    src = deep_bvh(tmp_path / "deep.bvh")
    m = read_bvh(src)
    assert len(m.names) == 1000 and m.parents[999] == 998
    from runtime.formats import write_bvh

    back = read_bvh(write_bvh(m, tmp_path / "back.bvh", unit_m=1.0), unit_m=1.0)
    assert back.names == m.names
    one_line_error(poseprior("convert", src, "--out", tmp_path / "o.npz"), src)
    one_line_error(poseprior("score", src), src)
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
        shutil.copy(src, tmp_path / "data" / split / "deep.bvh")
    one_line_error(
        poseprior("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--config", "tiny", "--quiet"),
        "deep.bvh",
    )
    assert not (tmp_path / "run").exists()


def npy_member(header_shape, payload: bytes, descr: str = "<f8") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": header_shape})
    return buf.getvalue() + payload


def test_case08_npy_header_larger_than_the_file_is_refused(tmp_path):
    """Reproducer: a 1 KB npz whose .npy header claims (10^12, 72) raised ``_ArrayMemoryError`` ("524 TiB").
    Now the header's shape is checked against the member's size before anything is allocated."""
    import zipfile

    src = tmp_path / "huge.npz"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("poses.npy", npy_member((10**12, 72), b"\0" * 800))
        z.writestr("mocap_framerate.npy", npy_member((), np.float64(120).tobytes()))
    assert src.stat().st_size < 2048
    for cmd in (("score", src), ("convert", src, "--out", tmp_path / "o.npz")):
        r = poseprior(*cmd)
        one_line_error(r, src, "poses.npy", "claims shape (1000000000000, 72)")
        assert "MemoryError" not in r.stderr


def test_case09_malformed_members_are_refused_in_one_line(shared_data, tmp_path):
    """Reproducer: an npz member ``poses.npy`` that is not .npy, or a shared npz with 0-d ``parents`` or 0-d
    ``sequence_names``, raised AttributeError / TypeError (also through ``demo --data``). Now: one line naming
    the file and the member."""
    import zipfile

    junk = tmp_path / "junk.npz"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("poses.npy", b"this is not a numpy array at all, just text" * 4)
    one_line_error(poseprior("score", junk), junk, "poses.npy", "not a .npy array")
    for key, value in (("parents", np.array(3)), ("sequence_names", np.array("seq"))):
        src = small_shared(shared_data, tmp_path / f"zero_d_{key}.npz", **{key: value})
        one_line_error(poseprior("convert", src, "--out", tmp_path / "o.npz"), src, key, "1-d")
        one_line_error(poseprior("demo", "--data", src, "--out", tmp_path / "demo.png"), src, key)


def test_case10_rest_file_that_is_not_a_zip(shared_data, tmp_path):
    """Reproducer: ``convert --rest FILE`` with a FILE that starts like a zip but is not one raised
    ``zipfile.BadZipFile``. Now one line naming the file."""
    rest = tmp_path / "rest.npz"
    rest.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    src = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    one_line_error(poseprior("convert", src, "--rest", rest, "--out", tmp_path / "o.npz"), rest, "not a valid")


def test_case11_absurd_frame_rates_are_refused_when_reading(shared_data, tmp_path):
    """Reproducer: BVH ``Frame Time: 1e-300`` then ``repair`` raised ``OverflowError`` at ``fps ** 2``; a rate
    of 1e20 skipped smoothing silently. Now ``read_bvh`` (and every reader: ``Motion``, npz rates) refuses a rate
    outside ``FPS_RANGE``, and the commands say so in one line."""
    src = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    lines = src.read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time"))
    for ft in ("1e-300", "1e-20"):
        bad = with_line(src, tmp_path / f"ft{ft}.bvh", k, f"Frame Time: {ft}")
        with pytest.raises(FormatError, match="Frame Time .* frame rate of"):
            read_bvh(bad)
        one_line_error(poseprior("repair", bad, "--flagged", "--out", tmp_path / "o.npz"), bad, "Frame Time")
    a = dict(np.load(shared_data / "smpl_reference" / "amass_dev_sample.npz"))
    a["mocap_framerate"] = np.float64(1e20)
    np.savez(tmp_path / "rate.npz", **a)
    one_line_error(poseprior("score", tmp_path / "rate.npz"), "rate.npz", "mocap_framerate")


def test_case12_errors_name_the_file(shared_data, tmp_path):
    """Reproducers: a Daz BVH with all-zero offsets ("the zero pose's hips coincide..." without the file); a
    shared npz with a string ``subject`` ("invalid literal for int()"); an AMASS value of 1e300 given to
    ``score`` ("poses contain NaN or inf", misleading, with about 9 warning lines); training on an AMASS file with
    one value of 1e39 ("training diverged: loss nan at step 0"). Now each is one line naming the file."""
    daz = shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh"
    text = "\n".join("OFFSET 0 0 0" if ln.strip().startswith("OFFSET") else ln for ln in daz.read_text().splitlines())
    (tmp_path / "zero.bvh").write_text(text + "\n")
    one_line_error(poseprior("convert", tmp_path / "zero.bvh", "--out", tmp_path / "o.npz"), "zero.bvh")
    src = small_shared(shared_data, tmp_path / "strsubj.npz", subject=np.full(60, "abc"))
    one_line_error(poseprior("convert", src, "--out", tmp_path / "o.npz"), src, "subject")
    a = dict(np.load(shared_data / "smpl_reference" / "amass_dev_sample.npz"))
    a["poses"] = a["poses"].copy()
    a["poses"][11, 20] = 1e300
    np.savez(tmp_path / "far.npz", **a)
    one_line_error(poseprior("score", tmp_path / "far.npz"), "far.npz", "frame 11", "1e+300")
    a["poses"][11, 20] = 1e39
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
    np.savez(tmp_path / "data" / "train" / "bad.npz", **a)
    shutil.copy(shared_data / "smpl_reference" / "amass_dev_sample.npz", tmp_path / "data" / "val" / "good.npz")
    one_line_error(
        poseprior("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--config", "tiny", "--quiet"),
        "bad.npz",
        "frame 11",
    )


# ---- 13-17: nothing wrong without a word -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prior():
    return PosePrior.load(DEFAULT_MODEL_DIR, intra_op_num_threads=1)


def test_case13_fits_bound_their_weights_and_never_converge_to_inf(prior, shared_data):
    """Reproducer: ``fit.denoise(P, x, weight=1e39)``, ``lam=1e39``, ``smooth=1e39``, ``fixed_weight=1e39``,
    ``ik(sigma=1e-25)``, targets of 1e30, offsets of 1e20 overflowed float32: loss NaN/inf with ``converged=True``
    and the poses unchanged. Now each is refused (``MAX_WEIGHT``, ``MAX_POSITION_M``, ``MAX_OFFSET_M``; the temporal
    ``smooth`` weight now lives in ``takes.repair``, bounded the same), and a fit whose loss is not finite never
    reports ``converged``."""
    from runtime import fit, takes
    from runtime.convert import load_rest_joints

    x = prior.sample(4, seed=1)
    rest = load_rest_joints()
    offsets = rest - rest[np.maximum(np.array(fit.rotations.PARENTS), 0)]
    offsets[0] = 0
    calls = {
        "weight": lambda: fit.denoise(prior, x, weight=1e39),
        "lam": lambda: fit.denoise(prior, x, lam=1e39),
        "fixed_weight": lambda: fit.complete(prior, x, ["head"], space="latent", fixed_weight=1e39),
        "sigma": lambda: fit.ik(prior, np.zeros((4, 1, 3)), ["head"], offsets, sigma=1e-25),
        "targets": lambda: fit.ik(prior, np.full((4, 1, 3), 1e30), ["head"], offsets),
        "offsets": lambda: fit.ik(prior, np.zeros((4, 1, 3)), ["head"], offsets * 1e20),
        "smooth": lambda: takes.repair(prior, take, joints=["head"], smooth=1e39),
    }
    take = takes.read_take(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", fps=30)
    for name, call in calls.items():
        with pytest.raises(ValueError, match=name):
            call()
    ok = fit.denoise(prior, x, weight=1e8, iters=2)  # the bound itself is accepted, and finite
    assert np.isfinite(ok.loss).all()

    def infinite(p, rows):
        return np.full(len(rows), np.inf, np.float32), np.zeros_like(p)

    r = fit.fit(prior, x, infinite, iters=3)
    assert not np.isfinite(r.loss).any() and not r.converged.any()


def test_case14_absurd_thread_counts_are_refused(prior):
    """Reproducer: ``PosePrior.load(intra_op_num_threads=1000)`` on 2 cores had not loaded after 120 s, and 100000
    reached 4.7 GB RSS. Now more than ``THREADS_PER_CORE_MAX`` per usable core is refused at once, with a message."""
    from runtime.prior import THREADS_PER_CORE_MAX, usable_cores

    for n in (1000, 100000, THREADS_PER_CORE_MAX * usable_cores() + 1):
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="usable cores"):
            PosePrior.load(intra_op_num_threads=n)
        assert time.monotonic() - t0 < 5
    for n in (-1, 2.5, True):
        with pytest.raises(ValueError, match="intra_op_num_threads"):
            PosePrior.load(intra_op_num_threads=n)
    assert PosePrior.load(intra_op_num_threads=usable_cores()).log_prob(prior.sample(2, seed=0)).shape == (2,)


def test_case15_degenerate_rest_skeleton_is_refused(shared_data, tmp_path):
    """Reproducer: ``convert --rest R.npz`` with 22 joints at one point was accepted and the conversion differed
    by up to 0.52 rad without a word. Now rest skeletons with a bone under ``MIN_BONE_M`` are refused."""
    from runtime.convert import MIN_BONE_M, check_rest_joints, load_rest_joints

    np.savez(tmp_path / "point.npz", rest_joints=np.zeros((22, 3)))
    src = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    one_line_error(
        poseprior("convert", src, "--rest", tmp_path / "point.npz", "--out", tmp_path / "o.npz"), "point.npz", "bone"
    )
    rest = load_rest_joints()
    rest[18] = rest[16] + MIN_BONE_M / 2  # left elbow onto the left shoulder
    with pytest.raises(FormatError, match="left_shoulder -> left_elbow"):
        check_rest_joints(rest, "given")
    assert not (tmp_path / "o.npz").exists()


def test_case16_amc_radians_header_is_honoured(shared_data, tmp_path):
    """Reproducer: an AMC with ``:RADIANS`` was read as degrees (output byte-identical to ``:DEGREES``). Now the
    header is honoured: the take in radians reads as the same motion as in degrees, and the degree values under a
    ``:RADIANS`` header read differently."""
    from runtime.formats import read_amc

    d = shared_data / "cmu_extra" / "asf_amc"
    lines = (d / "35_01.amc").read_text().splitlines()
    out = []
    for ln in lines:
        tok = ln.split()
        if ln.strip().upper() == ":DEGREES":
            out.append(":RADIANS")
        elif len(tok) > 1 and not tok[0].startswith(("#", ":")):
            vals = [float(v) for v in tok[1:]]
            start = 3 if tok[0] == "root" else 0  # root: TX TY TZ, then rotations
            vals = vals[:start] + [float(np.radians(v)) for v in vals[start:]]
            out.append(" ".join([tok[0]] + [repr(v) for v in vals]))
        else:
            out.append(ln)
    (tmp_path / "rad.amc").write_text("\n".join(out) + "\n")
    (tmp_path / "deg_as_rad.amc").write_text(
        "\n".join(":RADIANS" if ln.strip() == ":DEGREES" else ln for ln in lines) + "\n"
    )
    deg = read_amc(d / "35_01.amc", d / "35.asf")
    rad = read_amc(tmp_path / "rad.amc", d / "35.asf")
    wrong = read_amc(tmp_path / "deg_as_rad.amc", d / "35.asf")
    np.testing.assert_allclose(rad.rotations, deg.rotations, atol=1e-9)
    assert np.abs(wrong.rotations - deg.rotations).max() > 0.5


def mirrored_bvh(src: Path, dst: Path) -> Path:
    """``src`` reflected through the YZ plane (X -> -X): offsets' X and Xposition negated, Y and Z rotations
    negated (``S R_y(a) S = R_y(-a)`` for ``S = diag(-1, 1, 1)``); the joint names are kept."""
    lines = src.read_text().splitlines()
    start = bvh_motion_start(lines)
    chans = [c for ln in lines[:start] if ln.strip().startswith("CHANNELS") for c in ln.split()[2:]]
    flip = np.array([-1.0 if c in ("Xposition", "Yrotation", "Zrotation") else 1.0 for c in chans])
    out = []
    for ln in lines[:start]:
        tok = ln.split()
        if tok[:1] == ["OFFSET"]:
            ln = f"OFFSET {-float(tok[1])!r} {tok[2]} {tok[3]}"
        out.append(ln)
    for ln in lines[start:]:
        out.append(" ".join(f"{v:.6f}" for v in np.array(ln.split(), float) * flip))
    dst.write_text("\n".join(out) + "\n")
    return dst


def test_case17_smaller_silent_ones(shared_data, tmp_path, prior):
    """Reproducers: ``--skeleton`` was ignored for a BVH, even a missing file; ``fit.ik(joints="head")`` iterated
    over the characters; a data folder with both ``train.npz`` and ``train/`` used one silently; float16 input
    printed "overflow encountered in cast"; ``rotations.matrix_to_axis_angle`` gave 0 for a reflection; a mirrored
    (X-flipped) BVH rig converted without a word and scored about -118. Now each is refused or works."""
    import warnings

    from runtime import fit, rotations

    bvh = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    asf = shared_data / "cmu_extra" / "asf_amc" / "35.asf"
    one_line_error(
        poseprior("convert", bvh, "--skeleton", tmp_path / "none.asf", "--out", tmp_path / "o.npz"),
        "--skeleton",
        "not an .amc",
    )
    one_line_error(poseprior("score", bvh, "--skeleton", asf), "--skeleton", "not an .amc")
    one_line_error(
        poseprior(
            "convert",
            shared_data / "cmu_extra" / "asf_amc" / "35_01.amc",
            "--skeleton",
            tmp_path / "none.asf",
            "--out",
            tmp_path / "o.npz",
        ),
        "none.asf",
        "not found",
    )
    # one joint name alone
    from runtime.convert import load_rest_joints

    rest = load_rest_joints()
    off = rest - rest[np.maximum(np.array(rotations.PARENTS), 0)]
    off[0] = 0
    t = np.array([[[0.0, 0.6, 0.05]]])
    a, b = fit.ik(prior, t, "head", off, iters=3), fit.ik(prior, t, ["head"], off, iters=3)
    np.testing.assert_array_equal(a.poses, b.poses)
    x = prior.sample(2, seed=3)
    c, d = fit.complete(prior, x, "left_elbow", iters=3), fit.complete(prior, x, ["left_elbow"], iters=3)
    np.testing.assert_array_equal(c.poses, d.poses)
    # a data folder with both forms of a split
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    shutil.copy(shared_data / "cmu_pose" / "val.npz", data / "train.npz")
    shutil.copy(shared_data / "cmu_pose" / "val.npz", data / "val.npz")
    shutil.copy(shared_data / "smpl_reference" / "amass_dev_sample.npz", data / "train" / "a.npz")
    one_line_error(
        poseprior("train", "--data", data, "--out", tmp_path / "run", "--config", "tiny", "--quiet"),
        "both train.npz and a folder train/",
    )
    # float16 input: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lp16 = prior.log_prob(x.astype(np.float16))
        fit.denoise(prior, x.astype(np.float16), iters=1)
    assert np.isfinite(lp16).all()
    # reflections and non-rotations have no rotation vector
    for M in (np.diag([-1.0, 1.0, 1.0]), 2 * np.eye(3), np.zeros((3, 3))):
        with pytest.raises(ValueError, match="not a rotation"):
            rotations.matrix_to_axis_angle(np.stack([np.eye(3), M]))
    # a mirrored rig
    m = mirrored_bvh(bvh, tmp_path / "mirrored.bvh")
    assert np.allclose(read_bvh(m).rest_positions()[:, 0], -read_bvh(bvh).rest_positions()[:, 0])
    one_line_error(poseprior("convert", m, "--out", tmp_path / "o.npz"), "mirrored.bvh", "mirrored")
    one_line_error(poseprior("score", m), "mirrored.bvh", "mirrored")


# ---- 18: memory --------------------------------------------------------------------------------------------------
def test_case18_chunked_paths_equal_one_piece(shared_data, prior, monkeypatch):
    """Reproducer: ``repair --flagged`` peaked at 0.67 / 1.41 / 3.4 GB with 300 / 1,200 / 4,000 flagged frames
    (``takes.worst_joints`` in one batch); ``score`` on a 400k-frame AMASS file at 3.0 GB (the 6D conversion in one
    piece); a BVH read at about 16x the file's size. Now all three run in blocks (``WORST_JOINTS_POSES``,
    ``BODY_6D_FRAMES``, ``bvh.BLOCK_FRAMES`` / ``motion.CHECK_FRAMES``); the peaks measured after the fix are in
    the report (``/usr/bin/time -v``). Here: the blocked results equal the one-piece ones exactly."""
    from runtime import rotations, takes
    from runtime.formats import bvh, motion

    src = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh"
    whole = read_bvh(src)
    monkeypatch.setattr(bvh, "BLOCK_FRAMES", 7)
    monkeypatch.setattr(motion, "CHECK_FRAMES", 5)
    blocked = read_bvh(src)
    np.testing.assert_array_equal(blocked.rotations, whole.rotations)
    np.testing.assert_array_equal(blocked.trans, whole.trans)
    tk = takes.read_take(src)
    one = rotations.axis_angle_to_6d(tk.poses[:, 3:66].reshape(-1, 21, 3)).astype(np.float32)
    monkeypatch.setattr(takes, "BODY_6D_FRAMES", 13)
    np.testing.assert_array_equal(tk.body_6d, one)
    x = one[100:105]
    full = takes.worst_joints(prior, x, 2)
    monkeypatch.setattr(takes, "WORST_JOINTS_POSES", 2)
    np.testing.assert_array_equal(takes.worst_joints(prior, x, 2), full)


def test_partial_files_are_named_and_recognised(tmp_path):
    """``runtime.atomic``: the partial file of a path keeps its suffix, is hidden, and ``is_partial`` tells it (and
    only it) apart from the files a run directory holds, so a resume can ignore what a killed write left."""
    from runtime.atomic import atomic_write_text, is_partial, partial_path

    for name in ("config.json", "best.pt", "metrics.jsonl", "a.b.npz", "noext"):
        p = partial_path(tmp_path / name, pid=4242)
        assert p.name == f".{name}.partial-4242{Path(name).suffix}" and is_partial(p), p
    for name in ("config.json", ".config.json", ".x.partial-12.npz.bak", ".partial-1", "a.partial-1.json"):
        assert not is_partial(tmp_path / name), name
    out = atomic_write_text(tmp_path / "t.json", "{}\n")
    assert out.read_text() == "{}\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
