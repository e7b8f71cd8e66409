"""The documentation is true to the checkout: every relative link of README.md and docs/*.md points to a file that
exists (and, for ``file.md#anchor``, to a heading or ``<a id>`` of that file), and the torch-free code blocks of the
README's API tour and of docs/fitting.md run as written on the shipped model (the README's torch block is run by
tests/test_torch_prior.py)."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: pages linked before they land (another branch writes them). Allowed to be missing; once a file exists, its entry
#: must go (test_pending_pages_are_still_pending), so this list cannot hide a broken link for long.
PENDING: set[str] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
ANCHOR_TAG = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (a ``](`` inside code is not a link)."""
    return FENCE.sub("", path.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _prose(path)
    seen: dict[str, int] = {}
    out = set(ANCHOR_TAG.findall(path.read_text()))
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path)) if not re.match(r"[a-z]+:", t)]


def test_pages_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/design.md", "docs/training.md", "docs/takes.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel not in PENDING:
                bad.append(f"{target}: no file {rel}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading or <a id> '{anchor}' in {rel}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_pending_pages_are_still_pending():
    landed = sorted(p for p in PENDING if (ROOT / p).exists())
    assert not landed, f"{landed} exist now: remove them from tests/test_docs.py PENDING"


def test_design_references_point_into_the_repository():
    """Code and docs cite docs/design.md §N; each §N has its anchor there, and nothing cites the outside DESIGN.md."""
    design = anchors(ROOT / "docs" / "design.md")
    cited, outside = set(), []
    for path in [*ROOT.glob("*/**/*.py"), *PAGES]:
        if ".venv" in path.parts or "build" in path.parts or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"\bDESIGN(\.md)? ?§", text) or "shared/DESIGN.md" in text:
            outside.append(path.relative_to(ROOT).as_posix())
        cited |= set(re.findall(r"design\.md,? §(\d[a-z]?)", text))
    assert not outside, f"cite docs/design.md §N, not the DESIGN.md outside the repository: {outside}"
    missing = sorted(s for s in cited if f"s{s}" not in design)
    assert cited and not missing, f"docs/design.md has no anchor for § {missing}"


def _block(path: Path, heading: str) -> str:
    text = path.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_tour_runs(monkeypatch):
    """The README's runtime block runs as written, and the values its print comment shows are the shipped model's."""
    code = _block(ROOT / "README.md", "## A short API tour")
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (API tour)", "exec"), scope)
    prior = scope["prior"]
    shown = re.search(r"print\(prior\.skeleton, prior\.conversion, prior\.threshold\)\s+#\s*(\S+ \S+ \S+):", code)
    assert shown, "the README's print(prior.skeleton, ...) line lost its comment"
    assert out.getvalue().splitlines()[1] == shown.group(1)
    assert scope["poses"].shape == (16, 21, 6) and np.isfinite(scope["log_p"]).all()
    assert scope["grad"].shape == (1, 63) and scope["R"].shape == (16, 21, 3, 3)
    # the block's claim: vjp_z is the latent gradient of |f(z) - poses[0]|^2 / 2 (checked by a central difference)
    z, target = scope["z"], scope["poses"][:1]
    e = np.zeros_like(z)
    e[0, 0] = 1e-2

    def half_sq(zz):
        x, _ = prior.latent_forward(zz.astype(np.float32))
        return 0.5 * float(((x.astype(np.float64) - target) ** 2).sum())

    fd = (half_sq(z + e) - half_sq(z - e)) / 2e-2
    assert fd == pytest.approx(float(scope["vjp_z"][0, 0]), rel=2e-2, abs=1e-3)


def test_fitting_page_runtime_block_runs(shared_data, monkeypatch):
    """docs/fitting.md's numpy block runs as written on a real take: denoising lowers the error, IK from 4 joints beats
    the rest pose, and completion keeps the fixed joints near their values."""
    from runtime import rotations

    code = _block(ROOT / "docs" / "fitting.md", "## Without torch")
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "docs/fitting.md (runtime block)", "exec"), scope)
    err, truth = scope["error"], scope["truth"]
    assert err(scope["denoised"]) < err(scope["noisy"]) - 1.0
    rest = np.broadcast_to(rotations.IDENTITY_6D, truth.shape)
    assert err(scope["solved"]) < err(rest) - 5.0
    fixed = [i for i, j in enumerate(rotations.JOINT_NAMES) if j not in ("left_elbow", "left_wrist")]
    R = rotations.sixd_to_matrix
    assert rotations.geodesic_deg(R(scope["completed"][:, fixed]), R(truth[:, fixed])).max() < 5.0
