"""Which napari layers the widgets offer: the user's images, never the plugin's own results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox

from .._analysis_layers import DIFFERENCE_KEY, MONTAGE_KEY
from .._attribution_layers import ATTRIBUTION_KEY
from .._napari_layers import METADATA_KEY

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

__all__ = ["DERIVED_KEYS", "input_images", "is_derived", "refill_combo"]

# The metadata keys of the layers this plugin makes: activation, difference, montage and
# attribution layers. They are outputs, never offered as an image to compute on.
DERIVED_KEYS = (METADATA_KEY, DIFFERENCE_KEY, MONTAGE_KEY, ATTRIBUTION_KEY)


def is_derived(layer: Any) -> bool:
    """A layer this plugin made (see :data:`DERIVED_KEYS`)."""
    metadata = getattr(layer, "metadata", None) or {}
    return any(key in metadata for key in DERIVED_KEYS)


def input_images(viewer: napari.Viewer) -> list[Image]:
    """The viewer's Image layers that the user brought (not the plugin's results)."""
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and not is_derived(layer)]


def refill_combo(combo: QComboBox, names: list[str], first: str | None = None) -> None:
    """Offer ``names`` (after ``first``, if given), keeping the current choice where it is
    still offered, without emitting the combo's change signals."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    if first is not None:
        combo.addItem(first)
    combo.addItems(names)
    combo.setCurrentIndex(max(combo.findText(current), 0))
    combo.blockSignals(False)
