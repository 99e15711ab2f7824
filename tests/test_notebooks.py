"""notebooks/*.ipynb run top to bottom (nbclient, a fresh Jupyter kernel each) with small settings, on brivl-lite."""
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = {"BRIVL_NB_MODEL": "brivl-lite", "BRIVL_NB_STEPS": "3", "BRIVL_NB_SIZE": "64", "BRIVL_NB_PHRASES": "300",
         "BRIVL_NB_LAYOUT": "pca", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_neurons.ipynb", "02_imagine.ipynb", "03_phrases.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in {**SMALL, "BRIVL_ROOT": str(ROOT), "BRIVL_CACHE": str(tmp_path / "cache"),
                       "MPLBACKEND": "module://matplotlib_inline.backend_inline"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell on any failure
    seconds = time.perf_counter() - t0
    print(f"\n{path.name}: {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no picture"
