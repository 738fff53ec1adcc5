"""Faults: failed downloads, bad weight files in the widget, cancels, interruptions, overlapping
runs and runs larger than the machine's memory.

Already covered elsewhere, not repeated here: offline with no cache (message with the URL, the
cache path and ``NAPARI_ACTIVATIONS_WEIGHTS``), truncated, damaged, empty, other-architecture and
hostile weight files through the API (tests/test_network.py); source layer deleted and viewer
closed mid-run, plain cancel (tests/test_plugin_widget.py).
"""

from __future__ import annotations

import email.message
import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _robustness import (
    assert_error_notified,
    assert_no_traceback,
    assert_viewer_responds,
    assert_widget_ready,
    layer_fingerprint,
    model_hooks,
    record_notifications,
)

import napari_activations as na
from napari_activations import compute, network

TORCHVISION_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"


# -- downloads ------------------------------------------------------------------------------


class _BrokenStream:
    """A response that promises ``size`` bytes, delivers ``good`` of them, then drops."""

    def __init__(self, size: int, good: int, payload: bytes = b"\x50\x4b\x03\x04" + b"x" * 64):
        self.size, self.good, self.sent = size, good, 0
        self.payload = payload
        self.fail = good < size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def info(self):
        meta = email.message.Message()
        meta["Content-Length"] = str(self.size)
        return meta

    def read(self, n: int = -1) -> bytes:
        if self.sent >= self.good:
            if self.fail:
                raise ConnectionResetError("connection reset by peer (test)")
            return b""
        n = min(n if n > 0 else self.good, self.good - self.sent, 4096)
        self.sent += n
        return (self.payload * (n // len(self.payload) + 1))[:n]


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """An empty torch hub cache of this test's own, and no networks cached in memory."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(na.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(network, "_CACHE", {})
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def serve(monkeypatch, stream_factory) -> list[str]:
    calls: list[str] = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", str(request)))
        return stream_factory()

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return calls


@pytest.mark.parametrize(
    "good, size", [(300_000, 5_000_000), (0, 5_000_000)], ids=["drops midway", "drops at once"]
)
def test_download_failing_midway_leaves_nothing_in_the_cache(fresh_cache, monkeypatch, good, size):
    calls = serve(monkeypatch, lambda: _BrokenStream(size, good))
    with pytest.raises(na.WeightsUnavailableError) as err:
        na.load_squeezenet("torchvision", device="cpu", progress=False)
    message = str(err.value)
    assert calls == [TORCHVISION_URL]
    for words in (
        TORCHVISION_URL,
        str(fresh_cache / "squeezenet1_1-b8a52dc0.pth"),
        na.WEIGHTS_ENV,
        "ConnectionResetError",
    ):
        assert words in message, message
    leftovers = list(fresh_cache.iterdir()) if fresh_cache.exists() else []
    assert leftovers == []  # no .partial file, no truncated checkpoint
    # The next try starts clean: it downloads again rather than reading a broken file.
    with pytest.raises(na.WeightsUnavailableError):
        na.load_squeezenet("torchvision", device="cpu", progress=False)
    assert len(calls) == 2


def test_download_with_the_wrong_hash_leaves_nothing_in_the_cache(fresh_cache, monkeypatch):
    serve(monkeypatch, lambda: _BrokenStream(100_000, 100_000))  # complete, but not the file
    with pytest.raises(na.WeightsUnavailableError, match="hash"):
        na.load_squeezenet("torchvision", device="cpu", progress=False)
    assert not fresh_cache.exists() or list(fresh_cache.iterdir()) == []


# -- a viewer with the widget -----------------------------------------------------------------


@pytest.fixture
def gui(random_net, make_napari_viewer, monkeypatch):
    """A viewer with a 64 x 72 image and the widget on random weights; notifications recorded."""
    from napari_activations._widget import ActivationsWidget

    notifications = record_notifications(monkeypatch)
    viewer = make_napari_viewer()
    image = viewer.add_image(
        np.random.default_rng(1).random((64, 72)).astype(np.float32), name="cells"
    )
    widget = ActivationsWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, image, notifications


def run_and_wait(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    qtbot.wait(10)


def _hostile(path: Path, marker: Path, net: na.Network) -> None:
    class Hostile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = dict(net.model.state_dict())
    state["payload"] = Hostile()
    torch.save(state, path)


def _other_architecture(path: Path, net: na.Network) -> None:
    from torchvision.models import squeezenet1_0

    torch.save(squeezenet1_0(weights=None).state_dict(), path)


def _good_bytes(tmp_path: Path, net: na.Network) -> bytes:
    good = tmp_path / "good.pth"
    torch.save(net.model.state_dict(), good)
    return good.read_bytes()


BAD_FILES = {
    "truncated": (lambda p, t, n: p.write_bytes(_good_bytes(t, n)[:20_000]), "damaged"),
    "corrupted": (
        lambda p, t, n: p.write_bytes(
            bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))
        ),
        "damaged",
    ),
    "other architecture": (
        lambda p, t, n: _other_architecture(p, n),
        "not a SqueezeNet 1.1 state_dict",
    ),
    "empty": (lambda p, t, n: p.write_bytes(b""), "empty"),
    "hostile pickle": (lambda p, t, n: _hostile(p, t / "payload_ran", n), "Refused"),
}


@pytest.mark.gui
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_weights_file_in_the_widget_is_a_notification(gui, qtbot, tmp_path, random_net, kind):
    viewer, widget, image, notifications = gui
    make, words = BAD_FILES[kind]
    path = tmp_path / f"{kind.replace(' ', '_')}.pth"
    make(path, tmp_path, random_net)
    before = layer_fingerprint(image)
    widget.set_weights(path)
    run_and_wait(qtbot, widget)
    assert_error_notified(notifications, words, str(path))
    assert not (tmp_path / "payload_ran").exists()  # the pickle's code never ran
    assert list(viewer.layers) == [image]
    assert layer_fingerprint(image) == before
    assert_widget_ready(widget)
    # The widget recovers: good weights work at once.
    widget.set_network(random_net)
    run_and_wait(qtbot, widget)
    assert "cells: conv1" in viewer.layers
    assert_viewer_responds(viewer, qtbot)


@pytest.mark.gui
def test_download_failing_midway_in_the_widget(gui, qtbot, fresh_cache, monkeypatch):
    viewer, widget, image, notifications = gui
    serve(monkeypatch, lambda: _BrokenStream(5_000_000, 300_000))
    widget.set_weights("torchvision")
    run_and_wait(qtbot, widget)
    assert_error_notified(notifications, "Could not get", TORCHVISION_URL, na.WEIGHTS_ENV)
    assert not fresh_cache.exists() or list(fresh_cache.iterdir()) == []
    assert list(viewer.layers) == [image]
    assert_widget_ready(widget)


# -- cancelling ---------------------------------------------------------------------------------


@pytest.fixture
def forward_steps(monkeypatch):
    """Timestamps of every network step run (in any thread), on either backend: each block of
    torch's walk, each ONNX Runtime session run."""
    from napari_activations.backends import onnx_backend, torch_backend

    steps: list[float] = []

    def counting(original):
        def counted(*args, **kwargs):
            walk = original(*args, **kwargs)
            while True:
                try:
                    next(walk)
                except StopIteration as stop:
                    return stop.value
                steps.append(time.perf_counter())
                yield

        return counted

    monkeypatch.setattr(torch_backend, "forward", counting(torch_backend.forward))
    monkeypatch.setattr(onnx_backend.OnnxRunner, "run", counting(onnx_backend.OnnxRunner.run))
    return steps


def test_closing_the_generator_stops_the_compute(random_net, forward_steps):
    from napari_activations import backends

    image = np.random.default_rng(2).random((96, 96)).astype(np.float32)
    info = na.find_layer("fire9-concat")
    # Prepared beforehand, so that no "preparing the fast path" step comes before the compute's.
    runner = backends.prepare(random_net, info, backends.resolve_backend("auto", "cpu"))
    gen = na.iter_activations(random_net, image, "fire9-concat", resize=True)
    next(gen)  # started
    next(gen)  # one block done
    gen.close()
    assert len(forward_steps) == 1  # the block before the close, and none after it
    with pytest.raises(StopIteration):
        next(gen)
    assert len(forward_steps) == 1
    assert model_hooks(random_net) == []
    # ... and the next run is complete and right; every one of its blocks is counted, so the
    # count above saw the compute.
    full = na.activations(random_net, image, "fire9-concat")
    assert full.shape == (512, 5, 5) and np.isfinite(full).all()
    assert len(forward_steps) == 1 + runner.steps


def test_stepping_the_generator_leaves_the_callers_autograd_alone(random_net):
    """torch's inference mode is thread-local: it is on during a step, never between steps,
    and a generator dropped unfinished leaves nothing switched off."""
    image = np.zeros((40, 40), np.float32)
    gen = na.iter_activations(random_net, image, "fire2-concat")
    next(gen)
    next(gen)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    x = torch.ones(2, requires_grad=True)
    (x * 3).sum().backward()  # the caller's own autograd works between steps
    assert x.grad.tolist() == [3.0, 3.0]
    kept_unfinished = gen  # noqa: F841 - held, never closed
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


@pytest.mark.gui
@pytest.mark.parametrize("phase", ["forward pass", "resizing"])
def test_cancel_stops_promptly_adds_nothing_and_leaves_the_widget_ready(
    gui, qtbot, monkeypatch, forward_steps, phase
):
    viewer, widget, image, notifications = gui
    viewer.layers.remove(image)
    image = viewer.add_image(
        np.random.default_rng(3).random((160, 150)).astype(np.float32), name="big cells"
    )
    before = layer_fingerprint(image)
    widget.set_network_layer("fire9-concat")
    cancelled_at: list[float] = []
    if phase == "resizing":
        # Cancel while the input is being resized for input_scale (the step before conv1).
        widget.scale_spin.setValue(2.0)
        resizing = threading.Event()
        original = compute.plane_tensor

        def slow_resize(plane, colour, bounds, net, size, **kw):
            if tuple(size) != tuple(np.shape(plane)[:2]):
                resizing.set()
                time.sleep(0.5)
            return original(plane, colour, bounds, net, size, **kw)

        monkeypatch.setattr(compute, "plane_tensor", slow_resize)
        widget.run()
        worker = widget.worker
        qtbot.waitUntil(resizing.is_set, timeout=10_000)
        cancelled_at.append(time.perf_counter())
        widget.cancel()
    else:
        widget.run()
        worker = widget.worker

        def cancel_at_first_step(_):
            if not cancelled_at:
                cancelled_at.append(time.perf_counter())
                widget.cancel()

        worker.yielded.connect(cancel_at_first_step)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    qtbot.wait(10)
    assert cancelled_at
    after_cancel = [t for t in forward_steps if t > cancelled_at[0]]
    # Of 13 blocks, at most the one running and the next: it stopped at once (how soon in
    # seconds: benchmarks/bench_responsiveness.py).
    assert len(after_cancel) <= 2, len(after_cancel)
    assert list(viewer.layers) == [image]
    assert layer_fingerprint(image) == before
    assert any("cancelled" in m for _, _, m in notifications)
    assert_no_traceback(notifications)
    assert_widget_ready(widget)
    assert_viewer_responds(viewer, qtbot)


# -- interruptions and overlapping runs ---------------------------------------------------------


def run_interrupted(qtbot, widget, network_layer: str, interrupt) -> list:
    """Run, call ``interrupt()`` once at the first progress step, wait for the end.

    Returns ``[what interrupt returned]``, or ``[]`` if it never ran. The test's slots are
    connected before the worker starts: a quick run can step and finish in its thread before
    ``widget.run()`` returns, and a signal emitted before a connection never reaches it.
    """
    from napari_activations._qt.worker import BackgroundRun

    done: list = []
    finished: list = []

    def once(_):
        if not done:
            done.append(interrupt())

    start = BackgroundRun.start

    def start_observed(run):
        run.worker.yielded.connect(once)
        run.worker.finished.connect(lambda: finished.append(True))
        return start(run)

    widget.set_network_layer(network_layer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BackgroundRun, "start", start_observed)
        widget.run()
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    qtbot.wait(10)
    return done


@pytest.mark.gui
def test_source_replaced_by_a_namesake_mid_run_gets_nothing(gui, qtbot):
    """Deleted mid-run and a new layer of the same name added: the stale result is dropped."""
    viewer, widget, image, notifications = gui

    def swap():
        viewer.layers.remove(image)
        return viewer.add_image(np.zeros((30, 30), np.float32), name="cells")

    assert run_interrupted(qtbot, widget, "fire9-concat", swap)
    assert [layer.name for layer in viewer.layers] == ["cells"]
    assert_no_traceback(notifications)
    assert_widget_ready(widget)


@pytest.mark.gui
def test_a_deleted_image_is_freed_after_widget_runs(gui, qtbot):
    """Finished runs let go of their image: napari keeps every finished worker (its task
    list), so a run that held its source would keep a deleted image in memory."""
    import weakref

    viewer, widget, _, _ = gui
    big = viewer.add_image(np.random.default_rng(6).random((50, 60)).astype(np.float32), name="big")
    data = weakref.ref(big.data)
    layer = weakref.ref(big)
    for network_layer in ("conv1", "pool1"):
        widget.set_network_layer(network_layer)
        run_and_wait(qtbot, widget)
    for name in ("big: conv1", "big: pool1", "big"):
        viewer.layers.remove(name)
    del big
    qtbot.wait(10)
    gc.collect()
    assert layer() is None and data() is None


@pytest.mark.gui
def test_second_run_while_busy_is_ignored_and_one_layer_results(gui, qtbot, random_net):
    viewer, widget, image, notifications = gui
    widget.run()
    first = widget.worker
    widget.set_network_layer("pool1")
    widget.run()  # the Run button is disabled while busy; a call does nothing
    assert widget.worker is first
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    qtbot.wait(10)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells: conv1"]
    layer = viewer.layers["cells: conv1"]
    expected = na.activations(
        random_net, image.data, "conv1", intensity_range=tuple(image.contrast_limits)
    )
    np.testing.assert_allclose(layer.data.native, expected, rtol=1e-5, atol=1e-6)
    assert_no_traceback(notifications)


@pytest.mark.gui
def test_overlapping_runs_on_one_layer_are_never_interleaved(gui, qtbot, random_net):
    """A widget run in flight and a console run on the same image and layer: the run started
    last is what stays, whole (data, geometry, metadata and contrast of one run)."""
    viewer, widget, image, notifications = gui
    assert run_interrupted(
        qtbot,
        widget,
        "fire9-concat",
        lambda: na.show_activations(
            viewer, image, "fire9-concat", network=random_net, input_scale=2.0
        ),
    )
    layers = [layer for layer in viewer.layers if layer.name == "cells: fire9-concat"]
    assert len(layers) == 1
    layer = layers[0]
    meta = layer.metadata["napari_activations"]
    native = layer.data.native
    # One run's data, metadata and contrast together ...
    assert list(native.shape) == meta["geometry"]["native_shape"]
    assert native.shape == (512,) + na.output_size(
        "fire9-concat", 64 * meta["input_scale"], 72 * meta["input_scale"]
    )
    strongest = int(native.reshape(512, -1).max(axis=1).argmax())
    viewer.dims.set_current_step(0, strongest)
    assert layer.contrast_limits[1] == pytest.approx(float(native[strongest].max()), rel=1e-5)
    # ... and that run is the one started last: the console's.
    assert meta["input_scale"] == 2.0
    assert_no_traceback(notifications)
    assert_widget_ready(widget)


# -- more memory than the machine has ---------------------------------------------------------


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_conv1_of_a_40000_square_image_is_refused_before_allocating(random_net, forward_steps):
    image = np.broadcast_to(np.zeros(1, np.uint8), (40000, 40000))  # 1.6 GB, but takes 1 byte
    rss = _rss()
    with pytest.raises(na.ImageError) as err:
        na.activations(random_net, image, "conv1", resize=True)
    assert forward_steps == []  # refused before the network ran
    assert _rss() - rss < 200 * 2**20
    message = str(err.value)
    for words in ("conv1", "GiB", "memory free", "input_scale", "smaller region", "dask"):
        assert words in message, message
    assert model_hooks(random_net) == []


def test_a_huge_dask_image_stays_lazy(random_net, forward_steps):
    import dask.array as da

    image = da.zeros((40000, 40000), dtype=np.uint8, chunks=(4000, 4000))
    out = na.activations(random_net, image, "conv1")
    assert out.shape == (64, 19999, 19999) and type(out).__module__.startswith("dask")
    assert forward_steps == []
    corner = np.asarray(out[:, :3, :3])  # computing a corner runs one chunk, not the image
    assert corner.shape == (64, 3, 3) and np.isfinite(corner).all()
    # On the image's grid a whole plane must exist at once: refused, with the same advice.
    with pytest.raises(na.ImageError, match="input_scale"):
        na.activations(random_net, image, "conv1", resize=True)


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with ``value[0]`` bytes of memory free."""
    free = [8 * 2**20]
    monkeypatch.setattr(compute, "_available_memory", lambda: free[0])
    return free


def test_the_suggested_input_scale_fits(random_net, little_memory):
    image = np.random.default_rng(4).random((300, 300)).astype(np.float32)
    with pytest.raises(na.ImageError) as err:
        na.activations(random_net, image, "conv1", resize=True)
    import re

    scale = float(re.search(r"input_scale \(e\.g\. ([0-9.]+)\)", str(err.value)).group(1))
    assert 0 < scale < 1
    out = na.activations(random_net, image, "conv1", resize=True, input_scale=scale)
    assert out.shape == (64, 300, 300)


def test_a_stack_is_refused_eagerly_but_shown_lazily(random_net, little_memory):
    stack = np.random.default_rng(5).random((40, 100, 100)).astype(np.float32)
    little_memory[0] = 10 * 2**20  # a plane of conv1 takes 2.4 MiB: 4 fit, 40 do not
    with pytest.raises(na.ImageError, match="40 planes"):
        na.activations(random_net, stack, "conv1")
    lazy = na.activations(random_net, stack, "conv1", resize=True)  # holds 4 planes at most
    assert lazy.shape == (40, 64, 100, 100)
    assert np.isfinite(lazy[7, 3]).all()


def test_memory_check_is_skipped_without_psutil(random_net, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("no psutil here (test)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    assert compute._available_memory() is None
    out = na.activations(random_net, np.zeros((20, 20), np.float32), "conv1")
    assert out.shape == (64, 9, 9)


@pytest.mark.gui
def test_too_big_for_memory_in_the_widget(gui, qtbot, little_memory):
    viewer, widget, image, notifications = gui
    little_memory[0] = 256 * 2**10  # conv1 of 64 x 72 needs about 1 MiB
    before = layer_fingerprint(image)
    run_and_wait(qtbot, widget)
    assert_error_notified(notifications, "memory free", "input_scale")
    assert list(viewer.layers) == [image]
    assert layer_fingerprint(image) == before
    assert_widget_ready(widget)
