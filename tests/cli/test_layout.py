"""Where command-line code may live, and the import graph of lapseg.

Argument parsing (argparse, absl flag definitions, ml_collections config flags,
`app.run`) lives only in `lapseg/cli/`; no other lapseg module imports `lapseg.cli`; and
no lapseg modules import each other in a circle (counting imports inside functions too).
"""

import ast
import pathlib

import lapseg

ROOT = pathlib.Path(lapseg.__file__).resolve().parent
FORBIDDEN_MODULES = ("argparse", "absl.app", "ml_collections.config_flags")


def _modules():
    """Module name -> path, for every lapseg module."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _import_statements(name, path):
    """`(module, imported names)` of every import in the file, inside functions too
    (`import a.b`: `('a.b', ())`; `from a import b, c`: `('a', ('b', 'c'))`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module
            if node.level:  # relative import
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(parts + ([node.module] if node.module else []))
            yield module, tuple(alias.name for alias in node.names)


def _imports(name, path):
    """Every module a file names in an import: `from a import b` gives 'a' and 'a.b'."""
    for module, names in _import_statements(name, path):
        yield module
        yield from (f"{module}.{n}" for n in names)


def _lapseg_imports(name, path):
    """The lapseg modules a file imports: `from a import b` is a.b when that is a module."""
    for module, names in _import_statements(name, path):
        if not names:
            yield module
        for n in names:
            yield f"{module}.{n}" if f"{module}.{n}" in MODULES else module


def _outside_cli():
    return {n: p for n, p in MODULES.items() if n != "lapseg.cli" and not n.startswith("lapseg.cli.")}


def test_argument_parsing_only_in_lapseg_cli():
    bad = []
    for name, path in _outside_cli().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set(_imports(name, path))
        bad += [f"{name} imports {m}" for m in sorted(imported) if m in FORBIDDEN_MODULES]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                attr, owner = node.func.attr, node.func.value
                if attr.startswith("DEFINE") or (
                        attr == "run" and isinstance(owner, ast.Name) and owner.id == "app"):
                    bad.append(f"{name}:{node.lineno} calls {ast.unparse(node.func)}")
    assert not bad, "\n".join(bad)


def test_no_module_outside_the_cli_imports_it():
    bad = [f"{name} imports {module}" for name, path in _outside_cli().items()
           for module in _imports(name, path)
           if module == "lapseg.cli" or module.startswith("lapseg.cli.")]
    assert not bad, "\n".join(bad)


def _graph():
    return {name: {m for m in _lapseg_imports(name, path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert not _cycles(_graph())


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The layers of docs/architecture.md, bottom first: a module may import its own layer and
# the ones below it, never one above ('lapseg' is the package's own __init__, on top).
LAYERS = ("ops", "layers", "backbones", "decoders", "models", "metrics", "bases",
          "losses", "data", "visualize", "train", "infer", "export", "cli", "lapseg")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lapseg"


def test_every_module_has_a_documented_layer():
    unknown = sorted({_layer(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"add these to LAYERS and docs/architecture.md: {unknown}"
    text = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = [line.split()[0] for line in text.split("```")[1].strip().splitlines()]
    assert listed == list(LAYERS), f"docs/architecture.md lists {listed}"


def test_imports_go_down_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = [f"{source} ({_layer(source)}) imports {target} ({_layer(target)})"
           for source, targets in _graph().items() for target in sorted(targets)
           if rank.get(_layer(target), 0) > rank.get(_layer(source), 0)]
    assert not bad, "\n".join(bad)


def test_the_layer_check_finds_an_upward_import(monkeypatch):
    graph = {"lapseg.ops.x": {"lapseg.train.y"}, "lapseg.train.y": set()}
    monkeypatch.setattr(__import__(__name__, fromlist=["_graph"]), "_graph", lambda: graph)
    with __import__("pytest").raises(AssertionError, match="lapseg.ops.x \\(ops\\) imports"):
        test_imports_go_down_the_layers()


# The one environment variable library code reads: the directory of the weights files the
# configs name (lapseg/train/recipes.py, `$LAPSEG_WEIGHTS`; docs/training.md).
ENVIRONMENT_READERS = {"lapseg.train.recipes"}


def test_no_global_state_nor_environment_outside_the_cli():
    bad = []
    for name, path in _outside_cli().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Global):
                bad.append(f"{name}:{node.lineno} uses global {', '.join(node.names)}")
            reads = (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                     and isinstance(node.value, ast.Name) and node.value.id == "os")
            if reads and name not in ENVIRONMENT_READERS:
                bad.append(f"{name}:{node.lineno} reads the environment")
    assert not bad, "\n".join(bad)
