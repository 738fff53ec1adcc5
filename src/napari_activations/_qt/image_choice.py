"""The main widget's input rows: the image layer, optional green and blue layers, the level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QFormLayout

from .._layer_kinds import is_derived_layer
from .._napari_layers import choose_level
from ..compute import ImageError, image_planes_shape
from .layer_choice import input_images, refill_combo

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

__all__ = ["NO_LAYER", "ImageChoice"]

NO_LAYER = "(none)"


class ImageChoice(QObject):
    """Which image layers a Run computes on (never the plugin's own results).

    :attr:`changed` is emitted when the image or its pyramid level changes, and
    :attr:`refreshed` when the choices were offered again (the viewer's layers changed).
    """

    changed = Signal()
    refreshed = Signal()

    def __init__(self, viewer: napari.Viewer, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to compute on (Image layers only).")
        self.green_combo = QComboBox()
        self.blue_combo = QComboBox()
        for combo, colour in ((self.green_combo, "green"), (self.blue_combo, "blue")):
            combo.setToolTip(
                f"Optional: a single-channel layer as the network's {colour}, with "
                "'Image' as red (e.g. channels opened with channel_axis). Each "
                "is scaled by its own contrast limits. None: 'Image' alone."
            )
        self.level_combo = QComboBox()
        self.level_combo.setToolTip(
            "For a multiscale (pyramid) image: the level to compute "
            "on. The result lies over the full-resolution image."
        )
        self.image_combo.currentIndexChanged.connect(self.refresh_levels)
        self.level_combo.currentIndexChanged.connect(self.changed)

    def add_rows(self, form: QFormLayout) -> None:
        """Put the choices in ``form`` (the widget's own, so that the columns line up)."""
        form.addRow("Image", self.image_combo)
        form.addRow("Green layer", self.green_combo)
        form.addRow("Blue layer", self.blue_combo)
        form.addRow("Pyramid level", self.level_combo)

    def _viewer_connections(self) -> list[tuple[Any, Any]]:
        layers = self.viewer.layers
        return [
            (layers.events.inserted, self._on_layers_changed),
            (layers.events.removed, self._on_layers_changed),
            (layers.events.moved, self._on_layers_changed),
            (layers.selection.events.active, self._follow_active),
        ]

    def follow_viewer(self) -> None:
        """Offer the viewer's image layers from now on, as they come, go and are renamed, and
        choose the active one; until this object (or its parent widget) is destroyed."""
        for emitter, callback in self._viewer_connections():
            emitter.connect(callback)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh)
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: self._stop_following())
        self.refresh()
        self._follow_active()

    def _stop_following(self) -> None:
        for emitter, callback in self._viewer_connections():
            emitter.disconnect(callback)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.refresh)

    def _on_layers_changed(self, event: Any = None) -> None:
        value = getattr(event, "value", None)
        if value is not None and hasattr(value, "events"):
            value.events.name.connect(self.refresh)
        self.refresh()

    def _follow_active(self, event: Any = None) -> None:
        self.follow(self.viewer.layers.selection.active)

    def refresh(self, event: Any = None) -> None:
        """Offer the viewer's image layers, keeping the current choices where they still exist."""
        names = [layer.name for layer in input_images(self.viewer)]
        refill_combo(self.image_combo, names)
        refill_combo(self.green_combo, names, first=NO_LAYER)
        refill_combo(self.blue_combo, names, first=NO_LAYER)
        self.refresh_levels()
        self.refreshed.emit()

    def refresh_levels(self, *args: Any) -> None:
        """Offer the chosen image's pyramid levels, the default one chosen (multiscale only)."""
        source = self.selected_image()
        self.level_combo.blockSignals(True)
        self.level_combo.clear()
        if source is not None and source.multiscale:
            shapes = [tuple(int(n) for n in shape) for shape in source.level_shapes]
            for level, shape in enumerate(shapes):
                _, (h, w), _ = image_planes_shape(shape, bool(source.rgb))
                self.level_combo.addItem(f"{level}: {h}×{w}", level)
            self.level_combo.setCurrentIndex(choose_level(shapes, bool(source.rgb)))
        else:
            self.level_combo.addItem("single resolution", None)
        self.level_combo.setEnabled(self.level_combo.count() > 1)
        self.level_combo.blockSignals(False)
        self.changed.emit()

    def follow(self, layer: Any) -> None:
        """Choose ``layer`` if it is an image layer on offer (the viewer's active layer)."""
        from napari.layers import Image

        if isinstance(layer, Image) and not is_derived_layer(layer):
            index = self.image_combo.findText(layer.name)
            if index >= 0:
                self.image_combo.setCurrentIndex(index)

    def selected_image(self) -> Image | None:
        """The chosen image layer, or None if there is none."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def set_channel_layers(self, green: str | None, blue: str | None = None) -> None:
        """Use these image layers as the network's green and blue ('Image' is red); None: none."""
        for combo, name in ((self.green_combo, green), (self.blue_combo, blue)):
            index = combo.findText(name if name is not None else NO_LAYER)
            if index < 0:
                raise ValueError(f"There is no image layer named {name!r}.")
            combo.setCurrentIndex(index)

    def selected_sources(self) -> list[Image | None]:
        """The chosen image layer (red), then the green and blue layers (None where none is
        chosen; trailing Nones dropped): one layer for a plain run."""
        layers = [self.selected_image()]
        for combo in (self.green_combo, self.blue_combo):
            name = combo.currentText()
            chosen = combo.currentIndex() > 0 and name in self.viewer.layers
            layers.append(self.viewer.layers[name] if chosen else None)
        while len(layers) > 1 and layers[-1] is None:
            layers.pop()
        return layers

    def planes_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the chosen image (at the chosen level), or None."""
        source = self.selected_image()
        if source is None:
            return None
        shape = source.data.shape
        if source.multiscale:
            level = self.level_combo.currentData()
            shape = source.level_shapes[level if level is not None else 0]
        try:
            _, hw, _ = image_planes_shape(tuple(shape), bool(source.rgb))
        except ImageError:
            return None
        return hw
