"""The attribution widget's "Region" section: a Shapes or Labels layer drawn over the image.

"Rank classes in region" lists the classes whose Grad-CAM is strongest there (click one to
explain it), and with "Explain the score inside the region" checked, Run explains the
class-score map's mean inside the region instead of the whole image's score.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .._attribution_layers import region_layers
from .layer_choice import refill_combo

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari

__all__ = ["RegionSection"]


class RegionSection(QGroupBox):
    """The region layer, the "inside the region" switch, and the class ranking table.

    Parameters
    ----------
    viewer : napari.Viewer
    on_class_clicked : callable(str)
        Called with a ranked class's name when its row is clicked.
    image_combo : QComboBox
        The widget's image choice: the ranking is of that image, and cleared when it changes.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        on_class_clicked: Callable[[str], None],
        image_combo: QComboBox,
    ):
        super().__init__("Region")
        self.viewer = viewer
        self._on_class_clicked = on_class_clicked
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "A Shapes or Labels layer drawn over the image (add one with the layer buttons "
            "and draw a rectangle or polygon)."
        )
        self.region_check = QCheckBox("Explain the score inside the region")
        self.region_check.setToolTip(
            "Run explains the class-score map's mean inside the region (why this class "
            "here?), not the class score of the whole image."
        )
        self.rank_button = QPushButton("Rank classes in region")
        self.rank_table = QTableWidget(0, 2)
        self.rank_table.setHorizontalHeaderLabels(["Class", "Grad-CAM in region"])
        self.rank_table.verticalHeader().setVisible(False)
        self.rank_table.horizontalHeader().setStretchLastSection(True)
        self.rank_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.rank_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.rank_table.setToolTip("Click a class to make it the class to explain.")
        form = QFormLayout()
        form.addRow("Region layer", self.region_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.region_check)
        layout.addWidget(self.rank_button)
        layout.addWidget(self.rank_table)
        self._expected = False  # a ranking is on its way for the current image and region
        self.rank_table.cellClicked.connect(self._row_clicked)
        # A ranking belongs to one image and one region: another choice makes it stale.
        self.region_combo.currentTextChanged.connect(self.clear_ranking)
        image_combo.currentTextChanged.connect(self.clear_ranking)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self.refresh_regions)
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: self._disconnect())
        self.refresh_regions()

    def _disconnect(self) -> None:
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                event.disconnect(self.refresh_regions)

    def refresh_regions(self, event: Any = None) -> None:
        """Refill the region list (Shapes and Labels layers)."""
        names = [layer.name for layer in region_layers(self.viewer)]
        if refill_combo(self.region_combo, names):  # the ranking's region is gone
            self.clear_ranking()
        self.region_check.setEnabled(bool(names))
        self.rank_button.setEnabled(bool(names))
        if not names:
            self.region_check.setChecked(False)

    def selected_region(self) -> Any:
        name = self.region_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def required_region(self) -> Any:
        """The chosen region layer, or None after telling the user how to make one."""
        from napari.utils.notifications import show_error

        region = self.selected_region()
        if region is None:
            show_error(
                "There is no region to rank classes in. Add a Shapes layer, draw a rectangle "
                "or polygon over the image, and choose it under 'Region layer'."
            )
        return region

    def target_region(self) -> Any:
        """The region whose score Run explains, or None (the whole image's score)."""
        return self.selected_region() if self.region_check.isChecked() else None

    def set_region(self, name: str | None) -> None:
        """Use that Shapes or Labels layer as the region target (None: the whole image)."""
        if name is not None:
            self.region_combo.setCurrentText(name)
        self.region_check.setChecked(name is not None)

    def show_ranking(self, result: list[tuple[int, str, float]]) -> bool:
        """List ``(index, name, score)`` rows, strongest first, unless the image or region
        changed since the ranking started."""
        if not self._expected:
            return False
        self.rank_table.setRowCount(len(result))
        for row, (index, name, score) in enumerate(result):
            item = QTableWidgetItem(name)
            item.setData(256, index)  # Qt.UserRole
            self.rank_table.setItem(row, 0, item)
            self.rank_table.setItem(row, 1, QTableWidgetItem(f"{score:.4g}"))
        return True

    def expect_ranking(self) -> None:
        """A ranking of the current image and region is on its way."""
        self._expected = True

    def clear_ranking(self, *_: Any) -> None:
        """Empty the table, and drop a ranking on its way: it is of another image or region."""
        self._expected = False
        self.rank_table.setRowCount(0)

    def ranked_classes(self) -> list[str]:
        """The classes listed by the last ranking, strongest first."""
        return [self.rank_table.item(r, 0).text() for r in range(self.rank_table.rowCount())]

    def _row_clicked(self, row: int, column: int) -> None:
        self._on_class_clicked(self.rank_table.item(row, 0).text())
