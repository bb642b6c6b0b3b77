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
