"""napari's 3D view of a stack's activations: how long one channel move takes.

A ``(60, 256, 256)`` uint8 gray stack (synthetic nuclei: bright blurred balls on a dark,
noisy background) is shown in a real viewer, and ``na.show_activations`` adds SqueezeNet
v1.1's ``fire5-concat`` activations over it, resized onto the image grid (the plugin's
display: a lazy ``(256, 60, 256, 256)`` float32 napari layer). With ``viewer.dims.ndisplay =
3`` the channel slider is moved to ``--moves`` channels never shown before, and each move is
timed from ``viewer.dims.set_current_step`` until the new channel's whole volume is in the
napari layer and the canvas has drawn it:

- napari slices the layer synchronously on the slider's event: our lazy stack computes the
  channel's ``(60, 256, 256)`` volume (forward passes where planes are not cached, the resize
  of each plane's one channel), and the contrast limits follow the channel;
- then ``viewer.screenshot(canvas_only=True)`` renders the canvas: vispy uploads the new
  3D texture (60 x 256 x 256 float32, 15 MiB) and draws the volume, and reads the frame
  back (the readback is in every figure; the "draw only" row shows a screenshot with no
  move before it).

The peer, moved in the same run (interleaved, in a second viewer of the same size): a plain
napari Image layer holding the same values already computed, a numpy ``(moves, 60, 256,
256)`` float32 array of the channels the benchmark moves to, with the same contrast limits
per channel. Its move is napari's own cost for slicing and uploading a volume of that size:
the floor under ours.

Random weights (timing does not depend on them), on the CPU, the default backend. Run from
the repository root::

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python benchmarks/bench_3d.py

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch  # noqa: F401 - before any viewer: torchvision after an OpenGL context crashes here
import torchvision  # noqa: F401

import napari_activations as na

LAYER = "fire5-concat"


def nuclei_stack(shape: tuple[int, int, int] = (60, 256, 256), seed: int = 0) -> np.ndarray:
    """A ``(Z, Y, X)`` uint8 stack of blurred bright balls (nuclei) on a dark noisy ground."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.float32)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(60):
        z, y, x = rng.uniform(0, 1, 3) * shape
        r = rng.uniform(6, 14)
        ball = ((zz - z) / 0.6) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        out[ball] = rng.uniform(0.5, 1.0)
    out = ndimage.gaussian_filter(out, 2.0) + rng.normal(0.05, 0.02, shape)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def move_and_draw(viewer, axis: int, channel: int, layer) -> tuple[float, float]:
    """Move ``axis`` to ``channel`` and render: (seconds until sliced, seconds until drawn)."""
    start = time.perf_counter()
    viewer.dims.set_current_step(axis, channel)
    sliced = time.perf_counter()
    viewer.screenshot(canvas_only=True)
    drawn = time.perf_counter()
    return sliced - start, drawn - start


