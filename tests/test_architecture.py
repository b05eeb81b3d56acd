"""The package structure of ARCHITECTURE.md, checked from the source: no import cycle among the
project's modules, dependencies pointing one way (``service`` → ``bandit``, ``generator`` →
``streams``), each foreign library owned where the design says, file names unique across the
packages and ``service/`` folders small enough to walk.

Imports are read with ``ast`` rather than by importing the code, so every import counts:
module level, function-local (deferred to break a cycle at run time is still a cycle in the
design) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "bandit", "generator", "service")
# what each package may import among the others (ARCHITECTURE.md, "Dependencies point one way")
ALLOWED: Mapping[str, frozenset[str]] = {
    "streams": frozenset(),
    "bandit": frozenset({"streams"}),
    "generator": frozenset({"streams"}),
    "service": frozenset({"streams", "bandit", "generator"}),
}
# file names that may repeat anywhere (``errors.py`` may once per top-level package, at its root)
SHARED_NAMES = frozenset({"__init__.py", "__main__.py"})
MAX_SERVICE_FOLDER_MODULES = 12  # modules in a folder and below it, ``__init__.py`` aside


@dataclass(frozen=True)
class Import:
    """One imported name: ``module`` is the dotted target, ``names`` what ``from`` takes from it."""

    importer: str
    module: str
    names: tuple[str, ...]
    line: int


def module_name(root: Path, path: Path) -> str:
    """``bandit/vw.py`` → ``bandit.vw``; a package's ``__init__.py`` names the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages by dotted name."""
    files: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            files[module_name(root, path)] = path
    return files


def read_imports(module: str, source: str, *, is_package: bool) -> list[Import]:
    """Every import statement anywhere in ``source``, relative ones made absolute."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                # the package a relative import starts from: the module's own for a package
                base = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > len(base):
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond the top")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, target] if target else base)
            found.append(Import(module, target, tuple(a.name for a in node.names), node.lineno))
    return found


def resolve(imp: Import, modules: Collection[str]) -> set[str]:
    """The project modules an import depends on. ``import a.b`` and a name taken ``from a.b``
    depend on ``a.b`` (or its longest known prefix); ``from a import b`` where ``a.b`` is a
    module depends on that submodule. Parent packages are not added, as import-linter does."""
    targets = {f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in modules}
    if len(targets) < len(imp.names) or not imp.names:
        parts = imp.module.split(".")
        prefixes = (".".join(parts[:end]) for end in range(len(parts), 0, -1))
        targets |= {next((p for p in prefixes if p in modules), imp.importer)}
    targets.discard(imp.importer)
    return targets


Sources = Mapping[str, tuple[str, bool]]
"""Module name → (source text, whether it is a package's ``__init__``)."""


def read_sources(files: Mapping[str, Path]) -> dict[str, tuple[str, bool]]:
    return {m: (p.read_text(encoding="utf-8"), p.name == "__init__.py") for m, p in files.items()}


def import_graph(sources: Sources) -> nx.DiGraph:
    """Modules as nodes, an edge where one imports another; edges carry the import's line."""
    graph = nx.DiGraph()
    graph.add_nodes_from(sources)
    for module, (source, is_package) in sources.items():
        for imp in read_imports(module, source, is_package=is_package):
            for target in resolve(imp, sources):
                graph.add_edge(module, target, line=imp.line)
    return graph


def find_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """One cycle for each strongly connected component that has one (a self-import included),
    started at its first name so the report is stable; a component's other cycles show once
    this one is broken."""
    cycles: list[list[str]] = []
    for component in nx.strongly_connected_components(graph):
        start = min(component)
        if len(component) == 1 and not graph.has_edge(start, start):
            continue
        cycle = [edge[0] for edge in nx.find_cycle(graph.subgraph(component), source=start)]
        first = cycle.index(min(cycle))
        cycles.append(cycle[first:] + cycle[:first])
    return sorted(cycles)


def third_party(sources: Sources) -> dict[str, set[str]]:
    """Top-level foreign names (``kafka``, ``torch``…) → the project modules importing them."""
    users: dict[str, set[str]] = defaultdict(set)
    for module, (source, is_package) in sources.items():
        for imp in read_imports(module, source, is_package=is_package):
            top = imp.module.split(".")[0]
            if top not in PACKAGES:
                users[top].add(module)
    return users


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    return project_files(REPO)


@pytest.fixture(scope="module")
def sources(files: dict[str, Path]) -> dict[str, tuple[str, bool]]:
    return read_sources(files)


@pytest.fixture(scope="module")
def graph(sources: dict[str, tuple[str, bool]]) -> nx.DiGraph:
    return import_graph(sources)


def repeated_names(root: Path, paths: Iterable[Path]) -> dict[str, list[str]]:
    """File names that stand more than once; ``errors.py`` may stand once at the root of each
    top-level package (its exception root) and nowhere else."""
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        if path.name not in SHARED_NAMES:
            by_name[path.name].append(path.relative_to(root))
    return {
        name: sorted(str(p) for p in found)
        for name, found in by_name.items()
        if len(found) > 1 and not all(p.name == "errors.py" and len(p.parts) == 2 for p in found)
    }


def _show(cycle: list[str]) -> str:
    return " → ".join([*cycle, cycle[0]])


# --- the checks on the project ---------------------------------------------------------------


def test_packages_are_found(files: dict[str, Path]) -> None:
    assert {m.split(".")[0] for m in files} == set(PACKAGES)
    assert "bandit.policy" in files
    assert "service.cli" in files


def test_no_import_cycle(graph: nx.DiGraph) -> None:
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_show(c) for c in cycles)


