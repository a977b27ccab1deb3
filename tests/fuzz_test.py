"""The atheris targets of fuzz/: they run (or say atheris is missing and exit 0), and
their properties hold on the inputs that once broke the parsers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def target(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["fuzz_yaml", "fuzz_rule_url"])
def test_a_target_runs_or_says_atheris_is_missing(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(FUZZ / f"{name}.py"), "-runs=0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if importlib.util.find_spec("atheris") is None:
        assert f"{name}: atheris is not installed" in done.stderr


@pytest.mark.parametrize(
    "data",
    [
        b"a: &a [*a]",
        b"a: !!python/object/apply:os.system [ls]",
        b"%TAG !e! tag:yaml.org,2002:python/\n---\na: !e!name:os.system x",
        b"a: " + b"9" * 5000,
        b"a: 0x_\nb: 2024-13-45",
        b"\xff\xfe",
        b"a: [" + b"*b, " * 10 + b"]",
    ],
)
def test_the_yaml_property_holds_on_inputs_that_broke_the_reader(data: bytes) -> None:
    target("fuzz_yaml").check(data)


def test_the_yaml_property_catches_a_python_object(monkeypatch: pytest.MonkeyPatch) -> None:
    import gitprov.yamldoc as yamldoc

    def smuggled(*_: object) -> tuple[yamldoc.Document, list[object]]:
        return yamldoc.Document("f.yaml", "oid", {"x": object()}), []

    monkeypatch.setattr(yamldoc, "parse", smuggled)
    with pytest.raises(AssertionError, match="not plain data"):
        target("fuzz_yaml").check(b"x: 1")


@pytest.mark.parametrize(
    "data", [b"http://h:" + b"9" * 5000 + b"/a", b"[--key 'a\"b']http://h/a", b"\x00", b""]
)
def test_the_rule_property_holds_on_inputs_that_broke_the_parser(data: bytes) -> None:
    target("fuzz_rule_url").check(data)
