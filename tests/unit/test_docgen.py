from __future__ import annotations

from clawguard import _docgen
from clawguard.config import config_schema
from clawguard.schema import walk

from .conftest import REPO


def test_configuration_reference_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == _docgen.render(), "run: python -m clawguard._docgen > docs/configuration.md"


def test_every_key_is_documented() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    for key, spec in walk(config_schema()):
        assert f"`{key}`" in committed
        assert spec.doc, f"{key} has no description"


def test_every_key_has_a_type_and_an_example() -> None:
    rows = [line for line in _docgen.render().splitlines() if line.startswith("| `")]
    assert len(rows) == len(walk(config_schema()))
    for row in rows:
        key, kind, _default, example, meaning = (cell.strip() for cell in row.strip("|").split(" | "))
        assert kind and example and meaning, f"{key}: missing type, example or meaning"
