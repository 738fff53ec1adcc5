"""The attribution widget's method rows: Grad-CAM with its network layer, or occlusion with
its window and stride (only the chosen method's rows are shown)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QComboBox, QFormLayout, QSpinBox

from ..architecture import SQUEEZENET

if TYPE_CHECKING:
    from ..architecture import Architecture

__all__ = ["AUTO", "AttributionMethod"]

AUTO = 0  # spin-box value meaning "the default for this image"


class AttributionMethod(QObject):
    """The method and its parameters."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.method_combo = QComboBox()
        self.method_combo.addItem("Grad-CAM", "grad-cam")
        self.method_combo.addItem("Occlusion sensitivity", "occlusion")
        self.layer_combo = QComboBox()
        self.set_layers(SQUEEZENET)
        self.layer_combo.setToolTip(
            "Grad-CAM weights this network layer's channels by the "
            "class score's gradient; default: the last one before "
            "global pooling."
        )
        self.window_spin = QSpinBox()
        self.window_spin.setRange(AUTO, 4096)
        self.window_spin.setSpecialValueText("auto (a fifth of the shorter side)")
        self.window_spin.setSuffix(" px")
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(AUTO, 4096)
        self.stride_spin.setSpecialValueText("auto (half the window)")
        self.stride_spin.setSuffix(" px")
        self._form: QFormLayout | None = None
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)

    def set_layers(self, arch: Architecture) -> None:
        """Offer the spatial layers of this network, the default Grad-CAM layer chosen: the
        last aligned one before global pooling (SqueezeNet's ``relu_conv10``)."""
        combo = self.layer_combo
        combo.clear()
        first_global = next((i for i, row in enumerate(arch.layers) if row.is_global), None)
        default = None
        for i, info in enumerate(arch.layers):
            if info.is_global:
                continue
            label = info.name if info.aligned else f"{info.name} (not aligned)"
            combo.addItem(label, info.name)
            if info.aligned and (first_global is None or i < first_global):
                default = combo.count() - 1
        combo.setCurrentIndex(combo.count() - 1 if default is None else default)

    def add_rows(self, form: QFormLayout) -> None:
        """Put the rows in ``form`` (the widget's own); only the method's own are shown."""
        self._form = form
        form.addRow("Method", self.method_combo)
        form.addRow("Network layer", self.layer_combo)
        form.addRow("Window", self.window_spin)
        form.addRow("Stride", self.stride_spin)
        self._on_method_changed()

    def set_method(self, method: str) -> None:
        """Choose "grad-cam" or "occlusion"."""
        self.method_combo.setCurrentIndex(self.method_combo.findData(method))

    def _on_method_changed(self, *args: Any) -> None:
        if self._form is None:
            return
        grad_cam = self.method_combo.currentData() == "grad-cam"
        for field, visible in (
            (self.layer_combo, grad_cam),
            (self.window_spin, not grad_cam),
            (self.stride_spin, not grad_cam),
        ):
            field.setVisible(visible)  # QFormLayout.setRowVisible needs Qt 6.4
            self._form.labelForField(field).setVisible(visible)
