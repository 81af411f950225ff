"""The project's import graph, read with ``ast`` from every module of its packages (imports inside functions
included: a lazy import is still a dependency): no cycle between packages or between modules, ``utils/`` is the
ground floor (it imports no other project package), and ``configs/`` loads neither torch nor timm (``import
configs`` and ``load_cfg`` in a fresh interpreter leave them out of ``sys.modules``)."""
import ast
import json
import os
import subprocess
import sys
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("configs", "datasets", "model", "loss", "solver", "processor", "utils", "tools", "tracking")
SCRIPTS = ("train_net", "test_net")  # top-level entry points, importing the packages
HEAVY = ("torch", "torchvision", "timm")

Edge = Tuple[str, str, str, bool]  # (importing module, imported project module, 'file:line', at module level)


def project_modules() -> Dict[str, str]:
    """Dotted module name -> file, for every .py file of PACKAGES and the SCRIPTS."""
    modules = {name: os.path.join(ROOT, f"{name}.py") for name in SCRIPTS}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for f in sorted(files):
                if f.endswith(".py"):
                    parts = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, f)
    return modules


def _imported_names(module: str, path: str) -> List[Tuple[str, int, bool]]:
    """(absolute dotted name, line, at module level) of every import statement of the module, relative imports
    resolved; ``from a import b`` gives both ``a.b`` and ``a`` (b may be a submodule or a name in a)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            at_top = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, at_top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                found.extend((f"{base}.{alias.name}", child.lineno, at_top) for alias in child.names)
                found.append((base, child.lineno, at_top))
            visit(child, at_top)

    visit(tree, True)
    return found


def import_graph() -> Tuple[Dict[str, str], List[Edge], Dict[str, Set[Tuple[str, bool]]]]:
    """(modules, edges between project modules, module -> {(external top-level package, at module level)})."""
    modules = project_modules()
    edges, external = [], {}
    for module, path in modules.items():
        for name, line, top in _imported_names(module, path):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            where = f"{os.path.relpath(path, ROOT)}:{line}"
            if target and target != module and (module, target, where, top) not in edges:
                edges.append((module, target, where, top))
            elif not target and name.split(".")[0] not in PACKAGES + SCRIPTS:
                external.setdefault(module, set()).add((name.split(".")[0], top))
    return modules, edges, external


def find_cycle(nodes, edges) -> List[str]:
    """One cycle of the directed graph as [a, b, ..., a], or [] when it has none."""
    successors = {n: sorted({b for a, b in edges if a == n}) for n in nodes}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in successors.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(nodes):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def _package(module: str) -> str:
    return module.split(".")[0]


def _explain(cycle, edges) -> str:
    """Each step of ``cycle`` (of modules or packages) with the import lines that make it."""
    def lines(a, b):
        return ", ".join(w for x, y, w, _ in edges if (x, y) == (a, b) or (_package(x), _package(y)) == (a, b))
    return "; ".join(f"{a} -> {b} ({lines(a, b)})" for a, b in zip(cycle, cycle[1:]))


def test_the_graph_reader_sees_relative_lazy_and_submodule_imports():
    modules, edges, external = import_graph()
    found = {(a, b, top) for a, b, _, top in edges}
    assert ("datasets.loader", "datasets.registry", True) in found     # from .registry import ... (relative)
    assert ("datasets.loader", "utils.misc", True) in found            # from utils.misc import ...
    assert ("datasets", "datasets.csv_dataset", True) in found         # from . import csv_dataset (a submodule)
    assert ("tools.visualize", "datasets", False) in found             # inside dataset_inputs()
    assert ("torch", True) in external["datasets.loader"] and "configs.defaults" in modules


def test_no_import_cycle_between_packages_or_modules():
    modules, edges, _ = import_graph()
    between = {(_package(a), _package(b)) for a, b, _, _ in edges if _package(a) != _package(b)}
    cycle = find_cycle({_package(m) for m in modules}, between)
    assert not cycle, f"packages import each other: {_explain(cycle, edges)}"
    cycle = find_cycle(set(modules), {(a, b) for a, b, _, _ in edges})
    assert not cycle, f"modules import each other: {_explain(cycle, edges)}"


def test_utils_is_the_ground_floor():
    _, edges, _ = import_graph()
    upward = [f"{where} imports {b}" for a, b, where, _ in edges if _package(a) == "utils" and _package(b) != "utils"]
    assert not upward, "utils/ imports other project packages: " + "; ".join(upward)


def test_configs_loads_no_torch_at_module_level():
    """Nothing configs/ imports at module level, directly or through other project modules, is torch or timm."""
    modules, edges, external = import_graph()
    reached, todo = set(), [m for m in modules if _package(m) == "configs"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [b for a, b, _, top in edges if a == module and top]
    heavy = sorted(f"{m} imports {name}" for m in reached for name, top in external.get(m, ()) if top and name in HEAVY)
    assert not heavy, heavy


def test_import_configs_and_load_cfg_leave_torch_out_of_a_fresh_interpreter():
    code = ("import sys, json; from configs import load_cfg; "
            "cfg = load_cfg('configs/Synthetic/tiny.yml', ['DATASETS.NAMES', 'market1501']); "
            f"print(json.dumps([cfg.DATASETS.NAMES, [m for m in {list(HEAVY)!r} if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert names == ["market1501"] and loaded == []
