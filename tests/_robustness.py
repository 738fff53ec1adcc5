"""Helpers shared by the robustness tests: layer fingerprints, notifications, responsiveness."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

import napari_activations as na


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
        for item in obj:
            _feed(h, item)
    elif type(obj).__module__.startswith("dask"):
        h.update(repr((obj.shape, obj.dtype.str, obj.chunks, obj.name)).encode())
        _feed(h, np.asarray(obj.compute()))
    elif hasattr(obj, "__len__") and type(obj).__name__ == "MultiScaleData":
        _feed(h, [obj[i] for i in range(len(obj))])
    elif isinstance(obj, np.ndarray):
        h.update(
            repr(
                (
                    obj.shape,
                    obj.dtype.str,
                    obj.strides,
                    obj.flags.writeable,
                    obj.flags.c_contiguous,
                    obj.flags.f_contiguous,
                )
            ).encode()
        )
        # Broadcast axes (stride 0) hold one value: hash that, not a 40000 x 40000 expansion.
        core = obj[tuple(slice(0, 1) if st == 0 else slice(None) for st in obj.strides)]
        h.update(np.ascontiguousarray(core).tobytes())
    else:
        h.update(repr(obj).encode())


def data_digest(data: Any) -> str:
    """SHA-256 of an array's bytes and layout (dtype with byte order, shape, strides, flags)."""
    h = hashlib.sha256()
    _feed(h, data)
    return h.hexdigest()


def layer_fingerprint(layer: Any) -> dict[str, Any]:
    """Everything a computation must leave alone: data bytes, geometry, display, metadata."""
    props = {
        # Image layers hand out the very array they hold; others build their data on access.
        "data_id": id(layer.data) if type(layer).__name__ == "Image" else None,
        "data": data_digest(layer.data),
        "name": layer.name,
        "type": type(layer).__name__,
        "metadata": repr(layer.metadata),
        "visible": layer.visible,
        "opacity": layer.opacity,
        "blending": layer.blending,
    }
    for key in ("scale", "translate", "rotate", "shear"):
        props[key] = np.asarray(getattr(layer, key), dtype=float).tobytes()
    props["affine"] = np.asarray(layer.affine.affine_matrix, dtype=float).tobytes()
    for key in ("contrast_limits", "contrast_limits_range", "gamma", "rgb", "multiscale"):
        if hasattr(layer, key):
            props[key] = repr(getattr(layer, key))
    if hasattr(layer, "colormap") and hasattr(layer.colormap, "name"):
        props["colormap"] = layer.colormap.name
    return props


def model_hooks(net: na.Network) -> list[str]:
    """Modules of the network that carry any forward or backward hook, plus global hooks."""
    import torch.nn.modules.module as mm

    found = []
    for name, module in net.model.named_modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
        ):
            if getattr(module, attr, None):
                found.append(f"{name or 'model'}.{attr}")
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        if getattr(mm, attr, None):
            found.append(attr)
    return found


def oracle_input(data: Any, intensity_range: tuple[float, float] | None, rgb: bool) -> np.ndarray:
    """The image as the documented preprocessing maps it to [0, 1], written independently.

    uint8 by 0..255, bool as 0/1, other dtypes by their finite min and max (RGB channels only),
    or by ``intensity_range``; clipped; NaN counts as low; a zero range gives zeros.
    """
    a = np.asarray(data.compute() if hasattr(data, "compute") else data)
    uint8 = a.dtype == np.uint8
    if rgb:
        a = a[..., :3]
    a = a.astype(np.float64)
    if intensity_range is not None:
        low, high = (float(v) for v in intensity_range)
    elif uint8:
        low, high = 0.0, 255.0
    else:
        finite = a[np.isfinite(a)]
        low, high = float(finite.min()), float(finite.max())
    with np.errstate(invalid="ignore", over="ignore"):
        out = (a - low) / (high - low) if high > low else np.zeros_like(a)
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return out.astype(np.float32)


def record_notifications(monkeypatch: Any) -> list[tuple[str, str, str]]:
    """Notifications shown during a test: ``[(class name, severity, message)]``.

    ``ErrorNotification`` is what napari makes from an uncaught exception (the one with a
    traceback button); a refusal written for users is a plain ``Notification``.
    """
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str, str]] = []
    original = notification_manager.dispatch

    def record(notification):
        seen.append(
            (type(notification).__name__, str(notification.severity), str(notification.message))
        )
        return original(notification)

    monkeypatch.setattr(notification_manager, "dispatch", record)
    return seen


def assert_no_traceback(notifications: list[tuple[str, str, str]]) -> None:
    crashes = [n for n in notifications if n[0] in ("ErrorNotification", "WarningNotification")]
    assert not crashes, crashes


def assert_error_notified(notifications: list[tuple[str, str, str]], *words: str) -> None:
    """The last error notification is a plain one (no traceback) that names ``words``."""
    assert_no_traceback(notifications)
    errors = [m for _, severity, m in notifications if "error" in severity.lower()]
    assert errors, notifications
    missing = [w for w in words if w.lower() not in errors[-1].lower()]
    assert not missing, (missing, errors[-1])


def assert_widget_ready(widget: Any) -> None:
    assert not widget.busy
    assert widget.worker is None
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    status = widget.status_label.text()
    assert "Computing" not in status and "Cancelling" not in status, status


def assert_viewer_responds(viewer: Any, qtbot: Any = None) -> None:
    """The viewer still works: it takes a layer and moves its sliders; with Qt, its event
    loop runs (a timer fires) and the canvas draws."""
    if qtbot is None:
        probe = viewer.add_image(np.zeros((8, 8), dtype=np.float32), name="responsiveness probe")
        viewer.layers.remove(probe)
        assert "responsiveness probe" not in viewer.layers
    if viewer.dims.ndim:
        viewer.dims.set_current_step(0, 0)
    viewer.reset_view()
    if qtbot is not None:
        from qtpy.QtCore import QTimer

        fired: list[bool] = []
        QTimer.singleShot(0, lambda: fired.append(True))
        qtbot.waitUntil(lambda: bool(fired), timeout=2_000)
