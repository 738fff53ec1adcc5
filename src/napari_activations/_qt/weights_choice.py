"""The main widget's weights rows: which weights a Run uses, and buttons to choose them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from .._plugin_settings import WEIGHTS_FILE, remember, remembered
from ..network import WEIGHTS_CHOICES, WEIGHTS_ENV

if TYPE_CHECKING:
    from ..network import Network

__all__ = ["WeightsChoice", "describe_weights"]


def describe_weights(weights: Any, network: Network | None = None) -> str:
    """One line for the widget: which weights a Run will use (never a machine path)."""
    if network is not None:
        return network.description
    if weights is None:
        return "random, untrained (for tests only: the activations mean nothing)"
    if isinstance(weights, str) and weights.strip().upper() == "DEFAULT":
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        if env:
            return f"file {Path(env).name} (from ${WEIGHTS_ENV})"
        weights = "caffe"
    if isinstance(weights, str) and weights.strip().lower() in WEIGHTS_CHOICES:
        return WEIGHTS_CHOICES[weights.strip().lower()]
    return f"file {Path(os.fspath(weights)).name}"


def remembered_weights() -> str:
    """The weights file chosen at an earlier launch, if it is still there."""
    path = remembered(WEIGHTS_FILE)
    return path if path and os.path.isfile(path) else ""


class WeightsChoice(QObject):
    """The weights (or loaded network) the next Run uses, shown in one line.

    Parameters
    ----------
    network : Network, optional
        A loaded network to use (tests, or one made in the console).
    weights : "DEFAULT", path or None
        Weights to load when there is no network; "DEFAULT" takes the weights file chosen at
        an earlier launch, where it is still there. ``None`` is random weights (tests only).
    """

    def __init__(
        self,
        network: Network | None = None,
        weights: Any = "DEFAULT",
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.network = network
        self.weights = weights
        if network is None and isinstance(weights, str) and weights.upper() == "DEFAULT":
            self.weights = remembered_weights() or weights
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.file_button = QPushButton("Weights file…")
        self.file_button.setToolTip("Use a SqueezeNet 1.1 state_dict file (.pth).")
        self.default_button = QPushButton("Built-in weights")
        self.default_button.setToolTip(
            "The original SqueezeNet v1.1 ImageNet weights (Caffe release, as in MATLAB: "
            "MATLAB's channel numbers hold), built into the plugin; or the file named by "
            f"${WEIGHTS_ENV} where that is set."
        )
        self.torchvision_button = QPushButton("torchvision's")
        self.torchvision_button.setToolTip(
            "torchvision's separately trained ImageNet weights (IMAGENET1K_V1), downloaded "
            "once into the torch hub cache. Their channel numbers differ from MATLAB's."
        )
        self.file_button.clicked.connect(self.choose_weights_file)
        self.default_button.clicked.connect(lambda: self.use_named_weights("DEFAULT"))
        self.torchvision_button.clicked.connect(lambda: self.use_named_weights("torchvision"))
        self.update_label()

    def add_rows(self, form: QFormLayout) -> None:
        """Put the weights line and buttons in ``form`` (the widget's own)."""
        buttons = QHBoxLayout()
        for button in (self.file_button, self.default_button, self.torchvision_button):
            buttons.addWidget(button)
        form.addRow("Weights", self.label)
        form.addRow("", buttons)

    def set_weights(self, weights: Any) -> None:
        """Use ``weights`` ("DEFAULT", "caffe", "torchvision", a file path or None) from the
        next Run on."""
        self.weights = weights
        self.network = None
        self.update_label()

    def set_network(self, network: Network | None) -> None:
        """Use this loaded network from the next Run on (None: load the weights again)."""
        self.network = network
        self.update_label()

    def follow_device(self, device: str) -> None:
        """Forget a network loaded on another device than ``device`` ("auto" keeps it): the
        next Run loads it again (from the cache) on the chosen device."""
        if (
            self.network is not None
            and device != "auto"
            and str(self.network.device).split(":")[0] != device
        ):
            self.set_network(None)

    def choose_weights_file(self) -> None:
        """Ask for a weights file; it is remembered for the next napari launch."""
        last = remembered(WEIGHTS_FILE)
        parent = self.parent()
        path, _ = QFileDialog.getOpenFileName(
            parent if isinstance(parent, QWidget) else None,
            "SqueezeNet 1.1 weights",
            os.path.dirname(last) if last else "",
            "PyTorch weights (*.pth *.pt);;All files (*)",
        )
        if path:
            remember(WEIGHTS_FILE, path)
            self.set_weights(path)

    def use_named_weights(self, weights: str = "DEFAULT") -> None:
        """Use "DEFAULT" or "torchvision" weights, and forget the remembered weights file."""
        remember(WEIGHTS_FILE, "")
        self.set_weights(weights)

    def update_label(self, network: Network | None = None) -> None:
        """Say which weights the next Run uses (``network``: the one a Run just used)."""
        self.label.setText(describe_weights(self.weights, network or self.network))
