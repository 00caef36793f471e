"""Check the shape of the code: the storage seam's size, module sizes, and
import circles (lazy imports inside functions included).

    python scripts/check_structure.py [--verbose]

Prints the figures and exits 1 if a rule is broken:
- the ``Storage`` seam has at most MAX_REQUIRED abstract (required) methods;
- no source module (tests excluded) has more than MAX_LINES non-blank lines;
- no two modules of queuectl_core, of a bundled plugin or of an example
  plugin import each other,
  directly or through others.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUIRED = 13
MAX_LINES = 500
PACKAGES = [ROOT / "queuectl_core",
            *sorted(p for p in (ROOT / "plugins").glob("*/queuectl_*") if p.is_dir()),
            *sorted(p for p in (ROOT / "examples").glob("*/queuectl_*") if p.is_dir())]


def sources() -> dict[str, Path]:
    """Module name -> file, for every source module (tests excluded)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        base = package.parent
        for path in sorted(package.rglob("*.py")):
            if "tests" in path.relative_to(base).parts:
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that ``name`` imports, anywhere in its file (at the
    top, inside functions, under TYPE_CHECKING: an import circle is one
    whatever the moment of the import)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def seam() -> tuple[list[str], list[str]]:
    """The Storage seam's required (abstract) and optional public methods."""
    tree = ast.parse((ROOT / "queuectl_core" / "storage.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Storage")
    required: list[str] = []
    optional: list[str] = []
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            abstract = any(isinstance(d, ast.Name) and d.id == "abstractmethod"
                           for d in node.decorator_list)
            (required if abstract else optional).append(node.name)
    return required, optional


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list every module's size")
    args = parser.parse_args()
    problems: list[str] = []

    required, optional = seam()
    print(f"storage seam: {len(required)} required methods ({', '.join(required)}); "
          f"{len(optional)} optional with defaults ({', '.join(optional)})")
    if len(required) > MAX_REQUIRED:
        problems.append(f"the seam has {len(required)} required methods (at most {MAX_REQUIRED})")

    modules = sources()
    sizes = {name: sum(1 for line in path.read_text().splitlines() if line.strip())
             for name, path in modules.items()}
    memory = sizes.get("queuectl_core.testing.memory", 0)
    print(f"in-memory reference store: {memory} non-blank lines")
    redis = sum(size for name, size in sizes.items() if name.startswith("queuectl_redis"))
    print(f"example Redis backend (examples/queuectl-redis): {redis} non-blank lines")
    largest = sorted(sizes.items(), key=lambda item: -item[1])
    shown = largest if args.verbose else largest[:8]
    print(f"modules: {len(modules)}; largest (non-blank lines, at most {MAX_LINES}):")
    for name, size in shown:
        print(f"  {size:5d}  {name}")
    problems += [f"{name} has {size} non-blank lines (at most {MAX_LINES})"
                 for name, size in largest if size > MAX_LINES]

    known = set(modules)
    graph = {name: imports_of(name, path, known) for name, path in modules.items()}
    circles = cycles(graph)
    print(f"import circles: {len(circles)}")
    for circle in circles:
        problems.append("import circle: " + " <-> ".join(circle))

    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
