"""The main widget's weights rows: which weights a Run uses, and buttons to choose them.

The choices depend on the network: SqueezeNet v1.1 has its built-in weights, torchvision's
and a file; torchvision's other networks their ImageNet weights (downloaded once), random
ones (tests) and a file; the user's own model has the weights its files gave it (chosen in the
network rows, :mod:`.network_choice`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from .._plugin_settings import WEIGHTS_FILE, remember, remembered
from ..network import NETWORK_TITLES, WEIGHTS_CHOICES, WEIGHTS_ENV

if TYPE_CHECKING:
    from ..network import Network

__all__ = ["SQUEEZENET_NAME", "USER_MODEL", "WeightsChoice", "describe_weights"]

SQUEEZENET_NAME = "squeezenet1_1"
USER_MODEL = "module"
"""The network chooser's value for "Your model…"."""

RANDOM = "random, untrained (for tests only: the activations mean nothing)"


def describe_weights(
    weights: Any, network: Network | None = None, name: str = SQUEEZENET_NAME
) -> str:
    """One line for the widget: which weights a Run will use (never a machine path).

    ``name`` is the chosen network's (:func:`~napari_activations.list_networks`, or
    :data:`USER_MODEL`); ``network`` a loaded one, which describes itself.
    """
    if network is not None:
        return network.description
    if name == USER_MODEL:
        return "No model loaded: choose the Python file that defines it."
    if weights is None:
        return RANDOM
    if name != SQUEEZENET_NAME:
        if isinstance(weights, str) and weights.strip().upper() in ("DEFAULT", "TORCHVISION"):
            return (
                f"torchvision's ImageNet weights for {NETWORK_TITLES.get(name, name)} "
                "(downloaded once into the torch hub cache)"
            )
        return f"file {Path(os.fspath(weights)).name}"
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
        an earlier launch, where it is still there (SqueezeNet). ``None`` is random weights
        (tests only), kept when another network is chosen.
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
        self.name = SQUEEZENET_NAME  # the chosen network (see describe_weights)
        if network is None and isinstance(weights, str) and weights.upper() == "DEFAULT":
            self.weights = remembered_weights() or weights
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.file_button = QPushButton("Weights file…")
        self.default_button = QPushButton("Built-in weights")
        self.default_button.setToolTip(
            "The original SqueezeNet v1.1 ImageNet weights (Caffe release, as in MATLAB: "
            "MATLAB's channel numbers hold), built into the plugin; or the file named by "
            f"${WEIGHTS_ENV} where that is set."
        )
        self.torchvision_button = QPushButton("torchvision's")
        self.random_button = QPushButton("Random (tests)")
        self.random_button.setToolTip(
            "Random, untrained weights (seeded): nothing is downloaded, and the activations "
            "mean nothing. For trying the plugin out and for tests."
        )
        self.file_button.clicked.connect(self.choose_weights_file)
        self.default_button.clicked.connect(lambda: self.use_named_weights("DEFAULT"))
        self.torchvision_button.clicked.connect(lambda: self.use_named_weights("torchvision"))
        self.random_button.clicked.connect(lambda: self.set_weights(None))
        self.buttons = (
            self.file_button,
            self.default_button,
            self.torchvision_button,
            self.random_button,
        )
        self._show_buttons()
        self.update_label()

    def add_rows(self, form: QFormLayout) -> None:
        """Put the weights line and buttons in ``form`` (the widget's own)."""
        buttons = QHBoxLayout()
        for button in self.buttons:
            buttons.addWidget(button)
        form.addRow("Weights", self.label)
        form.addRow("", buttons)

    @property
    def title(self) -> str:
        return NETWORK_TITLES.get(self.name, "your model")

    def _show_buttons(self) -> None:
        squeezenet, user = self.name == SQUEEZENET_NAME, self.name == USER_MODEL
        self.file_button.setVisible(not user)
        self.default_button.setVisible(squeezenet)
        self.torchvision_button.setVisible(not user)
        self.random_button.setVisible(not (squeezenet or user))
        self.file_button.setToolTip(
            f"Use a {self.title} state_dict file (.pth), loaded with weights_only=True."
        )
        if squeezenet:
            self.torchvision_button.setText("torchvision's")
            self.torchvision_button.setToolTip(
                "torchvision's separately trained ImageNet weights (IMAGENET1K_V1), downloaded "
                "once into the torch hub cache. Their channel numbers differ from MATLAB's."
            )
        else:
            self.torchvision_button.setText("torchvision's ImageNet (download once)")
            self.torchvision_button.setToolTip(
                f"torchvision's ImageNet weights for {self.title} (its DEFAULT ones), "
                "downloaded on the first Run into the torch hub cache, then read from there."
            )

    def set_network_name(self, name: str) -> None:
        """Offer the weights of network ``name`` (or :data:`USER_MODEL`): its default ones,
        or random ones where random ones were chosen. A loaded network of another name is
        let go."""
        if name == self.name:
            return
        self.name = name
        if self.network is not None and self.network.name != name:
            self.network = None
        if self.weights is not None:
            self.weights = (
                (remembered_weights() or "DEFAULT") if name == SQUEEZENET_NAME else "DEFAULT"
            )
        self._show_buttons()
        self.update_label()

    def set_weights(self, weights: Any) -> None:
        """Use ``weights`` ("DEFAULT", "caffe", "torchvision", a file path or None) from the
        next Run on."""
        self.weights = weights
        self.network = None
        self.update_label()

    def set_network(self, network: Network | None) -> None:
        """Use this loaded network from the next Run on (None: load the weights again)."""
        self.network = network
        if network is not None and self.name != USER_MODEL:
            self.weights = network.source if network.trained else None  # loads it again
        self.update_label()

    def follow_device(self, device: str) -> None:
        """Forget a network loaded on another device than ``device`` ("auto" keeps it): the
        next Run loads it again (from the cache) on the chosen device. The user's own model is
        kept: a Run moves it (it cannot be loaded again by name)."""
        if (
            self.network is not None
            and self.name != USER_MODEL
            and device != "auto"
            and str(self.network.device).split(":")[0] != device
        ):
            self.set_network(None)

    def choose_weights_file(self) -> None:
        """Ask for a weights file; SqueezeNet's is remembered for the next napari launch."""
        last = remembered(WEIGHTS_FILE)
        parent = self.parent()
        path, _ = QFileDialog.getOpenFileName(
            parent if isinstance(parent, QWidget) else None,
            f"{self.title} weights",
            os.path.dirname(last) if last else "",
            "PyTorch weights (*.pth *.pt);;All files (*)",
        )
        if path:
            if self.name == SQUEEZENET_NAME:
                remember(WEIGHTS_FILE, path)
            self.set_weights(path)

    def use_named_weights(self, weights: str = "DEFAULT") -> None:
        """Use "DEFAULT" or "torchvision" weights, and forget the remembered weights file."""
        if self.name == SQUEEZENET_NAME:
            remember(WEIGHTS_FILE, "")
        self.set_weights(weights)

    def update_label(self, network: Network | None = None) -> None:
        """Say which weights the next Run uses (``network``: the one a Run just used)."""
        self.label.setText(describe_weights(self.weights, network or self.network, self.name))
