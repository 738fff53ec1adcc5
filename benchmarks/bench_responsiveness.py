"""Responsiveness: how long the plugin keeps a user waiting, against peers timed in the same run.

The robustness tests check what happens (runs finish, a cancel stops the compute within two
network blocks, a too-large image is refused before anything is allocated); how fast it
happens is measured here, on a machine whose load the tests cannot know:

- **runs in one viewer**: ``--runs`` runs through the *SqueezeNet activations* widget in a real
  viewer (three small images: gray 40x48, RGB 36x40, a 3-plane stack 3x32x36; five network
  layers from conv1 to pool3, as ``tests/test_endurance.py``), each against the same
  computation by ``na.activations`` without a viewer (interleaved). Reports the median time
  per run of each and their ratio (the widget's overhead: worker thread, napari layer
  update), and the event loop's heartbeat: a 20 ms ``QTimer`` runs throughout; its longest gap
  is the longest time the GUI was blocked.
- **cancel**: a widget run of ``fire9-concat`` on a 160x150 image, cancelled at its first
  progress step: the time from ``cancel()`` to the worker's end, against the time of the
  whole run uncancelled (median of ``--repeats``).
- **refusals**: a 40000x40000 uint8 image (broadcast, one byte of memory) refused for conv1
  on the image grid (it would need ~96 GiB), by ``na.activations`` and by
  ``na.show_activations``, against ``na.activations`` of conv1 on a 64x64 image (the
  cheapest real run); and a 12x12 image refused for fire9-concat (too small).

Random weights (timing does not depend on them), on the CPU. Run from the repository root::

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python benchmarks/bench_responsiveness.py

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch  # noqa: F401 - before any viewer: torchvision after an OpenGL context crashes here
import torchvision  # noqa: F401

import napari_activations as na

NETWORK_LAYERS = ["conv1", "pool1", "fire2-relu_squeeze1x1", "fire3-concat", "pool3"]


def wait_until(app, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.001)


def widget_run(app, widget) -> float:
    start = time.perf_counter()
    widget.run()
    wait_until(app, lambda: not widget.busy)
    return time.perf_counter() - start


def bench_runs(app, viewer, widget, net, runs: int) -> dict:
    from qtpy.QtCore import QTimer

    rng = np.random.default_rng(7)
    images = [
        viewer.add_image(rng.random((40, 48)).astype(np.float32), name="gray"),
        viewer.add_image(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8), name="rgb"),
        viewer.add_image(rng.random((3, 32, 36)), name="stack"),
    ]
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(20)
    ours, direct = [], []
    for i in range(runs):
        source = images[i % len(images)]
        layer = NETWORK_LAYERS[(i // len(images)) % len(NETWORK_LAYERS)]
        viewer.layers.selection.active = source
        widget.set_network_layer(layer)
        ours.append(widget_run(app, widget))
        # The same request as the widget's: the layer's contrast limits as intensity range.
        start = time.perf_counter()
        na.activations(
            net,
            source.data,
            layer,
            resize=True,
            intensity_range=tuple(source.contrast_limits),
            rgb=source.rgb,
        )
        direct.append(time.perf_counter() - start)
        app.processEvents()
    timer.stop()
    gaps = np.diff(beats)
    return {
        "widget": statistics.median(ours),
        "direct": statistics.median(direct),
        "widget_max": max(ours),
        "gap_max": float(gaps.max()),
        "gap_p99": float(np.percentile(gaps, 99)),
    }


def bench_cancel(app, viewer, widget, repeats: int) -> dict:
    image = viewer.add_image(
        np.random.default_rng(3).random((160, 150)).astype(np.float32), name="big cells"
    )
    viewer.layers.selection.active = image
    widget.set_network_layer("fire9-concat")
    latencies, whole = [], []
    for _ in range(repeats):
        whole.append(widget_run(app, widget))
        viewer.layers.remove("big cells: fire9-concat")
        cancelled: list[float] = []
        widget.run()

        def cancel_at_first_step(_):
            if not cancelled:
                cancelled.append(time.perf_counter())
                widget.cancel()

        widget.worker.yielded.connect(cancel_at_first_step)
        wait_until(app, lambda: not widget.busy)
        latencies.append(time.perf_counter() - cancelled[0])
        assert "big cells: fire9-concat" not in viewer.layers
    return {
        "latency": statistics.median(latencies),
        "latency_max": max(latencies),
        "whole": statistics.median(whole),
    }


def timed(fn: Callable[[], object], repeats: int, refused: type[Exception] | None = None) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            if refused is None or not isinstance(exc, refused):
                raise
        else:
            if refused is not None:
                raise AssertionError("expected a refusal")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_refusals(net, repeats: int) -> dict:
    from napari.components import ViewerModel

    huge = np.broadcast_to(np.zeros(1, np.uint8), (40000, 40000))
    model = ViewerModel()
    model.add_image(huge, name="huge", contrast_limits=(0, 255))
    small = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    tiny = np.zeros((12, 12), np.float32)
    return {
        "peer": timed(lambda: na.activations(net, small, "conv1"), repeats),
        "huge": timed(
            lambda: na.activations(net, huge, "conv1", resize=True), repeats, na.ImageError
        ),
        "huge_layer": timed(
            lambda: na.show_activations(model, "huge", "conv1", network=net), repeats, na.ImageError
        ),
        "tiny": timed(lambda: na.activations(net, tiny, "fire9-concat"), repeats, na.ImageError),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="widget runs (after 6 warm-up)")
    parser.add_argument("--repeats", type=int, default=5, help="cancels and refusals")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    net = na.load_squeezenet(None, device="cpu")  # timing does not depend on the weights
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_activations._widget import ActivationsWidget

    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    widget = ActivationsWidget(viewer, network=net)
    viewer.window.add_dock_widget(widget)

    bench_runs(app, viewer, widget, net, 6)  # warm-up: first layers, first worker thread
    runs = bench_runs(app, viewer, widget, net, args.runs)
    cancel = bench_cancel(app, viewer, widget, args.repeats)
    refusals = bench_refusals(net, args.repeats)
    viewer.close()

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    ms = 1e3
    lines = [
        f"{os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; napari {napari.__version__}"
        + (f"; load average at the end {load[0]:.1f}" if load else ""),
        "",
        "| what | measured | peer | ratio |",
        "|---|---:|---:|---:|",
        f"| run in the widget vs `na.activations` ({args.runs} runs, median) | "
        f"{runs['widget'] * ms:.1f} ms (max {runs['widget_max'] * ms:.0f} ms) | "
        f"{runs['direct'] * ms:.1f} ms | {runs['widget'] / runs['direct']:.2f} |",
        f"| GUI heartbeat (20 ms timer): longest gap, 99th percentile | "
        f"{runs['gap_max'] * ms:.0f} ms, {runs['gap_p99'] * ms:.0f} ms | 20 ms | "
        f"{runs['gap_max'] / 0.020:.1f} |",
        f"| cancel to worker end vs whole run (fire9-concat, 160x150) | "
        f"{cancel['latency'] * ms:.1f} ms (max {cancel['latency_max'] * ms:.0f} ms) | "
        f"{cancel['whole'] * ms:.1f} ms | {cancel['latency'] / cancel['whole']:.2f} |",
        f"| 40000² refused, `na.activations` vs conv1 of 64x64 | {refusals['huge'] * ms:.1f} ms"
        f" | {refusals['peer'] * ms:.1f} ms | {refusals['huge'] / refusals['peer']:.2f} |",
        f"| 40000² refused, `na.show_activations` vs conv1 of 64x64 | "
        f"{refusals['huge_layer'] * ms:.1f} ms | {refusals['peer'] * ms:.1f} ms | "
        f"{refusals['huge_layer'] / refusals['peer']:.2f} |",
        f"| 12x12 refused for fire9-concat vs conv1 of 64x64 | {refusals['tiny'] * ms:.2f} ms"
        f" | {refusals['peer'] * ms:.1f} ms | {refusals['tiny'] / refusals['peer']:.2f} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
