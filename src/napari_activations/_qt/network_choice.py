"""The main widget's network rows: which network a Run uses, and the user's own model.

SqueezeNet v1.1 first (the default), then torchvision's networks
(:func:`~napari_activations.list_networks`), then "Your model…". Choosing a network reads its
layers (torchvision's architecture, on PyTorch's meta device: no weights, nothing downloaded)
off the GUI thread, since that takes up to seconds, and emits :attr:`NetworkChoice.ready`;
its weights are loaded on the first Run. "Your model…" runs a Python file that defines the
model, after asking (:meth:`NetworkChoice.confirm_run`), and takes an optional state_dict
(:mod:`napari_activations.user_model`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QWidget,
)

from .._plugin_settings import NETWORK, remember, remembered
from ..architecture import SQUEEZENET
from ..network import NETWORK_TITLES, list_networks
from ..user_model import MODEL_NAME
from .weights_choice import SQUEEZENET_NAME, USER_MODEL
from .worker import USER_ERRORS, BackgroundRun, Failure, call_as_steps

if TYPE_CHECKING:
    from ..network import Network

__all__ = ["NetworkChoice", "USER_MODEL", "USER_MODEL_TEXT"]

USER_MODEL_TEXT = "Your model…"

MODEL_HELP = (
    "Your model: a Python file (.py) that defines it at its top level as "
    f"`{MODEL_NAME} = MyNet()` (a torch.nn.Module instance), or as a function or class "
    f"`{MODEL_NAME}` that takes no arguments and returns one. It may also define `in_channels`, "
    "`mean` and `std` (per input channel, for intensities in [0, 1]; default 0 and 1), "
    "`categories`, `input_size` and `title`. Loading the file runs its Python code: you are "
    "asked first. Its weights are those the file gives it, or a state_dict file (loaded with "
    "weights_only=True)."
)


def _plainly(what: str, func: Any, *args: Any) -> Any:
    """``func(*args)`` in a worker; any error comes back as a plain :class:`Failure` (the
    user's code can raise anything; reading the layers must never leave the menu waiting)."""
    try:
        return (yield from call_as_steps(func, *args))
    except USER_ERRORS:
        raise  # their messages are written for users already
    except Exception as exc:  # noqa: BLE001 - shown as a message, never as a traceback
        return Failure(f"{what}: {type(exc).__name__}: {exc}")


def _parent_widget(obj: QObject) -> QWidget | None:
    parent = obj.parent()
    return parent if isinstance(parent, QWidget) else None


class NetworkChoice(QObject):
    """The network a Run uses: :attr:`name` (a name of :func:`list_networks`, or
    :data:`USER_MODEL`), and the user's loaded model, if any (:attr:`user_network`).

    Signals: :attr:`named` (the chosen network's name, as soon as it is chosen), :attr:`ready`
    (its Architecture, once its layers are read),
    :attr:`loading` (a message, while they are being read) and :attr:`user_loaded` (the
    user's Network, once loaded).
    """

    named = Signal(str)
    ready = Signal(object)
    loading = Signal(str)
    user_loaded = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = SQUEEZENET_NAME
        self.user_network: Network | None = None
        self.model_path: str | None = None
        self.jobs: list[BackgroundRun] = []
        self.combo = QComboBox()
        for name in list_networks():
            self.combo.addItem(NETWORK_TITLES[name], name)
        self.combo.addItem(USER_MODEL_TEXT, USER_MODEL)
        self.combo.setItemData(self.combo.count() - 1, MODEL_HELP, Qt.ItemDataRole.ToolTipRole)
        self.combo.setToolTip(
            "The network. SqueezeNet v1.1 (the default) has its weights built in; "
            "torchvision's networks download theirs once, on the first Run. "
            f"{USER_MODEL_TEXT}: {MODEL_HELP}"
        )
        self.model_button = QPushButton("Model file (.py)…")
        self.model_button.setToolTip(MODEL_HELP)
        self.state_button = QPushButton("State dict…")
        self.state_button.setToolTip(
            "A state_dict file (.pth) for your model, saved with "
            "torch.save(model.state_dict(), path); loaded with weights_only=True."
        )
        self.model_button.clicked.connect(self.choose_model_file)
        self.state_button.clicked.connect(self.choose_state_dict)
        self.combo.currentIndexChanged.connect(self._on_index)
        self._show_buttons()

    def add_rows(self, form: QFormLayout) -> None:
        """Put the network menu and the model buttons in ``form`` (the widget's own)."""
        buttons = QHBoxLayout()
        buttons.addWidget(self.model_button)
        buttons.addWidget(self.state_button)
        form.addRow("Network", self.combo)
        form.addRow("", buttons)

    def _show_buttons(self) -> None:
        user = self.name == USER_MODEL
        self.model_button.setVisible(user)
        self.state_button.setVisible(user)
        self.state_button.setEnabled(self.user_network is not None)

    def shows(self, arch: Any) -> bool:
        """Whether ``arch`` (what the layer menu shows) is the chosen network's: what Run
        may use, even while a job that read it is still winding down."""
        if arch is None:
            return False
        if self.name == USER_MODEL:
            return self.user_network is not None and arch is self.user_network.arch
        return arch.name == self.name

    @property
    def busy(self) -> bool:
        """True while a network's layers or the user's model are being read."""
        return any(job.running for job in self.jobs)

    def _select(self, name: str) -> None:
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(max(self.combo.findData(name), 0))
        self.combo.blockSignals(False)

    def _on_index(self, index: int) -> None:
        name = self.combo.itemData(index)
        if name == USER_MODEL:
            if self.user_network is not None:
                self.show_network(self.user_network)
            elif not self.choose_model_file():
                self._select(self.name)  # nothing loaded: back to the network before
            return
        self.choose(name)

    def choose(self, name: str, *, remember_it: bool = True) -> None:
        """Use network ``name`` (of :func:`list_networks`) from the next Run on; its layers
        come with :attr:`ready` (at once where they are known already)."""
        from .. import network

        if name not in NETWORK_TITLES:
            raise ValueError(f"{name!r} is not one of {list_networks()}.")
        self.name = name
        self._select(name)
        self._show_buttons()
        if remember_it:
            remember(NETWORK, name)
        self.named.emit(name)
        arch = SQUEEZENET if name == SQUEEZENET_NAME else network._ARCH_CACHE.get(name)
        if arch is not None:
            self.ready.emit(arch)
            return
        self.loading.emit(f"Reading the layers of {NETWORK_TITLES[name]}…")
        self._start(
            _plainly(
                f"Could not read the layers of {NETWORK_TITLES[name]}",
                network.torchvision_architecture,
                name,
            ),
            lambda arch: self.ready.emit(arch) if self.name == name else None,
            lambda: self.choose(SQUEEZENET_NAME) if self.name == name else None,
        )

    def choose_remembered(self) -> None:
        """Choose the network chosen at an earlier launch (torchvision's or SqueezeNet)."""
        name = remembered(NETWORK)
        if name in NETWORK_TITLES and name != self.name:
            self.choose(name, remember_it=False)

    def show_network(self, network: Network) -> None:
        """Show ``network`` (loaded already) as the chosen one; the user's own where its name
        is none of :func:`list_networks`."""
        if network.name in NETWORK_TITLES:
            self.name = network.name
        else:
            self.name, self.user_network = USER_MODEL, network
        self._select(self.name)
        self._show_buttons()
        self.named.emit(self.name)
        self.ready.emit(network.arch)
        if self.name == USER_MODEL:
            self.user_loaded.emit(network)

    def _start(self, gen: Any, on_result: Any, on_failure: Any = None) -> None:
        from napari.utils.notifications import show_error

        def failed(message: str) -> None:
            show_error(message)
            if on_failure is not None:
                on_failure()

        job = BackgroundRun(gen, on_result=on_result, on_failure=failed, on_cancelled=None)
        self.jobs = [j for j in self.jobs if j.running] + [job]
        job.start()

    # -- the user's own model ------------------------------------------------------------------

    def confirm_run(self, path: str | os.PathLike) -> bool:
        """Ask before running the Python file ``path``; True to go on."""
        name = Path(path).name
        answer = QMessageBox.question(
            _parent_widget(self),
            "Run this Python file?",
            f"Loading your model runs the Python code in {name}, with all your permissions "
            "(it can read, change or delete your files). Only load files you trust.\n\n"
            f"Run {name} now?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def choose_model_file(self) -> bool:
        """Ask for the Python file that defines the model, then load it; False if none was
        chosen or running it was not confirmed."""
        path, _ = QFileDialog.getOpenFileName(
            _parent_widget(self),
            "Your model: the Python file that defines it",
            os.path.dirname(self.model_path) if self.model_path else "",
            "Python files (*.py);;All files (*)",
        )
        return bool(path) and self.load_model(path)

    def load_model(self, path: str | os.PathLike, state_dict: Any = None) -> bool:
        """Run ``path`` (after :meth:`confirm_run`) and use the model it defines, with the
        weights of ``state_dict`` if given; in the background. False if not confirmed."""
        from ..user_model import load_model_file

        if not self.confirm_run(path):
            return False
        self.loading.emit(f"Loading your model from {Path(path).name}…")

        def loaded(net: Network) -> None:
            self.model_path = str(path)
            if self.combo.currentData() == USER_MODEL:
                self.show_network(net)
            else:  # another network was chosen meanwhile: keep the model for later
                self.user_network = net

        what = f"Could not load your model from {Path(path).name}"
        self._start(_plainly(what, load_model_file, path, state_dict), loaded, self._restore)
        return True

    def choose_state_dict(self) -> None:
        """Ask for a state_dict file for the loaded model, then load it into a copy."""
        path, _ = QFileDialog.getOpenFileName(
            _parent_widget(self),
            "Your model's weights (a state_dict)",
            os.path.dirname(self.model_path) if self.model_path else "",
            "PyTorch weights (*.pth *.pt);;All files (*)",
        )
        if path:
            self.load_state_dict(path)

    def load_state_dict(self, path: str | os.PathLike) -> None:
        """Use the loaded model with the weights in ``path`` (in the background)."""
        from ..user_model import with_state_dict

        if self.user_network is None:
            raise ValueError("Load your model's Python file first.")
        self.loading.emit(f"Loading the weights {Path(path).name}…")
        self._start(
            _plainly("Could not load the weights", with_state_dict, self.user_network, path),
            self.show_network,
            self._restore,
        )

    def _restore(self) -> None:
        """After a failed load: back to what was there (the user's model or the network)."""
        if self.user_network is not None:
            self.show_network(self.user_network)
        else:
            self.choose(self.name if self.name != USER_MODEL else SQUEEZENET_NAME)
