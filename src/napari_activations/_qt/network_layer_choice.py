"""The main widget's network-layer menu: grouped by block, with channels and output size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QStandardItem, QStandardItemModel
from qtpy.QtWidgets import QComboBox

from ..architecture import SQUEEZENET, Architecture
from ..layers import LayerInfo, output_size

__all__ = ["NetworkLayerChoice", "STRETCHED"]

LAYER_ROLE = Qt.ItemDataRole.UserRole + 1

STRETCHED = "(stretched: no single grid)"
"""Marks a network layer that is not aligned to the image grid (shown stretched over it)."""

TOOLTIP = (
    "The network layer, in network order, grouped by block: its channel count and its size "
    f"for this image. {STRETCHED}: the layer has no single grid over the image (its note "
    "says why); it is shown stretched over the image, not exactly aligned."
)


def layer_tooltip(info: LayerInfo) -> str:
    """What the menu says of one network layer when the pointer rests on it."""
    what = f"{info.name}: {info.channels} channels"
    if info.op:
        what += f", {info.op}"
    if info.stride is not None:
        what += (
            f"; stride {info.stride}, receptive field {info.receptive_field} px, "
            f"centre of pixel 0 at {info.offset:g}"
        )
    elif info.is_global:
        what += "; one value per channel for the whole image"
    if not info.aligned:
        what += f". Not aligned ({info.note or 'no single grid'}): shown stretched over the image"
    return what + "."


class NetworkLayerChoice(QComboBox):
    """One network's layers in network order, under their block's (unselectable) header.

    SqueezeNet v1.1's at first (its table needs no torch); :meth:`set_architecture` shows
    another network's, :meth:`set_loading` says they are being read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arch: Architecture | None = None
        self._hw: tuple[int, int] | None = None
        self.set_architecture(SQUEEZENET)
        self.currentIndexChanged.connect(self._update_tooltip)

    def set_architecture(self, arch: Architecture) -> None:
        """Offer ``arch``'s layers, keeping the chosen layer where it has one of that name."""
        keep = self.currentData(LAYER_ROLE)
        self.arch = arch
        model = QStandardItemModel()
        block = None
        bold = QFont()
        bold.setBold(True)
        for info in arch.layers:
            if info.block != block:
                block = info.block
                header = QStandardItem(block)
                header.setFlags(Qt.ItemFlag.NoItemFlags)
                header.setFont(bold)
                model.appendRow(header)
            item = QStandardItem(info.name)
            item.setData(info.name, LAYER_ROLE)
            item.setToolTip(layer_tooltip(info))
            model.appendRow(item)
        self.blockSignals(True)
        self.setModel(model)
        self.blockSignals(False)
        self.setEnabled(True)
        self.show_sizes(self._hw)
        names = [info.name for info in arch.layers]
        self.set_network_layer(keep if keep in names else names[0])
        self._update_tooltip()

    def set_loading(self, message: str) -> None:
        """Offer nothing while a network's layers are being read; ``message`` says so."""
        self.arch = None
        model = QStandardItemModel()
        model.appendRow(QStandardItem(message))
        self.setModel(model)
        self.setEnabled(False)

    @property
    def layers(self) -> Sequence[LayerInfo]:
        return () if self.arch is None else self.arch.layers

    def set_network_layer(self, layer: str | LayerInfo) -> None:
        """Choose a network layer by name (as in the layer table, case-insensitive)."""
        if self.arch is None:
            raise ValueError("The network's layers are still being read; wait a moment.")
        name = self.arch.find_layer(layer).name
        model = self.model()
        for row in range(model.rowCount()):
            if model.item(row).data(LAYER_ROLE) == name:
                self.setCurrentIndex(row)
                return

    def selected_layer(self) -> LayerInfo | None:
        """The chosen network layer; None while the layers are being read."""
        name = self.currentData(LAYER_ROLE)
        if self.arch is None or name is None:
            return None
        return self.arch.find_layer(name)

    def show_sizes(self, hw: tuple[int, int] | None) -> None:
        """Label each network layer with its channels and its output size for an input of
        ``hw`` pixels (the network's input, after scaling); None: channels only."""
        self._hw = hw
        if self.arch is None:
            return
        model = self.model()
        for row in range(model.rowCount()):
            item = model.item(row)
            name = item.data(LAYER_ROLE)
            if name is None:
                continue
            info = self.arch.find_layer(name)
            text = f"    {name}   {info.channels} ch"
            if hw is not None:
                text += _size_text(info, hw)
            if not info.aligned:
                text += f"   {STRETCHED}"
            item.setText(text)

    def _update_tooltip(self, *args: Any) -> None:
        info = self.selected_layer()
        self.setToolTip(TOOLTIP if info is None else f"{TOOLTIP}\n\n{layer_tooltip(info)}")


def _size_text(info: LayerInfo, hw: tuple[int, int]) -> str:
    try:
        h, w = output_size(info, *hw)
    except Exception:  # noqa: BLE001 - a user's model that cannot take this input size
        return f", no output for {hw[0]}×{hw[1]}"
    return f", {h}×{w}" if h else ", image too small"
