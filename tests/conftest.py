"""Shared fixtures: networks with random and with real (MATLAB's Caffe) weights."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# napari's settings, and the plugin settings the widget remembers things in, go to a folder of
# the test run's own, never to the user's: napari reads $NAPARI_CONFIG when napari.settings is
# first imported, which is after this (napari's pytest plugin does not import it).
_CONFIG_DIR = tempfile.mkdtemp(prefix="napari-activations-test-config-")
atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)
os.environ["NAPARI_CONFIG"] = os.path.join(_CONFIG_DIR, "settings.yaml")


@pytest.fixture(autouse=True, scope="session")
def _no_weight_downloads(tmp_path_factory):
    """Tests never download: torch's hub cache is an empty folder of their own."""
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ.pop("NAPARI_ACTIVATIONS_WEIGHTS", None)
    # Exported networks never go to the user's cache: scripts/test.sh names a cache of the
    # test runs' own (kept between runs, to spare re-exports); else a fresh folder.
    if not os.environ.get("NAPARI_ACTIVATIONS_CACHE"):
        os.environ["NAPARI_ACTIVATIONS_CACHE"] = str(tmp_path_factory.mktemp("export_cache"))
    yield
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def random_net():
    """SqueezeNet v1.1 with seeded random weights, on the CPU."""
    import napari_activations as na

    return na.load_squeezenet(None, device="cpu")


@pytest.fixture(scope="session")
def real_weights_path() -> Path:
    """The built-in reference weights file (float16 except conv1)."""
    from napari_activations.network import builtin_weights_path

    return builtin_weights_path()


@pytest.fixture(scope="session")
def real_net():
    """SqueezeNet v1.1 with the built-in original Caffe weights (MATLAB's), on the CPU."""
    import napari_activations as na

    return na.load_squeezenet("caffe", device="cpu")


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    """The astronaut's face (the "Face" sample): (220, 180, 3) uint8."""
    import skimage.data

    return skimage.data.astronaut()[30:250, 120:300].copy()


@pytest.fixture
def notifications(monkeypatch):
    """Messages shown as napari notifications during the test: [(severity, message)]."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []
    original = notification_manager.dispatch

    def record(notification):
        seen.append((str(notification.severity), str(notification.message)))
        return original(notification)

    monkeypatch.setattr(notification_manager, "dispatch", record)
    return seen
