"""The "Export…" row of the activations widget: save the selected activation layer.

It asks for a folder (starting in the one used last, remembered across napari launches),
then runs :func:`~napari_activations._napari_export.iter_export_activation_layer` in a
napari worker with a progress bar; the button cancels while it runs. Errors meant for users
(:class:`~napari_activations.export.ExportError`) are shown as they are.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from ._napari_export import iter_export_activation_layer, layer_activations
from ._plugin_settings import EXPORT_FOLDER, remember, remembered
from .compute import Progress
from .export import ExportError

if TYPE_CHECKING:
    import napari

__all__ = ["ExportRow"]

EXPORT_CHOICES = {
    "aligned stack": ("aligned",),
    "native maps": ("native",),
    "both": ("aligned", "native"),
}


def _guarded(gen: Generator) -> Generator[Progress, None, list[Path] | str]:
    """Run ``gen``; an :class:`ExportError` becomes its message, returned."""
    try:
        return (yield from gen)
    except ExportError as exc:
        return str(exc)


class ExportRow(QWidget):
    """A kind chooser and an "Export…" button for the viewer's selected activation layer."""

    def __init__(self, viewer: napari.Viewer):
        super().__init__()
        self.viewer = viewer
        self.worker: Any = None
        self._progress: Any = None
        self._gen: Generator | None = None
        self.kind_combo = QComboBox()
        for text, kinds in EXPORT_CHOICES.items():
            self.kind_combo.addItem(text, kinds)
        self.kind_combo.setToolTip(
            "aligned stack: the values napari shows, on the image's pixels; native maps: the "
            "network's own resolution, placed over the image. Saved as OME-Zarr with the "
            "layer's metadata."
        )
        self.button = QPushButton("Export…")
        self.button.setToolTip("Save the selected activation layer as OME-Zarr in a folder.")
        self.button.clicked.connect(self.on_click)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.kind_combo)
        row.addWidget(self.button)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def on_click(self) -> None:
        if self.busy:
            self.worker.quit()
            self.button.setText("Cancelling…")
            return
        from napari.utils.notifications import show_error

        layer = self.viewer.layers.selection.active
        try:
            if layer is None:
                raise ExportError(
                    "Select an activation layer (e.g. 'Face: conv1') in the "
                    "layer list, then export it."
                )
            layer_activations(layer)
        except ExportError as exc:
            show_error(str(exc))
            return
        start = remembered(EXPORT_FOLDER)
        folder = QFileDialog.getExistingDirectory(
            self,
            f"Export {layer.name!r} to a folder",
            start if start and Path(start).is_dir() else str(Path.home()),
        )
        if folder:
            self.export(layer, folder)

    def export(self, layer: Any, folder: str, kinds: tuple[str, ...] | None = None) -> None:
        """Save ``layer`` in ``folder`` in a worker (``kinds`` default: the chooser's)."""
        from napari.qt.threading import create_worker

        remember(EXPORT_FOLDER, folder)
        kinds = kinds or self.kind_combo.currentData()
        gen = self._gen = iter_export_activation_layer(layer, folder, kinds)
        worker = create_worker(_guarded, gen, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.button.setText("Cancel export")
        worker.start()

    def _on_progress(self, step: Progress) -> None:
        from napari.utils import progress

        if self.worker is None:
            return
        bar = self._progress
        if bar is None:
            # Creating the bar processes Qt events, "finished" included: check again after.
            bar = progress(total=step.total, desc=step.message)
            if self.worker is None:
                bar.close()
                return
            self._progress = bar
        bar.set_description(step.message)
        bar.update(step.done - bar.n)

    def _on_returned(self, result: list[Path] | str) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(result, str):
            show_error(result)
        else:
            show_info("Saved " + ", ".join(str(p) for p in result))

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        # The worker stops between two blocks and keeps its generator: close it now, so that
        # the half-written image is removed at once, not whenever the worker is collected.
        if self._gen is not None:
            self._gen.close()
        show_info("Export cancelled: the half-written image was removed.")

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.worker = None
        self._gen = None
        self.button.setText("Export…")
