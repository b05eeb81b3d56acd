"""The process ``copyloop serve`` runs its app in: what start-up loaded is frozen out of the
garbage collector, whose full collections would otherwise walk it with the GIL held (the rank
path's p99 on a busy ranker)."""

from __future__ import annotations

import gc
import sys

from fastapi import FastAPI

from service.commands.cmd_serve import serving_app


def test_the_served_app_starts_with_the_loaded_heap_frozen(monkeypatch, tmp_path):
    monkeypatch.setenv("COPYLOOP_DATA_DIR", str(tmp_path))
    switch = sys.getswitchinterval()
    tracked = len(gc.get_objects())
    try:
        app = serving_app()
        assert isinstance(app, FastAPI)
        # everything that lives on is out of the collector's generations (frozen, never
        # walked again); what is left is made after the freeze
        assert gc.get_freeze_count() >= tracked // 2
        assert len(gc.get_objects()) < tracked // 20
    finally:
        gc.unfreeze()  # the test process itself goes on collecting as usual
        sys.setswitchinterval(switch)
