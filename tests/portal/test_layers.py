"""Imports point down (issue 8 item 2): the import-linter contracts in pyproject.toml are kept by
the tree, and an upward import breaks them, so `make lint` (and so `make test`) fails on one."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("portal", "vms", "storage", "accounts", "hypervisor")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_the_layer_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_a_kernel_module_importing_an_app_breaks_the_contracts(tmp_path):
    tree = copy_tree(tmp_path)
    with open(tree / "portal" / "kernel" / "errors.py", "a") as module:
        module.write("\nfrom vms.models import VirtualMachine  # noqa: E402,F401\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "portal.kernel.errors -> vms.models" in result.stdout


def test_an_app_importing_the_ui_shell_breaks_the_contracts(tmp_path):
    tree = copy_tree(tmp_path)
    with open(tree / "storage" / "services.py", "a") as module:
        module.write("\nfrom portal.shell.views import event_list  # noqa: E402,F401\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "storage is not allowed to import portal.shell" in result.stdout


def test_hypervisor_importing_the_kernel_breaks_the_contracts(tmp_path):
    tree = copy_tree(tmp_path)
    with open(tree / "hypervisor" / "errors.py", "a") as module:
        module.write("\nfrom portal.kernel.errors import ActionRefused  # noqa: E402,F401\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "hypervisor.errors -> portal.kernel.errors" in result.stdout


def _project_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _imports_inside_functions(tree):
    """(line, module) of each import of a project module made inside a function body."""
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.startswith(".") or module.split(".")[0] in PACKAGES:
                yield node.lineno, module


def test_no_function_local_import_of_the_project_and_no_private_name_across_modules():
    """Imports of the project's own modules sit at the top of the module (where import-linter
    sees them and a cycle shows), except in an AppConfig.ready() and management commands,
    which Django runs once the apps are loaded; no private name (_x) is imported."""
    hidden, private = [], []
    for path in _project_modules():
        tree = ast.parse(path.read_text())
        name = path.relative_to(ROOT)
        if path.name != "apps.py" and "management" not in path.parts:
            hidden += [
                f"{name}:{line} imports {module}"
                for line, module in _imports_inside_functions(tree)
            ]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").split(".")[0] in PACKAGES
            ):
                private += [
                    f"{name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert not hidden, hidden
    assert not private, private
