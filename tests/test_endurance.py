"""Endurance: 200 runs in one viewer, switching images and layers, through the widget and the
console, with refusals mixed in. Nothing may pile up: layers, workers, threads, hooks, event
connections, memory.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from _robustness import (
    assert_error_notified,
    assert_no_traceback,
    assert_viewer_responds,
    model_hooks,
)

import napari_activations as na
from napari_activations import _napari_layers

pytestmark = [pytest.mark.gui, pytest.mark.slow]

RUNS = 200
WARM_UP = 40
NETWORK_LAYERS = ["conv1", "pool1", "fire2-relu_squeeze1x1", "fire3-concat", "pool3"]


def _runs_holding_a_layer() -> int:
    """Finished runs that still hold their work or their callbacks (and so the layers)."""
    from napari_activations._qt.worker import BackgroundRun

    return sum(
        isinstance(o, BackgroundRun) and not o.running and not o.released for o in gc.get_objects()
    )


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_200_runs_in_one_viewer(random_net, make_napari_viewer, qtbot, monkeypatch):
    from _robustness import record_notifications
    from qtpy.QtCore import QThreadPool
    from superqt.utils._qthreading import WorkerBase

    from napari_activations._widget import ActivationsWidget

    notifications = record_notifications(monkeypatch)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(7)
    images = [
        viewer.add_image(rng.random((40, 48)).astype(np.float32), name="gray"),
        viewer.add_image(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8), name="rgb"),
        viewer.add_image(rng.random((3, 32, 36)), name="stack"),
    ]
    tiny = viewer.add_image(np.zeros((12, 12), np.float32), name="tiny")
    widget = ActivationsWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(widget)

    made: set[str] = set()
    errors = 0
    rss_warm = threads_warm = callbacks_warm = followers_warm = None
    for i in range(RUNS):
        source = images[i % len(images)]
        layer = NETWORK_LAYERS[(i // len(images)) % len(NETWORK_LAYERS)]
        through_widget = i % 2 == 0
        refusal = i % 25 == 24  # now and then, a run that fails
        if refusal:
            source, layer = tiny, "fire9-concat"
        if through_widget:
            viewer.layers.selection.active = source  # the widget follows the selection
            assert widget.selected_image() is source
            widget.set_network_layer(layer)
            widget.run()
            qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
            if refusal:
                assert_error_notified(notifications, "too small")
        elif refusal:
            with pytest.raises(na.ImageError, match="too small"):
                na.show_activations(viewer, source, layer, network=random_net)
        else:
            na.show_activations(viewer, source, layer, network=random_net)
        if refusal:
            errors += 1
        else:
            made.add(f"{source.name}: {layer}")
        # Updates replace, they do not add; hooks never linger, also after a refusal.
        assert len(viewer.layers) == len(images) + 1 + len(made), i
        assert model_hooks(random_net) == [], i
        if i == WARM_UP - 1:
            qtbot.wait(50)
            gc.collect()
            rss_warm = _rss()
            threads_warm = threading.active_count()
            callbacks_warm = len(viewer.dims.events.current_step.callbacks)
            followers_warm = len(_napari_layers._FOLLOWERS), len(_napari_layers._STARTED)
    qtbot.wait(50)
    gc.collect()

    assert errors == RUNS // 25
    assert made == {f"{im.name}: {name}" for im in images for name in NETWORK_LAYERS}
    growth = _rss() - rss_warm
    assert growth < 100 * 2**20, f"memory grew by {growth / 2**20:.0f} MiB after warm-up"
    # No leaked workers or threads, no pile of event connections or bookkeeping.
    assert widget.worker is None and not widget.busy
    assert not WorkerBase._worker_set
    # napari's task list keeps every finished worker (and what it connects to): finished
    # runs must hold no layer.
    assert _runs_holding_a_layer() == 0
    QThreadPool.globalInstance().waitForDone(2_000)
    assert QThreadPool.globalInstance().activeThreadCount() == 0
    assert threading.active_count() <= threads_warm
    assert len(viewer.dims.events.current_step.callbacks) <= callbacks_warm
    # Every layer exists by the warm-up's end (updates only since): the bookkeeping is flat.
    assert len(_napari_layers._FOLLOWERS) <= followers_warm[0]
    assert len(_napari_layers._STARTED) <= followers_warm[1]
    # How long runs take and how long the GUI is ever blocked: benchmarks/bench_responsiveness.py
    assert_viewer_responds(viewer, qtbot)
    assert_no_traceback(notifications)
