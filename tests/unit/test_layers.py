"""The packages of edgellm form a layered graph: the import-linter contracts in pyproject.toml hold
for the code, and the same contracts catch a package cycle or a layer importing upwards."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(config: Path) -> int:
    return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def test_edgellm_keeps_its_contracts() -> None:
    assert {c["type"] for c in _contracts()} == {"acyclic_siblings", "layers"}
    assert _lint(PYPROJECT) == 0


def _mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imports: dict[str, str]) -> Path:
    """A package `mirror` with one empty subpackage per layer of edgellm's contracts, plus the
    given imports (`{"engine": "api"}`: mirror.engine imports mirror.api), checked by the same
    contracts written for it."""
    root = tmp_path / "mirror"
    contracts = []
    names: set[str] = set()
    for contract in _contracts():
        # the mirror has none of edgellm's modules, so none of its named exceptions
        mirrored = {k: _renamed(v) for k, v in contract.items() if k != "ignore_imports"}
        contracts.append(mirrored)
        names |= {m.removeprefix("mirror.") for m in mirrored.get("layers", [])}
    for name in names:
        (root / name).mkdir(parents=True)
        source = f"import mirror.{imports[name]}\n" if name in imports else ""
        (root / name / "__init__.py").write_text(source)
    (root / "__init__.py").write_text("")
    lines = ['[tool.importlinter]\nroot_package = "mirror"\n']
    for c in contracts:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{k} = {_toml(v)}" for k, v in c.items()]
    config = tmp_path / "pyproject.toml"
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mirror", raising=False)
    return config


def _renamed(value: Any) -> Any:
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    return value.replace("edgellm", "mirror") if isinstance(value, str) else value


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value + '"'
    return str(value)


def test_the_contracts_pass_a_tree_that_imports_downwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _mirror(tmp_path, monkeypatch, {"api": "gateway", "gateway": "wire", "wire": "engine"})
    assert _lint(config) == 0


@pytest.mark.parametrize(
    "imports",
    [
        {"engine": "api"},  # a lower layer imports a higher one
        {"gateway": "api", "api": "gateway"},  # two packages import each other
    ],
)
def test_the_contracts_catch_an_upward_import_or_a_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imports: dict[str, str]
) -> None:
    assert _lint(_mirror(tmp_path, monkeypatch, imports)) != 0
