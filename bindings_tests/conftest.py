"""Fixtures for the C/C++ consumer tests.

The model fixtures (`shared_data`, `tiny_run`, `tiny_model`) live in the repository-level conftest.py.
"""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bare `pytest` does not put the repository on sys.path (`python -m pytest` does); ppbin.py lives here
for _path in (ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PARITY_ROWS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def parity_rows(request) -> list:
    """Rows (program, batch, quantity, max error, bound) for the table printed at the end of the session."""
    return request.config.stash.setdefault(PARITY_ROWS, [])


def pytest_terminal_summary(terminalreporter, config):
    rows = config.stash.get(PARITY_ROWS, [])
    if not rows:
        return
    batches = sorted({row[2] for row in rows})
    table: dict[tuple, dict] = {}  # (program, reference, output) -> {batch: (error, bound)}
    for program, ref, batch, name, err, bound in rows:
        table.setdefault((program, ref, name), {})[batch] = (err, bound)
    tr = terminalreporter
    tr.section("C/C++ consumers vs Python: max |error| (gradient: relative to max|g|)")
    tr.write_line(
        f"{'program':16s} {'reference':19s} {'output':28s}"
        + "".join(f"{f'B={b}':>10s}" for b in batches)
        + f"{'bound':>8s}"
    )
    for (program, ref, name), cells in table.items():
        bound = max(bound for _, bound in cells.values())
        errs = "".join(f"{cells[b][0]:10.1e}" if b in cells else f"{'-':>10s}" for b in batches)
        flag = "  FAIL" if any(err > bnd for err, bnd in cells.values()) else ""
        tr.write_line(f"{program:16s} {ref:19s} {name:28s}{errs}{bound:8.0e}{flag}")
