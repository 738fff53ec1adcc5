"""What every tab of the analysis widget shares: the widget that holds it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QWidget

if TYPE_CHECKING:
    from .._analysis_widget import AnalysisWidget

__all__ = ["AnalysisTab"]


class AnalysisTab(QWidget):
    """A page of the analysis widget.

    ``host`` gives the viewer, the chosen activation layer, the status line, the channel
    slider and the background runner: the tab keeps only its own controls and results.
    """

    def __init__(self, host: AnalysisWidget):
        super().__init__()
        self.host = host
