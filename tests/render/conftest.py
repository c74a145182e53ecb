"""Booted machines the renderer tests share within a module.

Tests that change a machine use the fresh-per-test `small` and `default`
fixtures of tests/conftest.py instead.
"""
import pytest

from engine import Machine, load
from memfs.machines import builtin


@pytest.fixture(scope="module")
def shared_small() -> Machine:
    """config/small.yaml fresh from boot, shared by a module's tests: never change it."""
    return Machine(load(builtin("small")), paused=True)


@pytest.fixture(scope="module")
def shared_default() -> Machine:
    """config/default.yaml fresh from boot (without its boot processes), shared by a
    module's tests: never change it."""
    return Machine(load(builtin("default")).without_processes(), paused=True)
