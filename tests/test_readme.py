"""Every Python snippet in README.md and docs/*.md runs as written.

The snippets are the ```python blocks of each file. They run in one subprocess, file by
file (README.md first), each file's in order and each snippet in a fresh namespace (so each
carries its own imports). Each file gets a temporary working directory of its own, so a
snippet may use what an earlier snippet of the same file wrote there (`workdir/tiny`,
`fcn8s.jaxexport`) but nothing of another file's; the tfds data dir is a temporary one. The
documents keep the snippets at tiny sizes; a block that cannot run offline in seconds is
not tagged `python` (```text, ```bash or an indented block instead).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
FIRST_SCREEN_LINES = 40  # what a reader sees before scrolling

# One process for every file: the files share imports and JAX's compilation caches. The
# PRNG implementation is set as tests/conftest.py sets it (init compiles several times
# faster on CPU); no snippet depends on the generator's values.
RUNNER = r'''
import json, os, sys, traceback
import jax
jax.config.update("jax_default_prng_impl", "rbg")
count = 0
for name, snippets in json.load(open(sys.argv[1])):
    folder = name.removesuffix(".md").replace("/", "_")  # README, docs_training, ...
    os.makedirs(folder)
    os.chdir(folder)
    for index, code in enumerate(snippets):
        try:
            exec(compile(code, f"{name} snippet {index}", "exec"), {"__name__": "__snippet__"})
        except Exception:
            print(f"{name} snippet {index} failed:\n{code}", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        count += 1
    os.chdir(sys.argv[2])
print(f"{count} snippets ran")
'''


def snippets(path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def name(path):
    return path.relative_to(ROOT).as_posix()


def test_readme_is_short_and_starts_with_the_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    first_screen = "\n".join(lines[:FIRST_SCREEN_LINES])
    assert "pip install -e . && lapseg train" in first_screen
    assert 'pip install -e ".[test]" && python -m pytest -n 2 tests' in first_screen
    assert "```python\n" in first_screen


def test_readme_and_docs_have_snippets():
    assert len(snippets(README)) >= 5
    for doc in ("training", "data", "serving"):
        assert snippets(ROOT / "docs" / f"{doc}.md"), doc


def test_every_python_snippet_runs(tmp_path):
    files = [(name(path), snippets(path)) for path in DOCUMENTS if snippets(path)]
    (tmp_path / "snippets.json").write_text(json.dumps(files))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "runner.py", "snippets.json", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    assert f"{sum(len(code) for _, code in files)} snippets ran" in result.stdout
