"""Shared fixtures: real servers on free loopback ports, real clients."""

from __future__ import annotations

import pytest

pytest_plugins = ["tsnet.testing.fixtures", "tsnet.testing.redis"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "subprocess: starts real twistd/tsnet processes")
