"""The analysis widget's Compare tab: one network layer for two or more image layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)

from .._analysis_layers import compare_images, region_mask, show_comparison
from .layer_choice import refill_combo
from .tab import AnalysisTab
from .tables import fill_table, first_column_int, make_table
from .worker import USER_ERRORS

if TYPE_CHECKING:
    from napari.layers import Image, Layer

    from .._analysis_widget import AnalysisWidget

__all__ = ["WHOLE_IMAGE", "CompareTab"]

WHOLE_IMAGE = "(whole image)"
_SQUEEZENET_DEFAULT = "fire6-relu_squeeze1x1"  # the reference example's layer


class CompareTab(AnalysisTab):
    """Images side by side in grid mode with their difference; channels ranked by change."""

    def __init__(self, host: AnalysisWidget):
        super().__init__(host)
        self.comparison_ranking: np.ndarray | None = None
        self.images_list = QListWidget()
        self.images_list.setToolTip(
            "Tick two or more image layers of the same size; the difference is the first "
            "ticked minus the second (drag to reorder)."
        )
        self.images_list.setMaximumHeight(90)
        self.images_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.compare_layer_combo = QComboBox()
        self.compare_layer_combo.setToolTip(
            "A layer of the network that made the chosen activation layer (layers after global "
            "pooling, with one pixel, are not offered)."
        )
        self._offered: Any = None  # the architecture whose layers the menu lists
        self.compare_region_combo = QComboBox()
        self.change_combo = QComboBox()
        self.change_combo.addItem("drop: mean (first − second)", "difference")
        self.change_combo.addItem("any change: mean |first − second|", "absolute")
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(self.compare)
        self.compare_table = make_table(
            "Channels ranked by their change; click a row to show that channel in every "
            "compared layer."
        )
        self.compare_table.cellClicked.connect(self._row_clicked)
        form = QFormLayout(self)
        form.addRow("Images", self.images_list)
        form.addRow("Network layer", self.compare_layer_combo)
        form.addRow("Region", self.compare_region_combo)
        form.addRow("Rank by", self.change_combo)
        form.addRow(self.compare_button)
        form.addRow(self.compare_table)

    def refresh_network_layers(self) -> None:
        """List the spatial layers of the host's network; keep the choice where it is one."""
        arch = self.host.architecture()
        if arch is None or arch is self._offered:
            return
        combo = self.compare_layer_combo
        current = combo.currentText()
        names = [info.name for info in arch.layers if not info.is_global]
        combo.clear()
        combo.addItems(names)
        self._offered = arch
        if current in names:
            combo.setCurrentText(current)
        elif _SQUEEZENET_DEFAULT in names:
            combo.setCurrentText(_SQUEEZENET_DEFAULT)
        else:  # about two thirds down: parts of objects, still well placed
            combo.setCurrentIndex(2 * len(names) // 3)

    def _row_clicked(self, row: int, column: int = 0) -> None:
        channel = first_column_int(self.compare_table, row)
        if channel is not None:
            self.host.jump_to_channel(channel)

    def refresh(self, images: list[str], regions: list[str]) -> None:
        """Offer these image layers (the user's order and ticks kept) and region layers."""
        refill_combo(self.compare_region_combo, [WHOLE_IMAGE] + regions)
        listed = [self.images_list.item(i) for i in range(self.images_list.count())]
        ticked = {item.text() for item in listed if item.checkState() == Qt.CheckState.Checked}
        if not ticked:
            ticked = set(images[:2])
        # keep the user's order (it says which image is first), new images at the end
        kept = [item.text() for item in listed if item.text() in images]
        self.images_list.clear()
        for name in kept + [n for n in images if n not in kept]:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in ticked else Qt.CheckState.Unchecked)
            self.images_list.addItem(item)

    def ticked_images(self) -> list[Image]:
        """The image layers ticked, in list order."""
        layers = self.host.viewer.layers
        names = [
            self.images_list.item(i).text()
            for i in range(self.images_list.count())
            if self.images_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        return [layers[n] for n in names if n in layers]

    def set_ticked_images(self, names: list[str]) -> None:
        """Tick exactly these image layers (the first is "first")."""
        for i in range(self.images_list.count()):
            item = self.images_list.item(i)
            item.setCheckState(
                Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked
            )
        # list order is the comparison order: put the named ones first, as given
        for row, name in enumerate(names):
            found = self.images_list.findItems(name, Qt.MatchFlag.MatchExactly)
            if found:
                item = self.images_list.takeItem(self.images_list.row(found[0]))
                self.images_list.insertItem(row, item)

    def compare(self) -> None:
        """Compute the network layer for the ticked images, show them side by side with the
        difference, and rank channels by their change (in a worker)."""
        from napari.utils.notifications import show_error

        host = self.host
        images = self.ticked_images()
        if len(images) < 2:
            show_error(
                "Tick two or more image layers to compare (e.g. the samples Face and "
                "Face, one eye covered)."
            )
            return
        region_name = self.compare_region_combo.currentText()
        layers = host.viewer.layers
        region_layer = layers[region_name] if region_name in layers else None
        layer = self.compare_layer_combo.currentText()
        if not layer:
            show_error("Choose a network layer to compare (none is offered).")
            return
        mask = None
        if region_layer is not None:
            try:
                mask = region_mask(region_layer, images[0])
            except USER_ERRORS as exc:
                show_error(str(exc))
                return
        host.start(
            compare_images(
                host.network_for_run(),
                images,
                layer,
                region=mask,
                change=self.change_combo.currentData(),
            ),
            on_result=lambda result: self._show(images, result, region_layer),
            message=f"Comparing {layer} for {', '.join(repr(i.name) for i in images)}…",
        )

    def _show(self, images: list[Image], result: Any, region_layer: Layer | None) -> None:
        host = self.host
        if any(image not in host.viewer.layers for image in images):
            return
        shown = show_comparison(host.viewer, images, result, region_layer)
        self.comparison_ranking = result.ranking
        host.refresh_layers()
        host.layer_combo.setCurrentText(shown[0].name)
        fill_table(self.compare_table, result.ranking.tolist(), list(result.ranking.dtype.names))
        if len(result.ranking):
            host.jump_to_channel(int(result.ranking["channel"][0]))
        host.status_label.setText(f"{shown[-1].name}: channels ranked by their change.")