def gl_renderer(viewer) -> str:
    """The OpenGL renderer drawing the viewer's canvas (e.g. ``llvmpipe``: the CPU draws)."""
    from vispy.gloo import gl

    viewer.window._qt_viewer.canvas._scene_canvas.set_current()
    return str(gl.glGetParameter(gl.GL_RENDERER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=8, help="channel moves timed")
    parser.add_argument("--depth", type=int, default=60, help="planes in the stack")
    parser.add_argument("--size", type=int, default=256, help="height and width of a plane")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import napari
    from qtpy.QtGui import QGuiApplication

    net = na.load_squeezenet(None, device="cpu")  # timing does not depend on the weights
    stack = nuclei_stack((args.depth, args.size, args.size))

    viewer = napari.Viewer()
    viewer.window.resize(1000, 800)
    viewer.add_image(stack, name="nuclei")
    start = time.perf_counter()
    layer = na.show_activations(viewer, "nuclei", LAYER, network=net)
    shown = time.perf_counter() - start
    native = layer.data.native
    counted = hasattr(native, "forward_passes")
    passes_before = native.forward_passes if counted else None
    viewer.dims.ndisplay = 3
    axis = viewer.dims.ndim - layer.ndim  # the activation layer's channel axis
    start = time.perf_counter()
    viewer.screenshot(canvas_only=True)  # the first 3D draw: the whole volume, once
    first_3d = time.perf_counter() - start
    passes_first = native.forward_passes - passes_before if counted else None

    n_channels = layer.data.shape[0]
    shown_channel = int(viewer.dims.current_step[axis])
    rng = np.random.default_rng(1)
    others = [c for c in range(n_channels) if c != shown_channel]
    channels = [int(c) for c in rng.choice(others, args.moves + 1, replace=False)]

    # The peer: the same values as a plain numpy array, in a viewer of its own, with the same
    # contrast limits per channel. Moving ours to these channels first gives their limits;
    # ours is then timed on other channels, never shown before.
    values = np.stack([np.asarray(layer.data[c]) for c in channels])
    peer_limits = []
    for c in channels:
        viewer.dims.set_current_step(axis, c)
        peer_limits.append(tuple(layer.contrast_limits))
    peer_viewer = napari.Viewer()
    peer_viewer.window.resize(1000, 800)
    peer_viewer.add_image(stack, name="nuclei")  # the same scene: the image under the volume
    peer = peer_viewer.add_image(values, name="peer", colormap=layer.colormap)
    peer_viewer.dims.ndisplay = 3
    peer_viewer.screenshot(canvas_only=True)

    def follow(event=None) -> None:
        peer.contrast_limits = peer_limits[peer_viewer.dims.current_step[0]]

    peer_viewer.dims.events.current_step.connect(follow)
    follow()
    unseen = [c for c in others if c not in channels]
    channels_ours = [int(c) for c in rng.choice(unseen, args.moves + 1, replace=False)]

    ours, ours_sliced, floor, floor_sliced, draw_only = [], [], [], [], []
    passes_start = native.forward_passes if counted else None
    for k in range(args.moves + 1):
        s, d = move_and_draw(viewer, axis, channels_ours[k], layer)
        ps, pd = move_and_draw(peer_viewer, 0, (k + 1) % len(channels), peer)
        start = time.perf_counter()
        viewer.screenshot(canvas_only=True)
        draw = time.perf_counter() - start
        if k:  # the first move of each is warm-up
            ours.append(d)
            ours_sliced.append(s)
            floor.append(pd)
            floor_sliced.append(ps)
            draw_only.append(draw)
    passes_moves = native.forward_passes - passes_start if counted else None
    canvas = "x".join(str(n) for n in viewer.window._qt_viewer.canvas.size)
    renderer = gl_renderer(viewer)
    viewer.close()
    peer_viewer.close()

    load = os.getloadavg()
    ms = 1e3
    med = statistics.median
    lines = [
        f"{os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; napari {napari.__version__}; load average at the end {load[0]:.1f}",
        f"input: ({args.depth}, {args.size}, {args.size}) uint8 nuclei stack, {LAYER}, "
        f"resize=True, backend {layer.data.stack.backend}; canvas "
        f"{canvas} pixels, OpenGL renderer {renderer!r} (Qt platform "
        f"{QGuiApplication.platformName()})",
        f"show_activations (first plane, stack contrast sample): {shown:.2f} s; first 3D draw "
        f"{first_3d:.2f} s ({passes_first} forward passes)",
        f"forward passes during the {args.moves + 1} timed moves: {passes_moves}",
        "",
        "| what (median of moves) | ours | peer (numpy layer) | ratio |",
        "|---|---:|---:|---:|",
        f"| channel move until drawn ({args.moves} moves) | {med(ours) * ms:.0f} ms "
        f"(max {max(ours) * ms:.0f}) | {med(floor) * ms:.0f} ms | {med(ours) / med(floor):.2f} |",
        f"| of which the slice (set_current_step returns) | {med(ours_sliced) * ms:.0f} ms | "
        f"{med(floor_sliced) * ms:.0f} ms | {med(ours_sliced) / med(floor_sliced):.2f} |",
        f"| draw only (screenshot, no move) | {med(draw_only) * ms:.0f} ms | | |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
