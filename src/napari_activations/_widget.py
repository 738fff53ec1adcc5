"""The "SqueezeNet activations" dock widget.

A thin Qt skin over :mod:`napari_activations._napari_layers`: it picks the image layer, the
network layer, the input scale and the weights, runs
:func:`~napari_activations._napari_layers.compute_for_image_layer` in a napari
``thread_worker`` with a progress bar, and hands the result to
:func:`~napari_activations._napari_layers.add_activation_layer`, exactly as
``show_activations`` does from the console. torch is imported by the worker, on the first Run.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QStandardItem, QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import _mesa_workaround
from ._export_widget import ExportRow
from ._napari_layers import (
    METADATA_KEY,
    ActivationResult,
    LayerInputError,
    add_activation_layer,
    choose_level,
    compute_for_image_layer,
    unproxy,
)
from ._plugin_settings import WEIGHTS_FILE, remember, remembered
from .backends import BackendError
from .compute import ImageError, Progress, image_planes_shape, network_input_size
from .layers import LAYERS, LayerInfo, UnknownLayerError, find_layer, output_size
from .network import WEIGHTS_CHOICES, WEIGHTS_ENV, DeviceUnavailableError, WeightsError

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = ["ActivationsWidget"]

LAYER_ROLE = Qt.ItemDataRole.UserRole + 1
NO_LAYER = "(none)"

NO_IMAGE = (
    "No image layer to compute on: open an image (or File > Open Sample > "
    "napari-activations > Face)."
)

# Errors whose message is written for users: shown as they are. Anything else is a bug, and
# napari's own error notification (with its traceback) reports it.
USER_ERRORS = (
    ImageError,
    WeightsError,
    LayerInputError,
    UnknownLayerError,
    DeviceUnavailableError,
    BackendError,
)


@dataclass(frozen=True)
class _Failure:
    message: str


def _guarded(gen: Generator) -> Generator[Progress, None, ActivationResult | _Failure]:
    """Run ``gen``, turning the errors meant for users into a returned :class:`_Failure`."""
    try:
        return (yield from gen)
    except USER_ERRORS as exc:
        return _Failure(str(exc))


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


class ActivationsWidget(QWidget):
    """Dock widget: compute one network layer's activations for an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        Use this network instead of loading one (tests, or a network made in the console).
    weights : "DEFAULT", path or None
        Weights to load on the first Run when no ``network`` is given; ``None`` is random
        weights (tests only).
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        network: Network | None = None,
        weights: Any = "DEFAULT",
    ):
        super().__init__()
        _mesa_workaround.install()  # deleting layers must not crash napari (Mesa software GL)
        self.viewer = unproxy(napari_viewer)
        self._network = network
        self._weights = weights
        if network is None and isinstance(weights, str) and weights.upper() == "DEFAULT":
            self._weights = _remembered_weights() or weights
        self._run = _RunState()
        self._shown: str | None = None  # the activation layer the status line names
        self._build()
        self._connect_viewer()
        self.refresh_images()
        self._follow_active()

    # -- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to compute on (Image layers only).")
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(
            "The network layer, in network order, grouped by block: "
            "its channel count and its size for this image."
        )
        self.layer_combo.setModel(self._layer_model())
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.1, 8.0)
        self.scale_spin.setSingleStep(0.25)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setValue(1.0)
        self.scale_spin.setToolTip(
            "The network sees the image resized by this factor; the "
            "activations are placed back on the image's own pixels."
        )
        self.contrast_combo = QComboBox()
        self.contrast_combo.addItem("each channel (mat2gray per channel)", "channel")
        self.contrast_combo.addItem("whole layer (one range)", "global")
        self.green_combo = QComboBox()
        self.blue_combo = QComboBox()
        for combo, colour in ((self.green_combo, "green"), (self.blue_combo, "blue")):
            combo.setToolTip(
                f"Optional: a single-channel layer as the network's {colour}, with "
                "'Image' as red (e.g. channels opened with channel_axis). Each "
                "is scaled by its own contrast limits. None: 'Image' alone."
            )
        self.level_combo = QComboBox()
        self.level_combo.setToolTip(
            "For a multiscale (pyramid) image: the level to compute "
            "on. The result lies over the full-resolution image."
        )
        self.stack_contrast_combo = QComboBox()
        self.stack_contrast_combo.addItem("whole stack (sampled planes)", "stack")
        self.stack_contrast_combo.addItem("each plane (follows the slider)", "plane")
        self.stack_contrast_combo.setToolTip(
            "For stacks. Whole stack: one range per channel for every plane, estimated from "
            "a few planes spread over the stack (widened by any plane shown later that goes "
            "beyond it), so brightness compares between planes. Each plane: every plane uses "
            "its own full range."
        )
        self.border_check = QCheckBox("Count the image border")
        self.border_check.setToolTip(
            "Off: the starting channel and the contrast leave out the border within half a "
            "receptive field of the image edge, where the network's zero padding shows (some "
            "channels answer it on any image, even a blank one)."
        )
        self.replace_check = QCheckBox("Replace the image's earlier activation layers")
        self.replace_check.setToolTip(
            "Checked: one activation layer per image, the latest. Unchecked: earlier results "
            "stay beneath the new one, for comparison."
        )
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto: GPU if there is one, else CPU", "auto")
        self.device_combo.addItem("CPU", "cpu")
        self.device_combo.addItem("CUDA GPU", "cuda")
        self.device_combo.addItem("Apple GPU (MPS)", "mps")
        self.device_combo.setToolTip(
            "Where the network runs. A GPU that is not there is reported when you press Run."
        )
        self.backend_combo = QComboBox()
        self.backend_combo.addItem("auto: ONNX Runtime on the CPU, PyTorch on a GPU", "auto")
        self.backend_combo.addItem("PyTorch", "torch")
        self.backend_combo.addItem("ONNX Runtime (CPU only)", "onnxruntime")
        self.backend_combo.setToolTip(
            "What runs the network. Every backend gives the same activations (within 1e-5 of "
            "the layer's maximum); ONNX Runtime, the fastest on the CPU, runs after a "
            "first-time export of under a second per network layer. The backend that ran is "
            "recorded in the layer's metadata."
        )
        self.precision_combo = QComboBox()
        self.precision_combo.addItem("float32", "float32")
        self.precision_combo.addItem("float16 (GPU only)", "float16")
        self.precision_combo.addItem("bfloat16 (GPU only)", "bfloat16")
        self.precision_combo.setToolTip(
            "Arithmetic of the forward pass. Half precision is "
            "faster on GPUs and slightly less exact; activations "
            "are float32 either way."
        )
        self.weights_label = QLabel()
        self.weights_label.setWordWrap(True)
        self.weights_file_button = QPushButton("Weights file…")
        self.weights_file_button.setToolTip("Use a SqueezeNet 1.1 state_dict file (.pth).")
        self.weights_default_button = QPushButton("Built-in weights")
        self.weights_default_button.setToolTip(
            "The original SqueezeNet v1.1 ImageNet weights (Caffe release, as in MATLAB: "
            "MATLAB's channel numbers hold), built into the plugin; or the file named by "
            f"${WEIGHTS_ENV} where that is set."
        )
        self.weights_torchvision_button = QPushButton("torchvision's")
        self.weights_torchvision_button.setToolTip(
            "torchvision's separately trained ImageNet weights (IMAGENET1K_V1), downloaded "
            "once into the torch hub cache. Their channel numbers differ from MATLAB's."
        )
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.export_row = ExportRow(self.viewer)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Green layer", self.green_combo)
        form.addRow("Blue layer", self.blue_combo)
        form.addRow("Pyramid level", self.level_combo)
        form.addRow("Network layer", self.layer_combo)
        form.addRow("Input scale", self.scale_spin)
        form.addRow("Contrast", self.contrast_combo)
        form.addRow("Stack contrast", self.stack_contrast_combo)
        form.addRow("", self.border_check)
        form.addRow("", self.replace_check)
        form.addRow("Device", self.device_combo)
        form.addRow("Backend (advanced)", self.backend_combo)
        form.addRow("Precision (advanced)", self.precision_combo)
        form.addRow("Weights", self.weights_label)
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.weights_file_button)
        weights_row.addWidget(self.weights_default_button)
        weights_row.addWidget(self.weights_torchvision_button)
        form.addRow("", weights_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.export_row)
        layout.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self.refresh_levels)
        self.level_combo.currentIndexChanged.connect(self.refresh_layer_sizes)
        self.scale_spin.valueChanged.connect(self.refresh_layer_sizes)
        self.device_combo.currentIndexChanged.connect(self._on_device_changed)
        self.weights_file_button.clicked.connect(self.choose_weights_file)
        self.weights_default_button.clicked.connect(lambda: self.use_named_weights("DEFAULT"))
        self.weights_torchvision_button.clicked.connect(
            lambda: self.use_named_weights("torchvision")
        )
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.set_network_layer("conv1")
        self._update_weights_label()
        self._set_busy(False)

    def _layer_model(self) -> QStandardItemModel:
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
        return model

    def _viewer_connections(self) -> list[tuple[Any, Any]]:
        layers = self.viewer.layers
        return [
            (layers.events.inserted, self._on_layers_changed),
            (layers.events.removed, self._on_layers_changed),
            (layers.events.removed, self._on_layer_removed),
            (layers.events.moved, self._on_layers_changed),
            (layers.selection.events.active, self._follow_active),
        ]

    def _connect_viewer(self) -> None:
        for emitter, callback in self._viewer_connections():
            emitter.connect(callback)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh_images)
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: self._on_destroyed())

    def _on_destroyed(self) -> None:
        """Stop computing, and stop listening to a viewer that outlives the widget."""
        self._run.abandon()
        for emitter, callback in self._viewer_connections():
            emitter.disconnect(callback)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.refresh_images)

    # -- image layers --------------------------------------------------------------------------

    def _image_layers(self) -> list[Image]:
        """Image layers that are not themselves activations (those are outputs, not inputs)."""
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and METADATA_KEY not in layer.metadata
        ]

    def _on_layers_changed(self, event: Any = None) -> None:
        value = getattr(event, "value", None)
        if value is not None and hasattr(value, "events"):
            value.events.name.connect(self.refresh_images)
        self.refresh_images()

    def refresh_images(self, event: Any = None) -> None:
        """Offer the viewer's Image layers, keeping the current choices where they still exist."""
        names = [layer.name for layer in self._image_layers()]
        for combo, first in (
            (self.image_combo, None),
            (self.green_combo, NO_LAYER),
            (self.blue_combo, NO_LAYER),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            if first is not None:
                combo.addItem(first)
            combo.addItems(names)
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)
        self.refresh_levels()
        self.refresh_status()

    def refresh_levels(self, *args: Any) -> None:
        """Offer the chosen image's pyramid levels, the default one chosen (multiscale only)."""
        source = self.selected_image()
        self.level_combo.blockSignals(True)
        self.level_combo.clear()
        if source is not None and source.multiscale:
            shapes = [tuple(int(n) for n in shape) for shape in source.level_shapes]
            for level, shape in enumerate(shapes):
                _, (h, w), _ = image_planes_shape(shape, bool(source.rgb))
                self.level_combo.addItem(f"{level}: {h}×{w}", level)
            self.level_combo.setCurrentIndex(choose_level(shapes, bool(source.rgb)))
        else:
            self.level_combo.addItem("single resolution", None)
        self.level_combo.setEnabled(self.level_combo.count() > 1)
        self.level_combo.blockSignals(False)
        self.refresh_layer_sizes()

    def set_channel_layers(self, green: str | None, blue: str | None = None) -> None:
        """Use these image layers as the network's green and blue ('Image' is red); None: none."""
        for combo, name in ((self.green_combo, green), (self.blue_combo, blue)):
            index = combo.findText(name if name is not None else NO_LAYER)
            if index < 0:
                raise ValueError(f"There is no image layer named {name!r}.")
            combo.setCurrentIndex(index)

    def selected_sources(self) -> list[Image | None]:
        """The chosen image layer (red), then the green and blue layers (None where none is
        chosen; trailing Nones dropped): one layer for a plain run."""
        layers = [self.selected_image()]
        for combo in (self.green_combo, self.blue_combo):
            name = combo.currentText()
            chosen = combo.currentIndex() > 0 and name in self.viewer.layers
            layers.append(self.viewer.layers[name] if chosen else None)
        while len(layers) > 1 and layers[-1] is None:
            layers.pop()
        return layers

    def _follow_active(self, event: Any = None) -> None:
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and METADATA_KEY not in active.metadata:
            index = self.image_combo.findText(active.name)
            if index >= 0:
                self.image_combo.setCurrentIndex(index)

    def selected_image(self) -> Image | None:
        """The chosen image layer, or None if there is none."""
        name = self.image_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    # -- network layers ------------------------------------------------------------------------

    def set_network_layer(self, layer: str | LayerInfo) -> None:
        """Choose a network layer by name (as in the layer table)."""
        name = find_layer(layer).name
        model = self.layer_combo.model()
        for row in range(model.rowCount()):
            if model.item(row).data(LAYER_ROLE) == name:
                self.layer_combo.setCurrentIndex(row)
                return

    def selected_layer(self) -> LayerInfo:
        return find_layer(self.layer_combo.currentData(LAYER_ROLE))

    def refresh_layer_sizes(self, *args: Any) -> None:
        """Show each network layer's channel count and size for the chosen image."""
        hw = self._network_input_size()
        model = self.layer_combo.model()
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

    def _network_input_size(self) -> tuple[int, int] | None:
        source = self.selected_image()
        if source is None:
            return None
        shape = source.data.shape
        if source.multiscale:
            level = self.level_combo.currentData()
            shape = source.level_shapes[level if level is not None else 0]
        try:
            _, hw, _ = image_planes_shape(tuple(shape), bool(source.rgb))
        except ImageError:
            return None
        return network_input_size(hw, self.scale_spin.value())

    # -- weights -------------------------------------------------------------------------------

    def set_weights(self, weights: Any) -> None:
        """Use ``weights`` ("DEFAULT", "caffe", "torchvision", a file path or None) from the
        next Run on."""
        self._weights = weights
        self._network = None
        self._update_weights_label()

    def set_device(self, device: str) -> None:
        """Run on ``device`` ("auto", "cpu", "cuda" or "mps") from the next Run on."""
        index = self.device_combo.findData(device)
        if index < 0:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps'; got {device!r}.")
        self.device_combo.setCurrentIndex(index)

    def set_backend(self, backend: str, precision: str = "float32") -> None:
        """Run with ``backend`` ("auto", "torch", "onnxruntime") and ``precision`` from the
        next Run on."""
        for combo, value, name in (
            (self.backend_combo, backend, "backend"),
            (self.precision_combo, precision, "precision"),
        ):
            index = combo.findData(value)
            if index < 0:
                choices = ", ".join(repr(combo.itemData(i)) for i in range(combo.count()))
                raise ValueError(f"{name} must be one of {choices}; got {value!r}.")
            combo.setCurrentIndex(index)

    def _on_device_changed(self, *args: Any) -> None:
        wanted = self.device_combo.currentData()
        if (
            self._network is not None
            and wanted != "auto"
            and (str(self._network.device).split(":")[0] != wanted)
        ):
            self._network = None  # loaded again (from the cache) on the chosen device
            self._update_weights_label()

    def set_network(self, network: Network) -> None:
        """Use this loaded network (e.g. from the console) from the next Run on."""
        self._network = network
        self._update_weights_label()

    def choose_weights_file(self) -> None:
        """Ask for a weights file; it is remembered for the next napari launch."""
        last = remembered(WEIGHTS_FILE)
        path, _ = QFileDialog.getOpenFileName(
            self,
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

    def _update_weights_label(self) -> None:
        self.weights_label.setText(describe_weights(self._weights, self._network))

    # -- running -------------------------------------------------------------------------------

    @property
    def worker(self) -> Any:
        """The running napari worker, or None when ready."""
        return self._run.worker

    @property
    def busy(self) -> bool:
        return self._run.worker is not None

    def _set_busy(self, busy: bool, message: str = "Ready.") -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.status_label.setText(message)

    def run(self) -> None:
        """Start computing the chosen layer for the chosen image (does nothing while busy)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.busy:
            return
        source = self.selected_image()
        if source is None:
            show_error(
                "There is no image to compute on. Open an image (or File > Open Sample "
                "> napari-activations > Face) and choose it under 'Image'."
            )
            return
        info = self.selected_layer()
        sources = self.selected_sources()
        gen = compute_for_image_layer(
            self._network,
            sources if len(sources) > 1 else source,
            info,
            weights=self._weights,
            input_scale=self.scale_spin.value(),
            device=self.device_combo.currentData(),
            level=self.level_combo.currentData(),
            stack_contrast=self.stack_contrast_combo.currentData(),
            include_border=self.border_check.isChecked(),
            backend=self.backend_combo.currentData(),
            precision=self.precision_combo.currentData(),
        )
        worker = create_worker(_guarded, gen, _start_thread=False)
        run = _RunState(
            worker, source, self.contrast_combo.currentData(), self.replace_check.isChecked()
        )
        self._run = run
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        # Plain callables, not widget methods: they still run if the widget is gone.
        worker.finished.connect(lambda: run.after_step(run.release))
        names = " + ".join(repr(layer.name) for layer in sources if layer is not None)
        self._set_busy(True, f"Computing {info.name} for {names}…")
        # The progress bar is made here, before the worker starts: napari's activity dialog
        # processes Qt events while it builds a bar, and a bar built in a progress callback
        # would run the worker's later signals inside that callback.
        run.open_progress(f"Computing {info.name}")
        worker.start()

    def cancel(self) -> None:
        """Stop the running computation; nothing is added."""
        if self._run.worker is not None:
            self._run.cancelled = True
            self._run.worker.quit()
            self.status_label.setText("Cancelling…")

    def _on_progress(self, step: Progress) -> None:
        run = self._run
        run.show_progress(step)
        run.run_deferred()

    def _on_returned(self, result: ActivationResult | _Failure) -> None:
        from napari.utils.notifications import show_error, show_warning

        if self._run.defer(self._on_returned, result):
            return
        source = self._run.source
        if source is None:
            return  # abandoned: the image or the viewer went away while computing
        if isinstance(result, _Failure):
            self._run.outcome = "Ready. The last run failed: see the notification."
            show_error(result.message)
            return
        if self._run.cancelled:
            # Cancel came after the worker's last step but before its result got here: the
            # user asked for nothing to be added, so nothing is.
            self._on_aborted()
            return
        if source not in self.viewer.layers:
            return
        layer = add_activation_layer(
            self.viewer, source, result, contrast=self._run.contrast, replace=self._run.replace
        )
        self._run.outcome = f"Showing {layer.name!r} ({layer.data.shape[0]} channels)."
        if result.level is not None:
            self._run.outcome += f" Computed on pyramid level {result.level}."
        self._run.shown = layer.name
        self.weights_label.setText(result.network.description)
        if result.input_warning:
            self._run.outcome += f" {result.input_warning}"
            show_warning(result.input_warning)
        if not result.network.trained:
            show_warning(
                f"{layer.name!r} was computed with random, untrained weights: its "
                "activations mean nothing. Choose trained weights under 'Weights'."
            )

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        if self._run.defer(self._on_aborted):
            return
        if self._run.source is not None:
            self._run.outcome = "Cancelled."
            show_info("Computation cancelled; nothing was added.")

    def _on_finished(self) -> None:
        if self._run.defer(self._on_finished):
            return
        outcome, self._shown = self._run.outcome, self._run.shown
        self._run = _RunState()
        self._set_busy(False, outcome)
        self.refresh_status()

    def refresh_status(self, event: Any = None) -> None:
        """Keep the status line true to the viewer: it never names a layer that is gone."""
        if self.busy:
            return
        if not self._image_layers():
            self._shown = None
            self.status_label.setText(NO_IMAGE)
        elif self._shown is not None and self._shown not in self.viewer.layers:
            self._shown = None
            self.status_label.setText("Ready.")
        elif self.status_label.text() == NO_IMAGE:
            self.status_label.setText("Ready.")

    def _on_layer_removed(self, event: Any) -> None:
        if self._run.worker is not None and event.value is self._run.source:
            self._run.abandon()


def _remembered_weights() -> str:
    """The weights file chosen at an earlier launch, if it is still there."""
    path = remembered(WEIGHTS_FILE)
    return path if path and os.path.isfile(path) else ""


class _RunState:
    """One computation: its worker, source layer and progress bar.

    A plain object, so that it outlives the widget when the viewer closes mid-run.
    """

    def __init__(
        self,
        worker: Any = None,
        source: Image | None = None,
        contrast: str = "channel",
        replace: bool = False,
    ):
        self.worker = worker
        self.source = source
        self.contrast = contrast
        self.replace = replace
        self.progress: Any = None
        self.finished = False
        self.updating = False  # inside show_progress (napari's bar processes Qt events there)
        self.deferred: list[tuple[Any, tuple]] = []
        self.outcome = "Ready."
        self.shown: str | None = None
        self.cancelled = False

    def open_progress(self, message: str) -> None:
        """Show the run's progress bar (call before the worker starts)."""
        from napari.utils import progress

        self.progress = progress(total=0, desc=message)

    def show_progress(self, step: Progress) -> None:
        """Move the bar to ``step``.

        napari's bar processes Qt events while it updates, so the worker's later signals can
        arrive inside this call: a step is then skipped (the next one shows), and the result,
        the end and the clean-up wait until this call is over (:meth:`after_step`), so that a
        layer is never added to the viewer from inside napari's progress machinery.
        """
        bar = self.progress
        if self.finished or self.updating or bar is None:
            return
        self.updating = True
        try:
            if bar.total != step.total:
                bar.total = step.total
            bar.set_description(step.message)
            bar.update(step.done - bar.n)
        finally:
            self.updating = False

    def defer(self, callback: Any, *args: Any) -> bool:
        """During a progress update, keep ``callback(*args)`` for its end and return True."""
        if self.updating:
            self.deferred.append((callback, args))
        return self.updating

    def after_step(self, callback: Any, *args: Any) -> None:
        """Call ``callback(*args)`` now, or once the progress update under way is over."""
        if not self.defer(callback, *args):
            callback(*args)

    def run_deferred(self) -> None:
        while self.deferred and not self.updating:
            callback, args = self.deferred.pop(0)
            callback(*args)

    def close_progress(self) -> None:
        self.finished = True
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def release(self) -> None:
        """The run is over: close its progress bar, let go of its image layer and worker.

        napari's task list keeps every finished worker, and through the worker's connections
        this object: holding the source here would keep a deleted image in memory.
        """
        self.close_progress()
        self.source = None
        self.worker = None

    def abandon(self) -> None:
        """Forget the source and stop the worker: nothing will be added."""
        self.source = None
        if self.worker is not None:
            self.worker.quit()
