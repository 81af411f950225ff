"""House rules checked on the syntax tree of every project module (tests excluded): one logger naming
scheme, and each module-level constant defined in one place."""
import ast
import collections
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = ("tests", "__pycache__", "output", "data")
# Constants that are per script by nature: ROOT is the repository root as seen from each script's folder.
PER_SCRIPT = {"ROOT"}


def _modules():
    """``(path relative to the repository, syntax tree)`` of every project .py file."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read())


def test_every_logger_is_named_after_its_module():
    """``logging.getLogger(__name__)`` everywhere (a library's logger may be reached through its module
    name, e.g. ``CosineLRScheduler.__module__``); no hand-written names such as "fusionreid.model"."""
    literal = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger":
                if any(isinstance(arg, ast.Constant) for arg in node.args):
                    literal.append(f"{path}:{node.lineno}")
    assert literal == []


def test_module_constants_are_defined_once():
    """An UPPER_CASE name assigned at module level in two modules is one value kept twice (or two
    meanings under one name): define it once and import it."""
    where = collections.defaultdict(set)
    for path, tree in _modules():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id.isupper() and name.id not in PER_SCRIPT:
                        where[name.id].add(path)
    assert {name: sorted(paths) for name, paths in where.items() if len(paths) > 1} == {}
