"""The "SqueezeNet activations" dock widget (for any network: SqueezeNet v1.1 by default).

A thin Qt skin over :mod:`napari_activations._napari_layers`, assembled from the pieces in
:mod:`._qt` (the image rows, the network chooser, the network-layer menu, the run options, the
weights rows): it
runs :func:`~napari_activations._napari_layers.compute_for_image_layer` in a napari worker
with a progress bar (:class:`~napari_activations._qt.worker.BackgroundRun`), and hands the
result to :func:`~napari_activations._napari_layers.add_activation_layer`, exactly as
``show_activations`` does from the console. torch is imported by the worker, on the first Run.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QFormLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from . import _mesa_workaround
from ._export_widget import ExportRow
from ._napari_layers import ActivationResult, add_activation_layer, compute_for_image_layer
from ._qt.image_choice import ImageChoice
from ._qt.layer_choice import input_images
from ._qt.network_choice import NetworkChoice
from ._qt.network_layer_choice import NetworkLayerChoice
from ._qt.run_options import RunOptions
from ._qt.weights_choice import WeightsChoice, describe_weights
from ._qt.worker import BackgroundRun, RunOutcome, run_layout
from .compute import network_input_size
from .layers import LayerInfo

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = ["ActivationsWidget", "describe_weights"]

NO_IMAGE = (
    "No image layer to compute on: open an image (or File > Open Sample > "
    "napari-activations > Face)."
)


class ActivationsWidget(RunOutcome, QWidget):
    """Dock widget: compute one network layer's activations for an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        Use this network instead of loading one (tests, or a network made in the console).
    weights : "DEFAULT", path or None
        Weights to load on the first Run when no ``network`` is given; ``None`` is random
        weights (tests only), for every network chosen. With "DEFAULT" and no ``network``, the
        network chosen at an earlier launch is chosen again.
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
        self.viewer = napari_viewer
        self._run: BackgroundRun | None = None
        self._outcome = "Ready."
        self._source: Image | None = None  # the image of the run under way
        self._shown: str | None = None  # the activation layer the status line names
        self.images = ImageChoice(self.viewer, self)
        self.image_combo, self.level_combo = self.images.image_combo, self.images.level_combo
        self.network_choice = NetworkChoice(self)
        self.layer_combo = NetworkLayerChoice()
        self.options = RunOptions(self)
        for name in ("scale_spin", "contrast_combo", "stack_contrast_combo", "border_check"):
            setattr(self, name, getattr(self.options, name))
        self.replace_check = self.options.replace_check
        self.weights_choice = WeightsChoice(network, weights, self)
        self.weights_label = self.weights_choice.label
        self._build()
        self.images.refreshed.connect(self.refresh_status)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: self._on_destroyed())
        self.images.follow_viewer()
        if network is not None:
            self.set_network(network)
        elif isinstance(weights, str) and weights.upper() == "DEFAULT":
            self.network_choice.choose_remembered()

    def _build(self) -> None:
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.export_row = ExportRow(self.viewer)

        form = QFormLayout()
        self.images.add_rows(form)
        self.network_choice.add_rows(form)
        form.addRow("Network layer", self.layer_combo)
        self.options.add_rows(form)
        self.weights_choice.add_rows(form)
        layout = run_layout(self, form)
        layout.addWidget(self.export_row)
        layout.addStretch(1)

        self.network_choice.named.connect(self.weights_choice.set_network_name)
        self.network_choice.ready.connect(self.layer_combo.set_architecture)
        self.network_choice.loading.connect(self.layer_combo.set_loading)
        self.network_choice.user_loaded.connect(self.weights_choice.set_network)
        self.images.changed.connect(self.refresh_layer_sizes)
        self.scale_spin.valueChanged.connect(self.refresh_layer_sizes)
        self.options.device_combo.currentIndexChanged.connect(
            lambda *_: self.weights_choice.follow_device(self.options.device_combo.currentData())
        )
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._set_busy(False)

    def _on_destroyed(self) -> None:
        """Stop computing, and stop listening to a viewer that outlives the widget."""
        if self._run is not None:
            self._run.detach()
        with contextlib.suppress(RuntimeError, TypeError, ValueError):  # the viewer is gone
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)

    def refresh_layer_sizes(self, *args: Any) -> None:
        """Show each network layer's channel count and size for the chosen image."""
        hw = self.images.planes_size()
        scale = self.scale_spin.value()
        self.layer_combo.show_sizes(None if hw is None else network_input_size(hw, scale))

    def selected_image(self) -> Image | None:
        """The chosen image layer, or None if there is none."""
        return self.images.selected_image()

    def selected_sources(self) -> list[Image | None]:
        """The chosen image (red), green and blue layers (see ImageChoice.selected_sources)."""
        return self.images.selected_sources()

    def set_channel_layers(self, green: str | None, blue: str | None = None) -> None:
        """Use these image layers as the network's green and blue ('Image' is red); None: none."""
        self.images.set_channel_layers(green, blue)

    def set_network_layer(self, layer: str | LayerInfo) -> None:
        """Choose a network layer by name (as in the layer table)."""
        self.layer_combo.set_network_layer(layer)

    def selected_layer(self) -> LayerInfo:
        return self.layer_combo.selected_layer()

    def set_weights(self, weights: Any) -> None:
        """Use ``weights`` ("DEFAULT", "caffe", "torchvision", a path or None) from the next Run."""
        self.weights_choice.set_weights(weights)

    def choose_network(self, name: str) -> None:
        """Use network ``name`` (see :func:`~napari_activations.list_networks`) from the next
        Run on; its layers fill the layer menu (at once, or once read in the background)."""
        self.network_choice.choose(name)

    def set_network(self, network: Network) -> None:
        """Use this loaded network (e.g. from the console) from the next Run on."""
        self.network_choice.show_network(network)
        self.weights_choice.set_network(network)

    def set_device(self, device: str) -> None:
        """Run on ``device`` ("auto", "cpu", "cuda" or "mps") from the next Run on."""
        self.options.set_device(device)

    def set_backend(self, backend: str, precision: str = "float32") -> None:
        """Run with ``backend`` and ``precision`` from the next Run on."""
        self.options.set_backend(backend, precision)

    def choose_weights_file(self) -> None:
        """Ask for a weights file; it is remembered for the next napari launch."""
        self.weights_choice.choose_weights_file()

    # -- running ------------------------------------------------------------------------------

    @property
    def worker(self) -> Any:
        """The running napari worker, or None when ready."""
        return self._run.worker if self._run is not None else None

    @property
    def busy(self) -> bool:
        return self._run is not None

    def _set_busy(self, busy: bool, message: str = "Ready.") -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.status_label.setText(message)

    def run(self) -> None:
        """Start computing the chosen layer for the chosen image (does nothing while busy)."""
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
        info, sources = self.selected_layer(), self.selected_sources()
        if info is None or not self.network_choice.shows(self.layer_combo.arch):
            show_error("The network is still being read: press Run again in a moment.")
            return
        network = self.weights_choice.network
        gen = (compute_for_image_layer if network is None else _compute_on_device)(
            network,
            sources if len(sources) > 1 else source,
            info,
            weights=self.weights_choice.weights,
            level=self.level_combo.currentData(),
            **self.options.chosen(),
        )
        contrast, replace = self.contrast_combo.currentData(), self.replace_check.isChecked()
        self._outcome, self._source = "Ready.", source
        self._run = BackgroundRun(
            gen,
            on_result=lambda result: self._show_result(source, result, contrast, replace),
            on_failure=self._on_failure,
            on_cancelled=self._on_cancelled,
            on_end=self._on_end,
            description=f"Computing {info.name}",
        )
        names = " + ".join(repr(layer.name) for layer in sources if layer is not None)
        self._set_busy(True, f"Computing {info.name} for {names}…")
        self._run.start()

    def cancel(self) -> None:
        """Stop the running computation; nothing is added."""
        if self._run is not None:
            self._run.cancel()
            self.status_label.setText("Cancelling…")

    def _show_result(
        self, source: Image, result: ActivationResult, contrast: str, replace: bool
    ) -> None:
        from napari.utils.notifications import show_warning

        if source not in self.viewer.layers:
            return
        layer = add_activation_layer(
            self.viewer, source, result, contrast=contrast, replace=replace
        )
        self._outcome = f"Showing {layer.name!r} ({layer.data.shape[0]} channels)."
        if result.level is not None:
            self._outcome += f" Computed on pyramid level {result.level}."
        self._shown = layer.name
        self.weights_choice.update_label(result.network)
        if result.input_warning:
            self._outcome += f" {result.input_warning}"
            show_warning(result.input_warning)
        if not result.network.trained:
            show_warning(
                f"{layer.name!r} was computed with random, untrained weights: its "
                "activations mean nothing. Choose trained weights under 'Weights'."
            )

    def _on_end(self) -> None:
        self._run, self._source = None, None
        self._set_busy(False, self._outcome)
        self.refresh_status()

    def refresh_status(self, event: Any = None) -> None:
        """Keep the status line true to the viewer: it never names a layer that is gone."""
        if self.busy:
            return
        if not input_images(self.viewer):
            self._shown = None
            self.status_label.setText(NO_IMAGE)
        elif self._shown is not None and self._shown not in self.viewer.layers:
            self._shown = None
            self.status_label.setText("Ready.")
        elif self.status_label.text() == NO_IMAGE:
            self.status_label.setText("Ready.")

    def _on_layer_removed(self, event: Any) -> None:
        # napari hands plugins proxies of its layers, made afresh on each access: compare ids.
        source = self._source
        if self._run is None or source is None:
            return
        if event.value.unique_id == source.unique_id:
            self._run.abandon()  # the image went away while computing: nothing is added


def _compute_on_device(network: Network, *args: Any, device: Any = "auto", **kwargs: Any) -> Any:
    """:func:`compute_for_image_layer` with a loaded network, moved to ``device`` first (in
    the worker) where it is the user's own model on another device."""
    if network.name.startswith("module:"):
        from .user_model import on_device

        network = on_device(network, device)
    return (yield from compute_for_image_layer(network, *args, device=device, **kwargs))
