"""The "Export…" row of the activations widget: save the selected activation layer.

It asks for a folder (starting in the one used last, remembered across napari launches),
then runs :func:`~napari_activations._napari_export.iter_export_activation_layer` in a
napari worker with a progress bar (:class:`~napari_activations._qt.worker.BackgroundRun`);
the button cancels while it runs. Errors meant for users
(:class:`~napari_activations.export.ExportError`) are shown as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from ._napari_export import iter_export_activation_layer, layer_activations
from ._plugin_settings import EXPORT_FOLDER, remember, remembered
from ._qt.worker import BackgroundRun
from .export import ExportError

if TYPE_CHECKING:
    import napari

__all__ = ["ExportRow"]

EXPORT_CHOICES = {
    "aligned stack": ("aligned",),
    "native maps": ("native",),
    "both": ("aligned", "native"),
}


class ExportRow(QWidget):
    """A kind chooser and an "Export…" button for the viewer's selected activation layer."""

    def __init__(self, viewer: napari.Viewer):
        super().__init__()
        self.viewer = viewer
        self._run: BackgroundRun | None = None
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
        # Closed with its widget mid-export: stop, remove the half-written image, touch nothing.
        # A lambda, not a method: it must run while the row is being destroyed.
        self.destroyed.connect(lambda *_: self._run is not None and self._run.detach())
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.kind_combo)
        row.addWidget(self.button)

    @property
    def busy(self) -> bool:
        return self._run is not None

    @property
    def worker(self) -> Any:
        """The running napari worker, or None when ready."""
        return self._run.worker if self._run is not None else None

    def on_click(self) -> None:
        if self._run is not None:
            self._run.cancel()
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
        if self._run is not None:
            from napari.utils.notifications import show_error

            show_error("An export is running: wait for it, or cancel it, first.")
            return
        remember(EXPORT_FOLDER, folder)
        kinds = kinds or self.kind_combo.currentData()
        self._run = BackgroundRun(
            iter_export_activation_layer(layer, folder, kinds),
            on_result=_saved,
            # The run closes the stopped generator at once, which removes the half-written image.
            on_cancelled=_cancelled,
            on_end=self._on_end,
            description=f"Exporting {layer.name!r}",
        )
        self.button.setText("Cancel export")
        self._run.start()

    def _on_end(self) -> None:
        self._run = None
        self.button.setText("Export…")


def _saved(paths: list[Path]) -> None:
    from napari.utils.notifications import show_info

    show_info("Saved " + ", ".join(str(p) for p in paths))


def _cancelled() -> None:
    from napari.utils.notifications import show_info

    show_info("Export cancelled: the half-written image was removed.")
