"""An import-linter contract type: project modules are imported at module level only.

A function-level import of a project module hides a dependency from the layers contract
and usually dodges an import cycle that the layers should have broken. Imports of
third-party and standard-library modules inside functions stay allowed (optional or
costly dependencies), as do imports under ``if TYPE_CHECKING:`` at module level.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from importlinter import Contract, ContractCheck, fields, output


def _function_level_imports(path: Path, packages: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []

    def project(name: str | None) -> bool:
        return bool(name) and str(name).split(".")[0] in packages

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                         | ast.Lambda)
            if nested and isinstance(child, ast.ImportFrom) and child.level == 0 \
                    and project(child.module):
                found.append((child.lineno, f"from {child.module} import ..."))
            elif nested and isinstance(child, ast.ImportFrom) and child.level > 0:
                found.append((child.lineno, "relative import"))
            elif nested and isinstance(child, ast.Import):
                found.extend((child.lineno, f"import {alias.name}")
                             for alias in child.names if project(alias.name))
            visit(child, inner)

    visit(tree, False)
    return found


class NoFunctionLevelImportsContract(Contract):
    """Options: ``source_packages`` (checked) and ``project_packages`` (whose imports count)."""

    source_packages = fields.ListField(subfield=fields.StringField())
    project_packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: object, verbose: bool) -> ContractCheck:
        packages = {str(name) for name in self.project_packages}  # type: ignore[attr-defined]
        offences: list[str] = []
        for package in self.source_packages:  # type: ignore[attr-defined]
            spec = importlib.util.find_spec(str(package))
            if spec is None or not spec.submodule_search_locations:
                offences.append(f"{package}: not a package")
                continue
            root = Path(next(iter(spec.submodule_search_locations)))
            for path in sorted(root.rglob("*.py")):
                for line, what in _function_level_imports(path, packages):
                    offences.append(f"{path.relative_to(root.parent)}:{line}: {what}")
        return ContractCheck(kept=not offences, metadata={"offences": offences})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for offence in check.metadata["offences"]:
            output.print_error(f"{offence} (move it to the top of the module)")
            output.new_line()
