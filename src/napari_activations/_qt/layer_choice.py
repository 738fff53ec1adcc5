"""Which napari layers the widgets offer: the user's images, never the plugin's own results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox

from .._layer_kinds import is_derived_layer

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

__all__ = ["input_images", "refill_combo"]


def input_images(viewer: napari.Viewer) -> list[Image]:
    """The viewer's Image layers that the user brought (not the plugin's results)."""
    from napari.layers import Image

    return [
        layer for layer in viewer.layers if isinstance(layer, Image) and not is_derived_layer(layer)
    ]


def refill_combo(combo: QComboBox, names: list[str], first: str | None = None) -> bool:
    """Offer ``names`` (after ``first``, if given), keeping the current choice where it is
    still offered, without emitting the combo's change signals; True if the choice changed."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    if first is not None:
        combo.addItem(first)
    combo.addItems(names)
    combo.setCurrentIndex(max(combo.findText(current), 0))
    combo.blockSignals(False)
    return combo.currentText() != current
