"""Claims about tutorials/: every notebook runs from a clean kernel, top to bottom, without an
error, and prints what its committed outputs say.

Each notebook ends its sections with assertion cells that check the project's code against the
paper's equation computed another way (eq. 4 term by term, the 70x70 receptive field measured by
gradients, the boundary map by a loop over pixels, ...), so a notebook that runs is a notebook whose
claims hold. They are executed with jupyter's own machinery (nbclient), in memory: the committed
files, with their outputs, are not rewritten. The kernel runs with the notebooks' folder as its
working directory, as when a reader opens them, and with one PyTorch thread: the tensors are tiny,
and on a shared 2-core machine a second thread waits more than it works. All six take a few
minutes on 2 CPU cores.

The committed outputs are what a fresh clone prints: the notebooks read only the synthetic city,
rendered from its seed, and print no path, timing or version of the machine that ran them. So the
text of a fresh run equals the committed text, up to the digits (the last digits of floating-point
numbers can differ between processors), and no committed output names a folder of that machine.
"""

import copy
import re
import sys
import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
EXPECTED = ["01_coarse_to_fine_generator", "02_multiscale_discriminators", "03_objective",
            "04_instance_boundaries", "05_feature_embedding_and_kmeans", "06_train_a_small_model",
            "07_evaluation"]


def text_outputs(nb):
    """Per code cell: its stdout, its stderr (each joined over the cell's stream outputs, which
    the kernel may split anywhere) and the text/plain of its results and displays."""
    cells = []
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        streams = {"stdout": "", "stderr": ""}
        plain = []
        for o in cell.outputs:
            if o.output_type == "stream":
                streams[o.name] += o.text
            elif "text/plain" in o.get("data", {}):
                plain.append(o["data"]["text/plain"])
            elif o.output_type == "error":
                plain.append("\n".join(o.traceback))
        cells.append([streams["stdout"], streams["stderr"], *plain])
    return cells


def mask_digits(cells):
    """Every number (sign, decimals and exponent included) becomes 0: a processor's rounding may
    turn 0.000 into -0.000 or 1e-05 into 2e-05, not a word."""
    number = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
    return [[re.sub(number, "0", text) for text in cell] for cell in cells]


def test_there_is_one_notebook_per_part_of_the_paper():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_its_outputs(path):
    """Readers on GitHub see the figures without running anything."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), \
        "execute the notebook before committing"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert path.stat().st_size < 1_000_000, "keep each notebook under 1 MB: smaller figures or dpi"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_committed_output_names_a_folder_of_the_machine_that_ran_it(path):
    """Outputs are read on GitHub, on other machines: no absolute, home or temporary path."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(t for cell in text_outputs(nb) for t in cell)
    text += "\n".join(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
                      if "text/html" in o.get("data", {}))
    machine = [str(TUTORIALS.parent), tempfile.gettempdir(), "/tmp", "/var/folders", "pytest-of",
               "/home/", "/root/", "/Users/", "C:\\"]
    if len(Path.home().parts) > 1:   # a home folder of "/" would match every path
        machine.append(str(Path.home()))
    assert not [m for m in machine if m in text]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_a_clean_kernel(path, monkeypatch, tmp_path):
    # Inherited by the kernel process: one PyTorch thread, and the temporary folders in which the
    # notebooks write their datasets and checkpoints inside pytest's own, which it cleans up.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    committed = text_outputs(copy.deepcopy(nb))
    # One more cell, in memory only: which Python ran the notebook.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    before = sorted(p.name for p in TUTORIALS.iterdir())
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError, with the failing cell and traceback, on an error
    # 'python3' must have started this interpreter (the one with the project's packages), not
    # another Python found on the PATH.
    prefix = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    # Notebooks write only to temporary folders, never into the repository.
    assert sorted(p.name for p in TUTORIALS.iterdir()) == before
    if path.stem.startswith(("05", "06", "07")):
        assert any(tmp_path.iterdir()), "the training notebooks should write under TMPDIR"
    # A fresh run prints what the committed notebook shows, up to the digits.
    fresh = text_outputs(nb)[:-1]
    assert len(fresh) == len(committed)
    for i, (ours, theirs) in enumerate(zip(mask_digits(fresh), mask_digits(committed))):
        assert ours == theirs, f"code cell {i} prints other text than committed: re-execute it"
