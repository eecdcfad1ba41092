"""The code's layout (docs/ARCHITECTURE.md): no import circle in evo/, mlflow only in evo/tracking,
a pure genome module, modules of a readable size."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for p in sorted((ROOT / package).rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside functions."""
    found = set()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found - {name}


def test_no_import_circle_in_evo():
    mods = _modules("evo")
    graph = {m: _imports(p, m, set(mods)) for m, p in mods.items()}
    # a package's __init__ importing its own submodules is not a circle
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_only_evo_tracking_imports_mlflow():
    users = []
    for package in ("evo", "models", "primitives"):
        for m, p in _modules(package).items():
            tree = ast.parse(p.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
            if any(x == "mlflow" or x.startswith("mlflow.") for x in names):
                users.append(m)
    assert users and all(m.startswith("evo.tracking") for m in users), users


def test_the_genome_module_builds_no_model_and_reads_no_table():
    tree = ast.parse((ROOT / "evo/genome.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & {"torch", "models.gpt", "evo.table", "evo.evaluate", "models.train"}


def test_no_module_of_the_packages_is_over_the_size_limit():
    sizes = {m: len(p.read_text().splitlines()) for package in ("evo", "models", "primitives")
             for m, p in _modules(package).items()}
    # primitives.export: the formula export (sympy, LaTeX, numpy code, JSON) is one concept
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m != "primitives.export"}
    assert over == {}
