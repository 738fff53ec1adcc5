"""The analysis widget's Region tab: rank channels inside a Shapes/Labels region vs outside."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QPushButton

from .. import analysis
from .._analysis_layers import current_plane_activations, region_mask
from .tab import AnalysisTab
from .tables import fill_table, first_column_int, make_table
from .worker import USER_ERRORS, call_as_steps

if TYPE_CHECKING:
    from .._analysis_widget import AnalysisWidget

__all__ = ["RegionTab"]


class RegionTab(AnalysisTab):
    """Channels of the chosen activation layer ranked by a region (ratio or difference)."""

    def __init__(self, host: AnalysisWidget):
        super().__init__(host)
        self.ranking: np.ndarray | None = None
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "A Shapes or Labels layer marking the region (e.g. an eye, a nucleus)."
        )
        self.sort_combo = QComboBox()
        self.sort_combo.addItem("ratio inside / outside", "ratio")
        self.sort_combo.addItem("difference inside − outside", "difference")
        self.rank_button = QPushButton("Rank channels")
        self.rank_button.clicked.connect(self.rank_region)
        self.region_table = make_table(
            "Mean activation inside and outside the region; click a row to show that channel."
        )
        self.region_table.cellClicked.connect(self._row_clicked)
        form = QFormLayout(self)
        form.addRow("Region", self.region_combo)
        form.addRow("Sort by", self.sort_combo)
        form.addRow(self.rank_button)
        form.addRow(self.region_table)

    def _row_clicked(self, row: int, column: int = 0) -> None:
        channel = first_column_int(self.region_table, row)
        if channel is not None:
            self.host.jump_to_channel(channel)

    def rank_region(self) -> None:
        """Rank the chosen layer's channels by the region (inside vs outside), in a worker."""
        from napari.utils.notifications import show_error

        host = self.host
        layer = host.require_activation_layer()
        if layer is None:
            return
        name = self.region_combo.currentText()
        if name not in host.viewer.layers:
            show_error("Add a Shapes or Labels layer and mark the region first.")
            return
        try:
            mask = region_mask(host.viewer.layers[name], layer)
        except USER_ERRORS as exc:
            show_error(str(exc))
            return
        acts = current_plane_activations(host.viewer, layer)
        host.start(
            call_as_steps(
                analysis.rank_channels,
                acts,
                region=mask,
                sort=self.sort_combo.currentData(),
                include_border=host.border_check.isChecked(),
            ),
            on_result=self._show_ranking,
            message=f"Ranking {layer.name} by {name!r}…",
        )

    def _show_ranking(self, rows: np.ndarray) -> None:
        self.ranking = rows
        shown = rows[["channel", "inside", "outside", "ratio"]]
        fill_table(self.region_table, shown.tolist(), list(shown.dtype.names))
        if len(rows):
            self.host.jump_to_channel(int(rows["channel"][0]))
