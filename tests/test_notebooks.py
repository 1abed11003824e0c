"""Run every notebook in notebooks/ top to bottom, and check the stored notebooks are clean.

The kernel is this test process's own interpreter (`sys.executable`, e.g. `.venv/bin/python`): a
kernel spec written to a temporary folder names it by absolute path, so a `python3` kernel spec
elsewhere on the machine (another environment's) cannot be picked up by mistake, and
`test_kernel_runs_this_interpreter` checks it. Kernels get `MPLBACKEND=Agg` (no windows, no
inline images); TensorFlow's log level is kerasbp's own default, set by `import kerasbp`. No test
measures time: a cell that hangs fails at `CELL_TIMEOUT_S` (each notebook is meant to run in
under 60 s on two CPU cores; `benchmarks/` is where speed is measured).
"""

import ast
import glob
import json
import os
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
EXPECTED = [
    "01_backprop_from_scratch.ipynb",
    "02_linear_regression.ipynb",
    "03_where_backprop_happens.ipynb",
    "04_optimizers.ipynb",
    "05_softmax_and_batchnorm.ipynb",
    "06_noise_and_curvature.ipynb",
]
KERNEL_NAME = "kerasbp-test-python"
CELL_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def jupyter_dir(tmp_path_factory):
    """A Jupyter data folder holding one kernel spec that launches ipykernel with this very interpreter."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.prefix})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return str(folder)


@pytest.fixture
def run_notebook(jupyter_dir, monkeypatch):
    """`run(nb, cwd)`: execute `nb` in place with a fresh kernel of this interpreter, shut it down,
    and raise `CellExecutionError` at the first error."""
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", jupyter_dir)  # searched first for kernel specs

    def run(nb, cwd):
        client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S, startup_timeout=120, allow_errors=False)
        env = dict(os.environ, MPLBACKEND="Agg")
        client.execute(cwd=cwd, env=env)
        return nb

    return run


def test_notebooks_are_all_there():
    assert [os.path.basename(p) for p in NOTEBOOKS] == EXPECTED


def test_kernel_runs_this_interpreter(run_notebook, tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\nprint(sys.prefix)\nprint(os.environ['MPLBACKEND'])")]
    )
    run_notebook(nb, str(tmp_path))
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    executable, prefix, env = text.strip().splitlines()
    assert executable == sys.executable
    assert prefix == sys.prefix
    assert env == "Agg"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, run_notebook):
    nb = nbformat.read(path, as_version=4)
    run_notebook(nb, NOTEBOOK_DIR)  # raises at the first error, or at a cell running past CELL_TIMEOUT_S
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_stored_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} of {os.path.basename(path)} has stored outputs"
        assert cell.execution_count is None, f"code cell {i} of {os.path.basename(path)} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_imports_kerasbp_and_redefines_none_of_it(path):
    import kerasbp
    import kerasbp.plotting
    import kerasbp.reference

    public = set(kerasbp.__all__) | set(kerasbp.reference.__all__) | set(kerasbp.plotting.__all__)
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    tree = ast.parse(source)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & public, f"{os.path.basename(path)} redefines {sorted(defined & public)} from kerasbp"
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "kerasbp" in imported
