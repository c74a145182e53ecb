"""Shared fixtures for every test directory.

- `small`, `default`: a fresh machine per test, built from config/small.yaml
  (one node, 64 MiB) or config/default.yaml (two nodes, 4 GiB), clock paused,
  so a test acts, steps and reads an exact, reproducible state. (Directories
  with their own conftest.py, such as tests/mount, may give these names their
  own meaning there.)
- `builtin_yaml(name)`: the text of a shipped machine description, to edit
  into variants; `config_from_yaml(text)` validates such a text into a
  MachineConfig; `machine_from_yaml(text)` builds a paused Machine from it.
- `invariants`: a fixture handing out check_invariants; call `invariants(m)`
  after every scenario that changes the machine. It is never automatic.
"""
from __future__ import annotations

import sys
from pathlib import Path

# pytest puts this folder (tests/) on sys.path for this file, and there
# tests/engine/ would pass for a namespace package `engine`, hiding the real
# one unless the project root is on sys.path too (`python -m pytest` puts it
# there, the `pytest` script does not).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

import pytest  # noqa: E402
import yaml  # noqa: E402

from engine import Machine, load, parse  # noqa: E402
from engine.invariants import check_invariants  # noqa: E402
from memfs.machines import builtin  # noqa: E402


def builtin_yaml(name: str) -> str:
    """The YAML text of a shipped machine description ('small', 'default')."""
    return builtin(name).read_text()


def config_from_yaml(text: str):
    """Validate a machine description given as YAML text (ConfigError on a bad one)."""
    return parse(yaml.safe_load(text), source="<test>")


def machine_from_yaml(text: str) -> Machine:
    """A paused machine built from YAML text."""
    return Machine(config_from_yaml(text), paused=True)


@pytest.fixture
def small() -> Machine:
    """A fresh small machine (64 MiB, one node, one CPU), clock paused."""
    return Machine(load(builtin("small")), paused=True)


@pytest.fixture
def default() -> Machine:
    """A fresh default machine (4 GiB, two nodes, two CPUs), clock paused, without the
    processes its config starts (tests of boot figures want an untouched machine)."""
    return Machine(load(builtin("default")).without_processes(), paused=True)


@pytest.fixture
def invariants():
    """check_invariants(machine): raises InternalError naming the first broken invariant."""
    return check_invariants


@pytest.fixture(name="builtin_yaml")
def builtin_yaml_fixture():
    return builtin_yaml


@pytest.fixture(name="config_from_yaml")
def config_from_yaml_fixture():
    return config_from_yaml


@pytest.fixture(name="machine_from_yaml")
def machine_from_yaml_fixture():
    return machine_from_yaml
