"""Registers the ``chaos`` marker, so ``-m 'not chaos'`` can leave the smoke subset out."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: chaos smoke scenarios (own redis-servers and worker processes)"
    )
