"""Runs the notebooks top to bottom and writes what they show under docs/notebooks/.

    python notebooks/render.py [--quick] [--out docs/notebooks] [NAME.ipynb ...]

For each notebook, `docs/notebooks/<name>.md`: its markdown cells as they are, its code
cells as Python blocks, each followed by what the cell printed (text) and the pictures it
drew (PNG files beside it, `<name>/cell<k>_<j>.png`), so the results read on GitHub or in
any Markdown viewer without a Jupyter kernel. The notebooks in notebooks/ stay stored
without outputs (tests/test_notebooks.py checks it).

Each runs in a fresh kernel of this interpreter with a temporary working directory (where
the notebooks put their data and work dirs), on one CPU device as a Colab CPU runtime
has. `--quick` sets LAPSEG_CI=1, the shrunken settings the tests run with; the header of
each page says which settings made it. Needs the `test` extra (nbclient, nbformat,
ipykernel) and the `notebooks` extra (matplotlib).
"""

import argparse
import base64
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _text(output) -> str | None:
    """What a cell printed: its stream text, or the plain text of a result (not of a
    figure, which is shown as its picture)."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    if "text/plain" in data and "image/png" not in data:
        return data["text/plain"]
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    return None


def render(notebook, name: str, out: pathlib.Path, settings: str) -> str:
    """The Markdown page of an executed `notebook`; its pictures are written to `out/name/`."""
    pictures = out / name
    pictures.mkdir(parents=True, exist_ok=True)
    for old in pictures.glob("*.png"):
        old.unlink()
    lines = ["<!-- Written by `python notebooks/render.py`: do not edit. -->",
             f"# {name}.ipynb, executed", "",
             f"Rendered from [notebooks/{name}.ipynb](../../notebooks/{name}.ipynb) with "
             f"{settings}, on {sys.platform} with Python {sys.version.split()[0]}.", ""]
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            lines += [cell.source, ""]
            continue
        if cell.cell_type != "code":
            continue
        lines += ["```python", cell.source, "```", ""]
        texts = []
        for number, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                path = pictures / f"cell{index}_{number}.png"
                path.write_bytes(base64.b64decode(png))
                lines += [f"![cell {index}, picture {number}]({name}/{path.name})", ""]
            text = _text(output)
            if text and text.strip():
                texts.append(text.rstrip())
        if texts:
            lines += ["```text", "\n".join(texts), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to render (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="LAPSEG_CI=1: the shrunken settings the tests use")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "notebooks")
    args = parser.parse_args(argv)
    try:
        import nbformat  # pylint: disable=import-outside-toplevel
        from nbclient import NotebookClient  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("render.py: needs nbclient and nbformat: pip install -e '.[test,notebooks]'",
              file=sys.stderr)
        return 2
    paths = [NOTEBOOKS / n for n in args.names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"render.py: no notebook {', '.join(missing)}", file=sys.stderr)
        return 2
    os.environ.pop("XLA_FLAGS", None)  # one CPU device, as a user's runtime has
    if args.quick:
        os.environ["LAPSEG_CI"] = "1"
    else:
        os.environ.pop("LAPSEG_CI", None)
    settings = "LAPSEG_CI=1 (the tests' shrunken settings)" if args.quick else "its own settings"
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as workdir:
            NotebookClient(notebook, kernel_name="python3", timeout=1800,
                           resources={"metadata": {"path": workdir}}).execute()
        page = render(notebook, path.stem, args.out, settings)
        (args.out / f"{path.stem}.md").write_text(page, encoding="utf-8")
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> "
              f"{(args.out / path.stem).relative_to(ROOT)}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
