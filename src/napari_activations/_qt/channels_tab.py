"""The analysis widget's Channels tab: the montage of all channels, and the strongest ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox

from .. import analysis
from .._analysis_layers import current_plane_activations, native_activations, show_montage
from ..alignment import AlignedActivations
from .tab import AnalysisTab
from .tables import fill_table, first_column_int, make_table

if TYPE_CHECKING:
    from .._analysis_widget import AnalysisWidget

__all__ = ["ChannelsTab"]


class ChannelsTab(AnalysisTab):
    """Montage of the chosen activation layer's channels; its top-k channels by max or mean."""

    def __init__(self, host: AnalysisWidget):
        super().__init__(host)
        self.strongest: list[tuple[int, float]] = []
        self.normalize_combo = QComboBox()
        self.normalize_combo.addItem("each channel (mat2gray per tile)", "channel")
        self.normalize_combo.addItem("all together (one range)", "global")
        self.montage_button = QPushButton("Show montage")
        self.montage_button.setToolTip(
            "All channels as a grid beside the layer; click a tile to show that channel."
        )
        self.montage_button.clicked.connect(self.show_montage)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 1000)
        self.k_spin.setValue(5)
        self.by_combo = QComboBox()
        self.by_combo.addItem("maximum", "max")
        self.by_combo.addItem("mean", "mean")
        self.strongest_button = QPushButton("Find strongest")
        self.strongest_button.clicked.connect(self.find_strongest)
        self.strongest_table = make_table("Click a row to show that channel.")
        self.strongest_table.cellClicked.connect(self._row_clicked)
        form = QFormLayout(self)
        form.addRow("Tiles scaled", self.normalize_combo)
        form.addRow(self.montage_button)
        row = QHBoxLayout()
        row.addWidget(QLabel("Top"))
        row.addWidget(self.k_spin)
        row.addWidget(QLabel("by"))
        row.addWidget(self.by_combo)
        form.addRow(row)
        form.addRow(self.strongest_button)
        form.addRow(self.strongest_table)

    def _row_clicked(self, row: int, column: int = 0) -> None:
        channel = first_column_int(self.strongest_table, row)
        if channel is not None:
            self.host.jump_to_channel(channel)

    def show_montage(self) -> None:
        """Add (or update) the montage of the chosen layer's channels beside it."""
        host = self.host
        layer = host.require_activation_layer()
        if layer is None:
            return
        image, _, m = show_montage(host.viewer, layer, normalize=self.normalize_combo.currentData())
        host.viewer.layers.selection.active = layer
        host.status_label.setText(
            f"{image.name}: {m.channels} channels as {m.grid[0]}x"
            f"{m.grid[1]} tiles; click a tile to show that channel."
        )

    def find_strongest(self) -> None:
        """List the top-k channels of the shown plane, by max or mean (network resolution)."""
        host = self.host
        layer = host.require_activation_layer()
        if layer is None:
            return
        plane = current_plane_activations(host.viewer, layer)
        acts = native_activations(plane)
        if isinstance(plane, AlignedActivations) and not host.border_check.isChecked():
            rows, cols = plane.native_interior()  # exact: knows the network input's size
            acts = acts[..., rows, cols]
        by = self.by_combo.currentData()
        self.strongest = analysis.strongest_channels(acts, self.k_spin.value(), by=by)
        fill_table(self.strongest_table, self.strongest, ["channel", by])
        if self.strongest:
            host.jump_to_channel(self.strongest[0][0])
