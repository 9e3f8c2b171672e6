"""The Colab notebooks run top to bottom on CPU, shrunk by LAPSEG_CI=1.

Each runs in a fresh kernel of this interpreter (nbclient's 'python3' kernel spec is
ipykernel's native one, which jupyter_client launches with `sys.executable`; the last
check below confirms it) with a temporary working directory, where the notebooks put
their tfds data and work dirs. Deselect locally with `-m "not notebook"`.
"""

import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_all_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_modules_tour.ipynb", "02_bases_and_reconstruction.ipynb",
        "03_train_and_predict.ipynb"]


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} is stored with outputs; clear them before committing")
    monkeypatch.setenv("LAPSEG_CI", "1")
    # One CPU device, as a user's kernel has (tests/conftest.py forces eight).
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("LAPSEG_CAMVID_DIR", raising=False)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(notebook, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.
    assert notebook.cells[-1].outputs[0]["text"].strip() == sys.executable


def test_render_writes_markdown_text_and_pictures(tmp_path):
    """notebooks/render.py's page of an executed notebook: markdown as is, code, what it
    printed, and its figures as PNG files linked from the page."""
    import base64  # pylint: disable=import-outside-toplevel
    import importlib.util  # pylint: disable=import-outside-toplevel
    import io  # pylint: disable=import-outside-toplevel

    import PIL.Image  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("render", NOTEBOOKS[0].parent / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    png = io.BytesIO()
    PIL.Image.new("RGB", (4, 3), (255, 0, 0)).save(png, format="PNG")
    code = nbformat.v4.new_code_cell("print('hi'); plot()")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n"),
                    nbformat.v4.new_output("display_data", data={
                        "image/png": base64.b64encode(png.getvalue()).decode(),
                        "text/plain": "<Figure size 4x3>"})]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), code])
    page = render.render(notebook, "demo", tmp_path, "test settings")
    assert "# Title" in page and "```python\nprint('hi'); plot()\n```" in page
    assert "```text\nhi\n```" in page and "<Figure" not in page
    assert "![cell 1, picture 1](demo/cell1_1.png)" in page
    assert PIL.Image.open(tmp_path / "demo" / "cell1_1.png").size == (4, 3)
