"""The house's floors: every import of one project file by another goes one way, down.

The graph is drawn from the code itself: ``ast`` reads every .py file of the repository and
collects its ``import`` / ``from ... import`` statements, at module level *and* inside functions
(a function-level import is still an arrow; it only runs later). A project module that, through
any chain of such arrows, imports itself is a circle, and the test fails naming it.

``FLOORS`` is the layering the README's Files section draws: a file may import only files on a
strictly lower floor, so a circle is impossible. A new file must be given a floor here. Outside
tests/, a project import inside a function needs its reason on its line (it hides an arrow).
"""
import ast
import os

from conftest import ROOT

# floor -> files on it. A package (verifier/, bench/) is one box: arrows inside it are only
# checked for circles. machinery/ is the exception: its files serve different floors of the house
# (the kernel pin runs before torch; the run folder needs data.py), so each is a box of its own,
# named "machinery.<file>", and the package itself ("machinery", an __init__ without imports) sits
# on the ground floor. tests/ stand above everything and import what they like.
FLOORS = {
    0: ["verifier", "machinery", "machinery.repro", "machinery.distributed", "machinery.report"],
    1: ["reward", "machinery.lm_head", "machinery.optim", "machinery.gpu_memory", "machinery.tracking"],
    2: ["generate", "data"],
    3: ["revise", "machinery.run"],
    4: ["distill", "toy"],
    5: ["evaluate", "config"],
    6: ["train"],
    7: ["baselines"],
    8: ["bench"],
}


def box_of(module: str) -> str:
    """The FLOORS entry a module belongs to: itself if listed (machinery's files), else its package."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in {m for mods in FLOORS.values() for m in mods}:
            return ".".join(parts[:i])
    return parts[0]


def module_name(rel: str) -> str:
    """'verifier/answer.py' -> 'verifier.answer'; 'bench/__init__.py' -> 'bench'; tests by stem."""
    parts = rel[:-3].split(os.sep)
    if parts[0] == "tests":                        # conftest puts tests/ and the root on sys.path
        return parts[-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files(root: str) -> dict[str, str]:
    """module name -> path, for every .py file outside hidden folders and run outputs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("runs", "__pycache__")]
        for f in filenames:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                out[module_name(os.path.relpath(path, root))] = path
    return out


def imports_of(path: str, name: str, modules: set[str]) -> dict[str, int]:
    """The project modules ``path`` imports (anywhere in the file) -> the first line that does."""
    return _imports_in(ast.parse(open(path, encoding="utf-8").read(), filename=path), path, name, modules)


def _imports_in(tree: ast.AST, path: str, name: str, modules: set[str]) -> dict[str, int]:
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = {}

    def add(target: str, line: int) -> None:
        # "a.b" imports "a" first; keep every project module on the way down to the target.
        pieces = target.split(".")
        for i in range(1, len(pieces) + 1):
            mod = ".".join(pieces[:i])
            if mod in modules and mod != name:
                found.setdefault(mod, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                          # from .x import y  /  from . import y
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            add(base, node.lineno)
            for alias in node.names:                # "from bench import gpu" imports bench.gpu
                add(f"{base}.{alias.name}", node.lineno)
    return found


def import_graph(root: str) -> dict[str, dict[str, int]]:
    files = project_files(root)
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def circles(graph: dict[str, dict]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_house_has_no_import_circle():
    graph = import_graph(ROOT)
    assert {"train", "machinery.distributed", "machinery.run", "revise", "verifier.sandbox"} <= set(graph)
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_import_goes_down_a_floor():
    """The README's drawing, checked: each arrow between two boxes points at a strictly lower floor."""
    floor = {m: f for f, mods in FLOORS.items() for m in mods}
    graph = import_graph(ROOT)
    box = {m: box_of(m) for m, p in project_files(ROOT).items()
           if not os.path.relpath(p, ROOT).startswith("tests" + os.sep)}
    unplaced, gone = set(box.values()) - set(floor), set(floor) - set(box.values())
    assert not unplaced and not gone, (f"give {sorted(unplaced)} a floor in FLOORS and in the README's "
                                       f"drawing; {sorted(gone)} no longer exist")
    up = [f"{m} (floor {floor[box[m]]}) imports {t} (floor {floor[box[t]]}) at line {line}"
          for m in sorted(box) for t, line in graph[m].items()
          if box[t] != box[m] and floor[box[t]] >= floor[box[m]]]
    assert not up, "\n".join(up)


def test_ground_floor_imports_nothing_of_ours():
    """distributed.py, repro.py and report.py use only torch / the standard library; reward.py only its
    verifier, data.py only reward.py's task table; revise.py and distill.py read as single-process code."""
    graph = import_graph(ROOT)
    assert set(graph["data"]) == {"reward"}
    for name in ("machinery.distributed", "machinery.repro", "machinery.report", "machinery"):
        assert graph[name] == {}, name
    assert not {"machinery.distributed", "machinery.run"} & (set(graph["revise"]) | set(graph["distill"]))
    assert set(graph["reward"]) <= {m for m in graph if m.startswith("verifier")}


def late_imports(path: str, name: str, modules: set[str]) -> list[int]:
    """Lines of project imports made inside a function of ``path`` without a reason on the line."""
    src = open(path, encoding="utf-8").read()
    lines, out = src.splitlines(), []
    for fn in ast.walk(ast.parse(src)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "#" not in lines[node.lineno - 1]:
                    if _imports_in(ast.Module(body=[node], type_ignores=[]), path, name, modules):
                        out.append(node.lineno)
    return out


def test_no_project_import_hides_in_a_function():
    """An import inside a function is an arrow a reader of the file's head does not see: outside
    tests/ one is allowed only to put off a real cost (an optional dependency), with the reason as a
    comment on its line."""
    files = project_files(ROOT)
    hidden = [f"{os.path.relpath(p, ROOT)}:{line}" for m, p in sorted(files.items())
              if not os.path.relpath(p, ROOT).startswith("tests" + os.sep)
              for line in late_imports(p, m, set(files))]
    assert not hidden, hidden


def test_the_detector_finds_a_planted_circle(tmp_path):
    """The checks above cannot pass by seeing nothing: a circle hidden in a function is found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import x\n")
    (tmp_path / "c.py").write_text("import os\nimport a\n")
    (tmp_path / "d.py").write_text("import a\n")
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("from .y import z\n")
    (pkg / "y.py").write_text("def g():\n    from p import x\n")
    graph = import_graph(str(tmp_path))
    assert graph["b"] == {"c": 2} and graph["p.x"] == {"p": 1, "p.y": 1}
    assert late_imports(str(tmp_path / "b.py"), "b", set(graph)) == [2]
    assert late_imports(str(pkg / "y.py"), "p.y", set(graph)) == [2]
    assert sorted(circles(graph)) == [["a", "b", "c"], ["p.x", "p.y"]]
