"""The code's shape, checked so that it stays true: sizes, the import floors, and test modules that stand alone.

- No file over 400 lines and no function over 80 lines (actors learner envs cluster contracts models benchmarks
  scripts tests): a long file or function is split along its natural steps.
- The import floors (README "Layout"): cluster/ and benchmarks/ on top; actors/ and learner/ below them;
  models/; contracts/ and envs/ at the bottom. Nothing below cluster/ imports cluster/ or benchmarks/, envs/
  imports only contracts/, and contracts/ imports nothing of the project. Imports inside functions count too.
- No test module imports another test module: shared helpers live in conftest.py fixtures or in small helper
  modules next to the tests (tests/logprob_reference.py, tests/rollout_checks.py, tests/learner_checks.py).
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ("actors", "learner", "envs", "cluster", "contracts", "models", "benchmarks", "scripts", "tests")
PROJECT = ("actors", "learner", "envs", "cluster", "contracts", "models", "benchmarks")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80
SIZED_SUFFIXES = (".py", ".yaml", ".yml", ".json")


def files(folders, suffixes=(".py",)) -> list[pathlib.Path]:
    return sorted(
        p
        for folder in folders
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts
    )


def rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Every module a file imports, anywhere in it, with relative imports resolved against its package."""
    package = path.relative_to(root).parent.parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                out.add(".".join((*base, node.module) if node.module else base))
            else:
                out.add(node.module)
    return out


def project_imports(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """The top-level project packages a file imports."""
    return {m.split(".")[0] for m in imported_modules(path, root)} & set(PROJECT)


def test_no_file_is_over_the_line_limit():
    offenders = []
    for path in files(CHECKED, SIZED_SUFFIXES):
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            offenders.append(f"{rel(path)}: {n} lines")
    assert not offenders, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_the_line_limit():
    offenders = []
    for path in files(CHECKED):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    offenders.append(f"{rel(path)}:{node.lineno} {node.name}: {n} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_nothing_below_cluster_imports_cluster_or_benchmarks():
    offenders = [
        f"{rel(path)} imports {sorted(bad)}"
        for path in files(("actors", "learner", "envs", "models", "contracts"))
        if (bad := project_imports(path) & {"cluster", "benchmarks"})
    ]
    assert not offenders, "\n".join(offenders)


def test_the_bottom_floor_imports_only_itself():
    allowed = {"contracts": {"contracts"}, "envs": {"envs", "contracts"}}
    offenders = [
        f"{rel(path)} imports {sorted(bad)}"
        for floor, ok in allowed.items()
        for path in files((floor,))
        if (bad := project_imports(path) - ok)
    ]
    assert not offenders, "\n".join(offenders)


def test_no_test_module_imports_another():
    tests = ROOT / "tests"
    test_modules = {p.stem for p in tests.glob("test_*.py")} | {"conftest"}
    offenders = [
        f"{rel(path)} imports {sorted(bad)}"
        for path in files(("tests",))
        if (bad := {m.split(".")[0] for m in imported_modules(path)} & test_modules)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_import_parser_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "mod.py"
    source.write_text("import os\n\n\ndef f():\n    from .sibling import x\n    from cluster import launch\n")
    assert imported_modules(source, tmp_path) == {"os", "pkg.sibling", "cluster"}
    assert project_imports(source, tmp_path) == {"cluster"}


# ---- README "Layout: where each concept lives" lists every module, and only paths that exist ------------------
def layout_table_paths() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout: where each concept lives")
    end = text.index("\n## ", start + 1)
    rows = [line for line in text[start:end].splitlines() if line.startswith("|")]
    return [path for row in rows for path in re.findall(r"`([\w./-]+)`", row.rsplit("|", 2)[1])]


def is_module(path: pathlib.Path) -> bool:
    """A module worth a row: anything but a package marker that holds no code (empty, or a docstring only)."""
    if path.name != "__init__.py":
        return True
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def test_readme_layout_lists_every_module_and_no_stale_path():
    listed = layout_table_paths()
    missing = [path for path in listed if not (ROOT / path).exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"
    modules = {rel(p) for p in files(PROJECT) if is_module(p)}
    unlisted = sorted(modules - set(listed))
    assert not unlisted, f"modules missing from README's layout table: {unlisted}"
