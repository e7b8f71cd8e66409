"""The Blender extension zip (``poseprior blender-addon --out poseprior_blender.zip``), numpy- and bpy-free.

Layout of the zip (a Blender 4.2+ extension, ``bpy.ops.extensions.package_install_files`` or Get Extensions >
Install from Disk)::

    blender_manifest.toml   this folder's template with ``version`` and, with wheels, ``wheels`` / ``platforms``
    __init__.py             the extension's entry: ``register`` / ``unregister`` of ``runtime.blender.addon``
    _missing.py             registered instead when onnxruntime is missing: it says how to install it, one line
    runtime/...             the torch-free runtime package (its .py files and the shipped model, models/default)
    wheels/*.whl            only with ``wheels=``: installed by Blender into the extension's own site-packages

The add-on's own modules import the runtime relatively, so the copy inside the extension
(``bl_ext.<repo>.poseprior.runtime``) is the one it runs, whatever else Blender's Python has installed.

Dependencies: the runtime needs numpy (Blender has its own) and onnxruntime (Blender does not). ``wheels`` names a
folder of wheels for Blender's Python (3.11 for Blender 4.2-4.5), e.g. made offline-ready by
``pip download onnxruntime --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 -d DIR``;
every ``*.whl`` in it is bundled except numpy's (Blender's numpy is used; a second copy is refused by Blender's
extension policy), and the manifest's ``platforms`` are those the binary wheels are built for. Without ``wheels``
the zip is platform-independent and onnxruntime must be installed into Blender's Python once (docs/blender.md).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ..atomic import atomic_write

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent
MANIFEST = HERE / "blender_manifest.toml"
#: what the runtime needs at run time that Blender does not have (checked in ``wheels=``): module -> the
#: distributions that provide it
NEEDS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}
#: Blender's bundled Python for the Blender versions the manifest allows
PYTHON_TAG = "cp311"
_PLATFORMS = (
    (re.compile(r"manylinux.*_x86_64|linux_x86_64"), "linux-x64"),
    (re.compile(r"manylinux.*_aarch64|linux_aarch64"), "linux-arm64"),
    (re.compile(r"macosx_.*_(arm64|universal2)"), "macos-arm64"),
    (re.compile(r"macosx_.*_(x86_64|universal2)"), "macos-x64"),
    (re.compile(r"win_amd64"), "windows-x64"),
    (re.compile(r"win_arm64"), "windows-arm64"),
)

ENTRY = '''"""PosePrior extension entry (written by ``poseprior blender-addon``): the add-on is runtime/blender/addon; without
onnxruntime in Blender's Python, ``_missing`` instead (it says how to install it, in one line)."""

import importlib.util

if importlib.util.find_spec("onnxruntime") is None:
    from ._missing import register, unregister
else:
    from .runtime.blender.addon import register, unregister

__all__ = ["register", "unregister"]
'''
#: one line: what the extension says when onnxruntime is missing (console, preferences, sidebar, each operator)
MISSING_MESSAGE = (
    "PosePrior needs onnxruntime in Blender's Python: install the extension built with --wheels, or run "
    "BLENDER_PYTHON -m pip install --no-index --find-links WHEEL_FOLDER onnxruntime (docs/blender.md)"
)
MISSING = f'''"""The PosePrior extension without onnxruntime: its preferences, sidebar panel and operators say how to install
it (one line), instead of Blender's traceback of a failed import."""

import bpy

MESSAGE = {MISSING_MESSAGE!r}


class PosePriorPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    def draw(self, context):
        self.layout.label(text=MESSAGE, icon="ERROR")


def _op(idname, label):
    def execute(self, context):
        self.report({{"ERROR"}}, MESSAGE)
        return {{"CANCELLED"}}

    name = "POSEPRIOR_OT_" + idname.split(".")[1]
    return type(name, (bpy.types.Operator,), {{"bl_idname": idname, "bl_label": label, "execute": execute}})


class POSEPRIOR_PT_panel(bpy.types.Panel):
    bl_label = "PosePrior"
    bl_idname = "POSEPRIOR_PT_panel"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PosePrior"

    def draw(self, context):
        self.layout.label(text="onnxruntime is missing (see the add-on preferences)", icon="ERROR")


CLASSES = (
    PosePriorPreferences,
    POSEPRIOR_PT_panel,
    _op("poseprior.score", "Score poses"),
    _op("poseprior.repair", "Repair poses"),
    _op("poseprior.complete", "Complete selected bones"),
)


def register():
    print(MESSAGE)
    for c in CLASSES:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
