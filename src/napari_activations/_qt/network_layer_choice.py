"""The main widget's network-layer menu: grouped by block, with channels and output size."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QStandardItem, QStandardItemModel
from qtpy.QtWidgets import QComboBox

from ..layers import LAYERS, LayerInfo, find_layer, output_size

__all__ = ["NetworkLayerChoice"]

LAYER_ROLE = Qt.ItemDataRole.UserRole + 1


class NetworkLayerChoice(QComboBox):
    """The network layers in network order, under their block's (unselectable) header."""

    def __init__(self) -> None:
        super().__init__()
        self.setToolTip(
            "The network layer, in network order, grouped by block: "
            "its channel count and its size for this image."
        )
        model = QStandardItemModel()
        block = None
        bold = QFont()
        bold.setBold(True)
        for info in LAYERS:
            if info.block != block:
                block = info.block
                header = QStandardItem(block)
                header.setFlags(Qt.ItemFlag.NoItemFlags)
                header.setFont(bold)
                model.appendRow(header)
            item = QStandardItem(info.name)
            item.setData(info.name, LAYER_ROLE)
            model.appendRow(item)
        self.setModel(model)

    def set_network_layer(self, layer: str | LayerInfo) -> None:
        """Choose a network layer by name (as in the layer table)."""
        name = find_layer(layer).name
        model = self.model()
        for row in range(model.rowCount()):
            if model.item(row).data(LAYER_ROLE) == name:
                self.setCurrentIndex(row)
                return

    def selected_layer(self) -> LayerInfo:
        return find_layer(self.currentData(LAYER_ROLE))

    def show_sizes(self, hw: tuple[int, int] | None) -> None:
        """Label each network layer with its channels and its output size for an input of
        ``hw`` pixels (the network's input, after scaling); None: channels only."""
        model = self.model()
        for row in range(model.rowCount()):
            item = model.item(row)
            name = item.data(LAYER_ROLE)
            if name is None:
                continue
            info = find_layer(name)
            text = f"    {name}   {info.channels} ch"
            if hw is not None:
                h, w = output_size(info, *hw)
                text += f", {h}×{w}" if h else ", image too small"
            item.setText(text)
