"""The attribution widget's method rows: Grad-CAM with its network layer, or occlusion with
its window and stride (only the chosen method's rows are shown)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QComboBox, QFormLayout, QSpinBox

from ..layers import LAYERS

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
        for info in LAYERS:
            if not info.is_global:
                self.layer_combo.addItem(info.name, info.name)
        self.layer_combo.setCurrentIndex(self.layer_combo.count() - 1)  # relu_conv10
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
