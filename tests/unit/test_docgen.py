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


def test_every_example_is_valid_for_its_own_key() -> None:
    """Each key declares its own example, which its own schema accepts: one matched by the
    key's last name alone would show the symlink step's `target` as `{kind: k3s}`."""
    from pathlib import Path

    from clawguard import _yaml
    from clawguard.schema import Context

    checked = 0
    for key, spec in walk(config_schema()):
        if spec.example is None:
            continue
        node = _yaml.loads(f"value: {spec.example}\n", Path("example.yaml")).value["value"]
        context = Context(Path("example.yaml"))
        context.lines[key] = 1  # as the enclosing mapping records it before validating the value
        spec.schema.validate(node, key, context)  # raises ConfigError when wrong
        checked += 1
    assert checked >= 40


def test_examples_make_sense_for_their_step() -> None:
    """A directory's example mode keeps the owner's x (copying "0644" for the telegram
    directory would lock the agent out of it); paths sit where the step writes them."""
    from clawguard.steps import REGISTRY

    for kind, step in REGISTRY.items():
        for name, spec in step.params.items():
            if spec.example is None:
                continue
            if name in ("mode", "dir_mode") and kind in ("chown", "directory"):
                assert int(spec.example.strip('"'), 8) & 0o100, (kind, name)
            if name in ("path", "dest", "target", "links"):
                assert "/sandbox/" in spec.example, (kind, name)
            if name == "source":
                assert not spec.example.startswith("/"), (kind, name)  # relative to the archive
