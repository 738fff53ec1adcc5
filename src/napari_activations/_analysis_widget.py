"""The "Activation analysis" dock widget: the reference workflow's questions, one click each.

A thin widget that assembles one page per question (the pages live in :mod:`._qt`, one
module each) over :mod:`napari_activations._analysis_layers` (napari glue) and
:mod:`napari_activations.analysis` (the numbers). It works on the activation layers that the
"SqueezeNet activations" widget or :func:`~napari_activations.show_activations` made:

- Channels: the montage of all channels (click a tile: the channel slider moves there) and the
  strongest channels (by max or mean; click a row to jump).
- Region: rank channels by mean activation inside a Shapes/Labels region against outside it.
- Compare: one network layer for two or more image layers, side by side in grid mode, with a
  difference layer (first minus second) and channels ranked by their change.
- Probe: a pixel's activation across all channels as a bar plot, strongest labelled.
- Network: every layer's output size for the image (``analyzeNetwork``), and the image's top-5
  ImageNet classes.

Compute that can take long (networks, full-resolution reductions) runs in a napari worker
(:class:`~napari_activations._qt.worker.BackgroundRun`), one at a time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from . import _mesa_workaround
from ._analysis_layers import (
    MONTAGE_KEY,
    activation_layers,
    current_channel,
    layer_metadata,
    montage_channel_at,
    network_architecture,
    network_of,
    set_channel,
)
from ._napari_layers import LayerInputError
from ._qt.channels_tab import ChannelsTab
from ._qt.compare_tab import CompareTab
from ._qt.layer_choice import input_images, refill_combo
from ._qt.network_tab import NetworkTab
from ._qt.probe_plot import ProbePlot
from ._qt.probe_tab import ProbeTab
from ._qt.region_tab import RegionTab
from ._qt.worker import BackgroundRun

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .architecture import Architecture
    from .compute import Progress
    from .network import Network

__all__ = ["AnalysisWidget", "ProbePlot"]


class _ViewerHooks:
    """Mouse callbacks on the viewer that reach the widget only while it exists."""

    def __init__(self, viewer: napari.Viewer, widget: AnalysisWidget):
        self._widget = weakref.ref(widget)
        self._viewer = viewer
        viewer.mouse_drag_callbacks.append(self.on_press)
        viewer.mouse_move_callbacks.append(self.on_move)

    def on_press(self, viewer: napari.Viewer, event: Any) -> None:
        widget = self._widget()
        if widget is None:
            self.remove()
        elif event.type == "mouse_press":
            widget.on_viewer_click(event.position)

    def on_move(self, viewer: napari.Viewer, event: Any) -> None:
        widget = self._widget()
        if widget is None:
            self.remove()
        elif widget.probe_tab.hover_check.isChecked():
            widget.probe_at(event.position)

    def remove(self) -> None:
        for callbacks, hook in (
            (self._viewer.mouse_drag_callbacks, self.on_press),
            (self._viewer.mouse_move_callbacks, self.on_move),
        ):
            if hook in callbacks:
                callbacks.remove(hook)


class AnalysisWidget(QWidget):
    """Dock widget "Activation analysis" over the viewer's activation layers.

    Its pages are :attr:`channels_tab`, :attr:`region_tab`, :attr:`compare_tab`,
    :attr:`probe_tab` and :attr:`network_tab`; each page's action is also a method here.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        The network for Compare, Classify and the Network tab; by default the one that made
        the chosen activation layer (any network: SqueezeNet, torchvision's, your own model).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, network: Network | None = None):
        super().__init__()
        _mesa_workaround.install()  # deleting layers must not crash napari (Mesa software GL)
        self.viewer = napari_viewer
        self.network = network
        self._run: BackgroundRun | None = None
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(
            "The activation layer to analyse (made by the SqueezeNet "
            "activations widget or show_activations)."
        )
        self.border_check = QCheckBox("Count the image border")
        self.border_check.setToolTip(
            "Off: 'Find strongest' and 'Rank channels' leave out the border within half a "
            "receptive field of the image edge, where the network's zero padding shows (some "
            "channels answer it on any image, even a blank one)."
        )
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.channels_tab = ChannelsTab(self)
        self.region_tab = RegionTab(self)
        self.compare_tab = CompareTab(self)
        self.probe_tab = ProbeTab(self)
        self.network_tab = NetworkTab(self)
        self.tabs = QTabWidget()
        for page, title in (
            (self.channels_tab, "Channels"),
            (self.region_tab, "Region"),
            (self.compare_tab, "Compare"),
            (self.probe_tab, "Probe"),
            (self.network_tab, "Network"),
        ):
            self.tabs.addTab(page, title)
        top = QFormLayout()
        top.addRow("Activation layer", self.layer_combo)
        top.addRow(self.border_check)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs)
        layout.addWidget(self.status_label)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.refresh_layers)
        self.layer_combo.currentIndexChanged.connect(self.refresh_network_layers)
        self._hooks = _ViewerHooks(self.viewer, self)
        hooks = self._hooks
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: (hooks.remove(), self._detach_run()))
        self.refresh_layers()

    def _detach_run(self) -> None:
        if self._run is not None:
            self._run.detach()

    # -- what the pages share -----------------------------------------------------------------

    def refresh_layers(self, event: Any = None) -> None:
        """Refill the layer choices from the viewer, keeping the current choices."""
        from napari.layers import Labels, Shapes

        layers = self.viewer.layers
        refill_combo(self.layer_combo, [layer.name for layer in activation_layers(self.viewer)])
        regions = [layer.name for layer in layers if isinstance(layer, (Shapes, Labels))]
        refill_combo(self.region_tab.region_combo, regions)
        images = [layer.name for layer in input_images(self.viewer)]
        self.compare_tab.refresh(images, regions)
        refill_combo(self.network_tab.image_combo, images)
        self.refresh_network_layers()

    def refresh_network_layers(self, *args: Any) -> None:
        """Offer the network layers of :meth:`architecture` (Compare, the Network tab)."""
        self.compare_tab.refresh_network_layers()
        self.network_tab.refresh_network_table()

    def activation_layer(self) -> Image | None:
        """The activation layer chosen at the top, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def require_activation_layer(self) -> Image | None:
        """:meth:`activation_layer`, or None after telling the user how to make one."""
        from napari.utils.notifications import show_error

        layer = self.activation_layer()
        if layer is None:
            show_error(
                "There is no activation layer yet: compute one with the SqueezeNet "
                "activations widget (Run), then choose it here."
            )
        return layer

    def jump_to_channel(self, channel: int) -> None:
        """Show ``channel`` of the chosen activation layer (moves the shared channel slider)."""
        layer = self.activation_layer()
        if layer is not None:
            set_channel(self.viewer, layer, channel)
            self.status_label.setText(f"{layer.name}: channel {channel}")

    def architecture(self) -> Architecture | None:
        """The layers of :attr:`network`, else of the chosen activation layer's network
        (SqueezeNet's where there is none); None where that network is no longer held."""
        if self.network is not None:
            return self.network.arch
        try:
            return network_architecture(self.activation_layer())
        except LayerInputError as exc:
            self.status_label.setText(str(exc))
            return None

    def network_for_run(self) -> Callable[[], Network]:
        """What loads the network for Compare and Classify (called in the worker):
        :attr:`network`, else the chosen activation layer's own, else SqueezeNet's default."""
        net, layer = self.network, self.activation_layer()
        if net is not None:
            return lambda: net
        if layer is not None:
            return lambda: network_of(layer)
        from .network import load_squeezenet

        return lambda: load_squeezenet(progress=False)

    def main_widget(self) -> Any:
        """The "SqueezeNet activations" widget docked in the same window, or None."""
        from ._widget import ActivationsWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        return next((w for w in docks.values() if isinstance(w, ActivationsWidget)), None)

    @property
    def worker(self) -> Any:
        """The running napari worker, or None when ready."""
        return self._run.worker if self._run is not None else None

    def start(
        self, gen: Generator[Progress, None, Any], *, on_result: Callable, message: str
    ) -> None:
        """Run ``gen`` in a worker (one at a time); ``on_result`` gets its return value."""
        from napari.utils.notifications import show_error

        if self._run is not None:
            show_error("The analysis widget is still busy; wait for it to finish.")
            return
        status = self.status_label

        def failed(text: str) -> None:
            show_error(text)
            status.setText(f"Failed: {text}")

        self._run = BackgroundRun(
            gen,
            on_result=on_result,
            on_failure=failed,
            on_step=lambda step: status.setText(step.message),
            on_end=self._on_end,
            description=message,
        )
        self._enable_actions(False)
        status.setText(message)
        self._run.start()

    def _on_end(self) -> None:
        self._run = None
        self._enable_actions(True)

    def _enable_actions(self, enabled: bool) -> None:
        for button in (
            self.region_tab.rank_button,
            self.compare_tab.compare_button,
            self.network_tab.classify_button,
        ):
            button.setEnabled(enabled)

    # -- the pages' actions -------------------------------------------------------------------

    def show_montage(self) -> None:
        """Channels: add (or update) the montage of the chosen layer beside it."""
        self.channels_tab.show_montage()

    def find_strongest(self) -> None:
        """Channels: list the shown plane's top-k channels."""
        self.channels_tab.find_strongest()

    def rank_region(self) -> None:
        """Region: rank the chosen layer's channels by the region, in a worker."""
        self.region_tab.rank_region()

    def ticked_images(self) -> list[Image]:
        """Compare: the image layers ticked, in list order."""
        return self.compare_tab.ticked_images()

    def set_ticked_images(self, names: list[str]) -> None:
        """Compare: tick exactly these image layers (the first is "first")."""
        self.compare_tab.set_ticked_images(names)

    def compare(self) -> None:
        """Compare: the ticked images side by side with their difference, in a worker."""
        self.compare_tab.compare()

    def on_viewer_click(self, world_position: Any) -> None:
        """A click in the viewer: a montage tile jumps to its channel; elsewhere, probe."""
        from napari.layers import Image

        for layer in reversed(self.viewer.layers):
            if isinstance(layer, Image) and layer.visible and MONTAGE_KEY in layer.metadata:
                channel = montage_channel_at(layer, world_position)
                source = layer.metadata[MONTAGE_KEY]["activation_layer"]
                if channel is not None and source in self.viewer.layers:
                    self.layer_combo.setCurrentText(source)
                    self.jump_to_channel(channel)
                    return
        if self.probe_tab.probe_check.isChecked():
            self.probe_at(world_position)

    def probe_at(self, world_position: Any) -> None:
        """Probe: the chosen layer's activation across channels at a world position."""
        self.probe_tab.probe_at(world_position)

    def choose_network_row(self, row: int, column: int = 0) -> None:
        """Network: choose that row's network layer for Run and Compare."""
        self.network_tab.choose_network_row(row, column)

    def classify(self) -> None:
        """Network: the chosen image's top-5 ImageNet classes, in a worker."""
        self.network_tab.classify()

    def describe(self) -> str:
        """One line about the chosen activation layer and the channel shown."""
        layer = self.activation_layer()
        if layer is None:
            return "No activation layer."
        meta = layer_metadata(layer)
        return (
            f"{meta['layer']['name']} of {meta.get('source_layer')!r}, channel "
            f"{current_channel(self.viewer, layer)} of {layer.data.shape[0]}"
        )
