"""The root service as twistd builds it: what it does to the process."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest_twisted

from tsnet.config import load_config
from tsnet.plugins import load_plugins
from tsnet.service import FULL_GC_SPACING, TsnetService
from tsnet.testing.fixtures import BASE_CONFIG, write_config


@pytest_twisted.ensureDeferred
async def test_a_started_server_freezes_its_start_up_and_spaces_full_collections(
        tmp_path: Path) -> None:
    from twisted.internet import reactor

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    plugins = load_plugins()
    config = load_config(str(write_config(tmp_path, BASE_CONFIG)), plugins, reactor)
    service = TsnetService(config, plugins, reactor, freeze_gc=True)
    service.startService()
    try:
        await service.started
        assert gc.get_threshold() == (before[0], before[1], FULL_GC_SPACING)
        assert gc.get_freeze_count() > frozen
    finally:
        await service.stopService()
        gc.set_threshold(*before)
        gc.unfreeze()