'''


class PackageError(ValueError):
    """Bad input to ``build``: one line naming the file or folder."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("poseprior")
    except PackageNotFoundError:  # a checkout used without installing: pyproject.toml's
        text = (RUNTIME.parent / "pyproject.toml").read_text()
        return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def wheel_tags(name: str) -> tuple[str, str, str, str]:
    """(distribution, python tag, abi tag, platform tag) of a wheel file name (PEP 427)."""
    parts = name[: -len(".whl")].split("-")
    if not name.endswith(".whl") or len(parts) not in (5, 6):
        raise PackageError(f"{name}: not a wheel file name (name-version-python-abi-platform.whl)")
    return parts[0].lower().replace("_", "-"), parts[-3], parts[-2], parts[-1]


def _wheels(folder: Path) -> tuple[list[Path], list[str]]:
    """(the wheels to bundle, their platforms) of ``folder``; PackageError on anything Blender's Python cannot use."""
    if not folder.is_dir():
        raise PackageError(f"--wheels {folder}: not a folder")
    found = sorted(folder.glob("*.whl"))
    keep, platforms = [], set()
    for w in found:
        dist, py, abi, plat = wheel_tags(w.name)
        if dist == "numpy":
            continue
        pys = py.split(".")
        if not any(p in (PYTHON_TAG, "py3", "py311") or (abi == "abi3" and p.startswith("cp3")) for p in pys):
            raise PackageError(f"--wheels {w}: built for {py}, not Blender's Python ({PYTHON_TAG})")
        if plat != "any":
            kinds = {k for rx, k in _PLATFORMS if rx.search(plat)}
            if not kinds:
                raise PackageError(f"--wheels {w}: platform {plat} is not one Blender extensions support")
            platforms |= kinds
        keep.append(w)
    have = {wheel_tags(w.name)[0] for w in keep}
    missing = [n for n, dists in NEEDS.items() if not have & set(dists)]
    if missing:
        raise PackageError(f"--wheels {folder}: no wheel of {', '.join(missing)} in it (found {len(found)} wheels)")
    return keep, sorted(platforms)


def _toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def manifest_text(version: str, wheels=(), platforms=()) -> str:
    """The template ``blender_manifest.toml`` with ``version`` and (when given) ``wheels`` and ``platforms``."""
    text = MANIFEST.read_text().replace('version = "0.0.0"', f'version = "{version}"')
    extra = ""
    if wheels:
        extra += f"wheels = {_toml_list(f'./wheels/{w}' for w in wheels)}\n"
    if platforms:
        extra += f"platforms = {_toml_list(platforms)}\n"
    head, tables = text.split("\n[permissions]", 1)  # top-level keys go before the first table
    return head + extra + "\n[permissions]" + tables


def _runtime_files() -> list[Path]:
    """The runtime package's files for the extension: sources and the shipped model, no caches."""
    out = []
    for p in sorted(RUNTIME.rglob("*")):
        rel = p.relative_to(RUNTIME)
        if p.is_dir() or "__pycache__" in rel.parts or p.suffix in (".pyc", ".pyo") or rel.name.startswith("."):
            continue
        if rel.parts[0] == "tools":  # the checkout's tools, not part of the installed package either
            continue
        if rel.parts[0] == "models" and (len(rel.parts) < 3 or rel.parts[1] != "default"):
            continue
        out.append(p)
    return out


def build(out: str | Path, wheels: str | Path | None = None) -> dict:
    """Write the extension zip to ``out`` (module docstring); returns a summary (``path``, ``version``, ``files``,
    ``wheels``, ``platforms``, ``bytes``). ``PackageError`` on bad input; nothing is written then (the zip is
    written beside ``out`` and renamed into place)."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise PackageError(f"--out {out}: must end in .zip (Blender installs extensions from .zip files)")
    if out.exists():
        raise PackageError(f"--out {out}: exists; remove it or choose another name")
    if not out.parent.is_dir():
        raise PackageError(f"--out {out}: folder {out.parent} does not exist")
    keep, platforms = _wheels(Path(wheels)) if wheels is not None else ([], [])
    version = _version()
    files = _runtime_files()
    manifest = manifest_text(version, [w.name for w in keep], platforms)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("blender_manifest.toml", manifest)
            z.writestr("__init__.py", ENTRY)
            z.writestr("_missing.py", MISSING)
            for p in files:
                z.write(p, "runtime/" + p.relative_to(RUNTIME).as_posix())
            for w in keep:
                z.write(w, "wheels/" + w.name, compress_type=zipfile.ZIP_STORED)

    atomic_write(out, write)
    return {
        "path": str(out),
        "version": version,
        "files": len(files) + 3 + len(keep),
        "wheels": [w.name for w in keep],
        "platforms": platforms,
        "bytes": out.stat().st_size,
    }