def test_dependencies_point_one_way(graph: nx.DiGraph) -> None:
    wrong = [
        f"{a} → {b} (line {graph.edges[a, b]['line']})"
        for a, b in graph.edges
        if (pa := a.split(".")[0]) != (pb := b.split(".")[0]) and pb not in ALLOWED[pa]
    ]
    assert not wrong, "imports against ARCHITECTURE.md's dependency rule:\n" + "\n".join(wrong)


def test_foreign_libraries_stay_in_their_rooms(sources: dict[str, tuple[str, bool]]) -> None:
    users = third_party(sources)
    kafka_outside = sorted(m for m in users.get("kafka", set()) if not m.startswith("streams."))
    assert not kafka_outside, f"only streams/ may import kafka: {kafka_outside}"
    # pylibvw is the extension module the vowpalwabbit distribution ships
    vw = sorted(users.get("vowpalwabbit", set()) | users.get("pylibvw", set()))
    assert len(vw) <= 1, f"only one module may import vowpalwabbit: {vw}"
    torch_in_bandit = sorted(m for m in users.get("torch", set()) if m.startswith("bandit"))
    assert not torch_in_bandit, f"bandit/ must not import torch: {torch_in_bandit}"


def test_module_file_names_are_unique(files: dict[str, Path]) -> None:
    repeated = repeated_names(REPO, files.values())
    assert not repeated, f"module file names used more than once: {repeated}"


def test_service_folders_stay_small(files: dict[str, Path]) -> None:
    per_folder: Counter[str] = Counter()
    for module, path in files.items():
        if module.startswith("service.") and path.name != "__init__.py":
            rel = path.relative_to(REPO / "service")
            per_folder[f"service/{rel.parts[0]}/" if len(rel.parts) > 1 else "service/"] += 1
    large = {f: n for f, n in per_folder.items() if n > MAX_SERVICE_FOLDER_MODULES}
    assert not large, f"service/ folders over {MAX_SERVICE_FOLDER_MODULES} modules: {large}"
    assert per_folder["service/"] > 0


# --- the checker's own logic, on small synthetic inputs --------------------------------------


def test_find_cycles_reports_each_cycle_once() -> None:
    graph = nx.DiGraph(
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("f", "f"), ("g", "h")]
    )
    assert find_cycles(graph) == [["a", "b", "c"], ["f"]]


def test_find_cycles_passes_a_diamond() -> None:
    graph = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert find_cycles(graph) == []


def test_find_cycles_names_a_path_that_exists() -> None:
    graph = nx.DiGraph([("x", "y"), ("y", "x"), ("y", "z"), ("z", "x")])
    [cycle] = find_cycles(graph)
    assert set(cycle) <= {"x", "y", "z"}
    assert all(graph.has_edge(a, b) for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True))


def _graph(modules: dict[str, str]) -> nx.DiGraph:
    """A graph from in-memory modules; a name ending in ``/`` is a package's ``__init__``."""
    return import_graph({m.rstrip("/"): (src, m.endswith("/")) for m, src in modules.items()})


def test_imports_of_every_form_are_edges() -> None:
    graph = _graph(
        {
            "pkg/": "from pkg import sub\n",
            "pkg.sub": "from .inner import leaf\n",
            "pkg.inner/": "from . import leaf\n",
            "pkg.inner.leaf": "def f() -> None:\n    from ..other import thing\n",
            "pkg.other": "import pkg.sub as s\nimport json\n",
        }
    )
    assert set(graph.edges) == {
        ("pkg", "pkg.sub"),
        ("pkg.sub", "pkg.inner.leaf"),
        ("pkg.inner", "pkg.inner.leaf"),
        ("pkg.inner.leaf", "pkg.other"),
        ("pkg.other", "pkg.sub"),
    }
    assert find_cycles(graph) == [["pkg.inner.leaf", "pkg.other", "pkg.sub"]]


def test_a_name_from_a_package_depends_on_the_package() -> None:
    graph = _graph({"pkg/": "from pkg.sub import X\n", "pkg.sub": "from pkg import Y\n"})
    assert set(graph.edges) == {("pkg", "pkg.sub"), ("pkg.sub", "pkg")}
    assert find_cycles(graph) == [["pkg", "pkg.sub"]]


def test_relative_import_beyond_the_top_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond the top"):
        read_imports("pkg.mod", "from ... import x\n", is_package=False)


def test_repeated_names_spare_package_markers_and_exception_roots() -> None:
    root = Path("/r")
    ok = ["a/__init__.py", "b/__init__.py", "a/errors.py", "b/errors.py", "a/x/one.py", "b/two.py"]
    assert repeated_names(root, [root / p for p in ok]) == {}
    nested = [*ok, "a/x/errors.py", "b/y/one.py"]
    assert repeated_names(root, [root / p for p in nested]) == {
        "errors.py": ["a/errors.py", "a/x/errors.py", "b/errors.py"],
        "one.py": ["a/x/one.py", "b/y/one.py"],
    }


def test_foreign_imports_are_collected(tmp_path: Path) -> None:
    (tmp_path / "bandit").mkdir()
    (tmp_path / "bandit" / "a.py").write_text("import torch.nn\nfrom kafka import X\n")
    (tmp_path / "bandit" / "b.py").write_text("from streams import topics\n")
    users = third_party(read_sources(project_files(tmp_path, ["bandit"])))
    assert users == {"torch": {"bandit.a"}, "kafka": {"bandit.a"}}
