"""Every Python snippet in README.md runs as written.

The snippets are extracted from the ```python blocks and executed in order, each in a fresh
namespace (so each carries its own imports), in one subprocess whose working directory is a
temporary folder (snippets may write `workdir/...`, `basis.npz`) and whose tfds data dir is
a temporary one. The README keeps them at tiny sizes.
"""

import os
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

RUNNER = r'''
import json, sys, traceback
snippets = json.load(open(sys.argv[1]))
for index, code in enumerate(snippets):
    try:
        exec(compile(code, f"README snippet {index}", "exec"), {"__name__": "__readme__"})
    except Exception:
        print(f"README snippet {index} failed:\n{code}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
print(f"{len(snippets)} snippets ran")
'''


def snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_snippets():
    assert len(snippets()) >= 8


def test_every_python_snippet_runs(tmp_path):
    import json  # pylint: disable=import-outside-toplevel

    (tmp_path / "snippets.json").write_text(json.dumps(snippets()))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds"),
           "PYTHONPATH": str(README.parent)}
    result = subprocess.run([sys.executable, "runner.py", "snippets.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    assert f"{len(snippets())} snippets ran" in result.stdout
