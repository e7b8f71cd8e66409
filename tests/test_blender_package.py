"""`poseprior blender-addon` (runtime.blender.package): the extension zip's layout and manifest, and its bad input
refused in one line with exit 2 and nothing left behind. Torch-free and bpy-free; that the zip installs and runs in
real Blender is tests_blender/test_install.py (`make test-blender`)."""

import zipfile

import tomllib
from click.testing import CliRunner

from runtime.blender.package import RUNTIME
from runtime.cli import main as poseprior

ORT = "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl"


def run(*args):
    return CliRunner().invoke(poseprior, ["blender-addon", *map(str, args)])


def refused(r, needle: str):
    assert r.exit_code == 2, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.output, err
    assert needle in err, err


def test_zip_layout(tmp_path):
    out = tmp_path / "poseprior_blender.zip"
    r = run("--out", out)
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
        entry = z.read("__init__.py").decode()
    assert manifest["id"] == "poseprior" and manifest["type"] == "add-on" and manifest["blender_version_min"] == "4.2.0"
    assert "wheels" not in manifest and "platforms" not in manifest  # no wheels: platform-independent
    assert "from .runtime.blender.addon import register, unregister" in entry
    want = {"runtime/blender/addon/__init__.py", "runtime/blender/addon/scene.py", "runtime/convert.py"}
    want |= {f"runtime/models/default/{p.name}" for p in (RUNTIME / "models" / "default").iterdir()}
    assert want <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("runtime/tools/")]


def test_wheels_bundled(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in (
        ORT,
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "flatbuffers-25.12.19-py2.py3-none-any.whl",
    ):
        (wheels / name).write_bytes(b"PK")  # the packer reads wheel names only; test_install installs real ones
    out = tmp_path / "a.zip"
    r = run("--out", out, "--wheels", wheels)
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as z:
        m = tomllib.loads(z.read("blender_manifest.toml").decode())
        names = set(z.namelist())
    assert m["wheels"] == ["./wheels/flatbuffers-25.12.19-py2.py3-none-any.whl", f"./wheels/{ORT}"]  # sorted
    assert m["platforms"] == ["linux-x64"] and not any("numpy" in n for n in names)  # Blender's own numpy


def test_bad_input(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    existing = tmp_path / "mine.zip"
    existing.write_bytes(b"the user's")
    refused(run("--out", tmp_path / "a.tar"), "must end in .zip")
    refused(run("--out", tmp_path / "nowhere" / "a.zip"), "does not exist")
    refused(run("--out", existing), "exists")
    assert existing.read_bytes() == b"the user's"
    refused(run("--out", tmp_path / "a.zip", "--wheels", tmp_path / "none"), "not a folder")
    refused(run("--out", tmp_path / "a.zip", "--wheels", wheels), "no wheel of onnxruntime")
    (wheels / ORT.replace("cp311-cp311", "cp312-cp312")).write_bytes(b"PK")
    refused(run("--out", tmp_path / "a.zip", "--wheels", wheels), "not Blender's Python (cp311)")
    (wheels / ORT.replace("cp311-cp311", "cp312-cp312")).unlink()
    (wheels / "junk.whl").write_bytes(b"PK")
    refused(run("--out", tmp_path / "a.zip", "--wheels", wheels), "not a wheel file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.zip", "wheels"]  # nothing left behind
