"""The analysis widget's Probe tab: a pixel's activation across all channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout

from .. import analysis
from .._analysis_layers import current_plane_activations, pixel_under
from .probe_plot import ProbePlot
from .tab import AnalysisTab

if TYPE_CHECKING:
    from .._analysis_widget import AnalysisWidget

__all__ = ["ProbeTab"]


class ProbeTab(AnalysisTab):
    """A bar plot of the probed pixel's channels, the five strongest labelled."""

    def __init__(self, host: AnalysisWidget):
        super().__init__(host)
        self.probed: np.ndarray | None = None
        self.probe_check = QCheckBox("Probe on click")
        self.probe_check.setChecked(True)
        self.hover_check = QCheckBox("…and while hovering")
        self.probe_plot = ProbePlot()
        self.probe_plot.channel_clicked.connect(host.jump_to_channel)
        self.probe_label = QLabel("Click a pixel of the image.")
        self.probe_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.probe_check)
        row.addWidget(self.hover_check)
        layout.addLayout(row)
        layout.addWidget(self.probe_plot)
        layout.addWidget(self.probe_label)

    def probe_at(self, world_position: Any) -> None:
        """Show the chosen layer's activation across channels at a world position."""
        host = self.host
        layer = host.activation_layer()
        if layer is None:
            return
        pixel = pixel_under(layer, world_position)
        if pixel is None:
            return
        y, x = pixel
        values = analysis.probe(current_plane_activations(host.viewer, layer), y, x)
        top = analysis.top_channels(values, 5)
        self.probed = values
        self.probe_plot.set_values(values, [c for c, _ in top])
        listed = ", ".join(f"{c} ({v:.3g})" for c, v in top)
        self.probe_label.setText(
            f"{layer.name} at pixel ({round(y)}, {round(x)}); strongest: {listed}"
        )
