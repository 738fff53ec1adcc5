"""The "Activation analysis" dock widget: the reference workflow's questions, one click each.

A Qt skin over :mod:`napari_activations._analysis_layers` (napari glue) and
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

Compute that can take long (networks, full-resolution reductions) runs in napari worker
threads; callbacks are methods that tests call directly.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from . import analysis
from ._analysis_layers import (
    MONTAGE_KEY,
    activation_layers,
    compare_images,
    current_channel,
    current_plane_activations,
    is_activation_layer,
    layer_metadata,
    montage_channel_at,
    native_activations,
    network_for,
    pixel_under,
    region_mask,
    set_channel,
    show_comparison,
    show_montage,
)
from ._napari_layers import LayerInputError, avoid_triton_llvm_crash
from .alignment import AlignedActivations
from .compute import ImageError, Progress, image_planes_shape
from .layers import find_layer, layer_names
from .network import WeightsError

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer

    from .network import Network

__all__ = ["AnalysisWidget", "ProbePlot"]

WHOLE_IMAGE = "(whole image)"

# Errors whose message is written for users: shown as they are; anything else is a bug that
# napari's own error notification reports with its traceback.
USER_ERRORS = (ImageError, WeightsError, LayerInputError, ValueError, IndexError)


def fill_table(table: QTableWidget, rows: np.ndarray | list[tuple], headers: list[str]) -> None:
    """Show ``rows`` (a structured array, or tuples) in ``table``; the first column is the
    channel or layer that a click selects."""
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, (float, np.floating)):
                text = "–" if np.isnan(value) else f"{value:.4g}"
            else:
                text = str(value)
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()


def _table(tooltip: str) -> QTableWidget:
    table = QTableWidget()
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.setToolTip(tooltip)
    table.setMinimumHeight(140)
    return table


@dataclass(frozen=True)
class _Failure:
    message: str


def _guarded_call(func: Any, *args: Any, **kwargs: Any) -> Generator[Progress, None, Any]:
    """Call ``func`` (draining it when it is a Progress generator); errors meant for users
    come back as a :class:`_Failure`."""
    try:
        result = func(*args, **kwargs)
        if inspect.isgenerator(result):
            result = yield from result
        return result
    except USER_ERRORS as exc:
        return _Failure(str(exc))


class ProbePlot(QWidget):
    """Bar plot of one pixel's activation across channels; the strongest are labelled.

    Click a bar to emit :attr:`channel_clicked`.
    """

    channel_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.values = np.zeros(0, dtype=np.float32)
        self.labelled: list[int] = []
        self.setMinimumHeight(130)
        self.setToolTip(
            "Activation of every channel at the probed pixel; click a bar to show that channel."
        )

    def set_values(self, values: np.ndarray, labelled: list[int]) -> None:
        self.values = np.asarray(values, dtype=np.float32)
        self.labelled = list(labelled)
        self.update()

    def _bar_width(self) -> float:
        return self.width() / max(len(self.values), 1)

    def channel_at(self, x: float) -> int | None:
        if not len(self.values):
            return None
        c = int(x // self._bar_width())
        return c if 0 <= c < len(self.values) else None

    def mousePressEvent(self, event: Any) -> None:
        c = self.channel_at(event.position().x())
        if c is not None:
            self.channel_clicked.emit(c)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        v = self.values
        if len(v):
            top, bottom = 14.0, self.height() - 2.0
            hi, lo = max(float(v.max()), 0.0), min(float(v.min()), 0.0)
            span = (hi - lo) or 1.0
            zero = top + (bottom - top) * hi / span
            bw = self._bar_width()
            painter.setPen(Qt.PenStyle.NoPen)
            for c, value in enumerate(v):
                y = top + (bottom - top) * (hi - float(value)) / span
                colour = QColor(230, 120, 60) if c in self.labelled else QColor(140, 150, 170)
                painter.fillRect(
                    QRectF(c * bw, min(y, zero), max(bw - 1, 1), abs(zero - y)), colour
                )
            painter.setPen(QPen(QColor(200, 200, 200)))
            painter.drawLine(0, int(zero), self.width(), int(zero))
            for c in self.labelled:
                y = top + (bottom - top) * (hi - float(v[c])) / span
                text = str(c)
                tw = painter.fontMetrics().horizontalAdvance(text)
                left = min(max((c + 0.5) * bw - tw / 2, 0.0), self.width() - tw)  # stay inside
                painter.drawText(
                    QRectF(left, max(y - 14, 0), tw, 12), Qt.AlignmentFlag.AlignCenter, text
                )
        painter.end()


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
        elif widget.hover_check.isChecked():
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

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        The network for Compare and Classify; by default the one whose weights made the chosen
        activation layer (loaded from napari-activations' cache).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, network: Network | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.network = network
        self.worker: Any = None
        self.ranking: np.ndarray | None = None
        self.comparison_ranking: np.ndarray | None = None
        self.strongest: list[tuple[int, float]] = []
        self.probed: np.ndarray | None = None
        self.classes: list[tuple[str, float]] = []
        self.chosen_layer: str | None = None
        self._build()
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.refresh_layers)
        self._hooks = _ViewerHooks(self.viewer, self)
        self.destroyed.connect(self._hooks.remove)
        self.refresh_layers()

    # -- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(
            "The activation layer to analyse (made by the SqueezeNet "
            "activations widget or show_activations)."
        )
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_channels(), "Channels")
        self.tabs.addTab(self._build_region(), "Region")
        self.tabs.addTab(self._build_compare(), "Compare")
        self.tabs.addTab(self._build_probe(), "Probe")
        self.tabs.addTab(self._build_network(), "Network")
        top = QFormLayout()
        top.addRow("Activation layer", self.layer_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs)
        layout.addWidget(self.status_label)

    def _build_channels(self) -> QWidget:
        self.normalize_combo = QComboBox()
        self.normalize_combo.addItem("each channel (mat2gray per tile)", "channel")
        self.normalize_combo.addItem("all together (one range)", "global")
        self.montage_button = QPushButton("Show montage")
        self.montage_button.setToolTip(
            "All channels as a grid beside the layer; click a tile to show that channel."
        )
        self.montage_button.clicked.connect(self.show_montage)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 1000)
        self.k_spin.setValue(5)
        self.by_combo = QComboBox()
        self.by_combo.addItem("maximum", "max")
        self.by_combo.addItem("mean", "mean")
        self.border_check = QCheckBox("Count the image border")
        self.border_check.setToolTip(
            "Off: 'Find strongest' and 'Rank channels' leave out the border within half a "
            "receptive field of the image edge, where the network's zero padding shows (some "
            "channels answer it on any image, even a blank one)."
        )
        self.strongest_button = QPushButton("Find strongest")
        self.strongest_button.clicked.connect(self.find_strongest)
        self.strongest_table = _table("Click a row to show that channel.")
        self.strongest_table.cellClicked.connect(
            lambda r, _: self._jump_to_row(self.strongest_table, r)
        )
        form = QFormLayout()
        form.addRow("Tiles scaled", self.normalize_combo)
        form.addRow(self.montage_button)
        row = QHBoxLayout()
        row.addWidget(QLabel("Top"))
        row.addWidget(self.k_spin)
        row.addWidget(QLabel("by"))
        row.addWidget(self.by_combo)
        form.addRow(row)
        form.addRow(self.border_check)
        form.addRow(self.strongest_button)
        form.addRow(self.strongest_table)
        return self._page(form)

    def _build_region(self) -> QWidget:
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "A Shapes or Labels layer marking the region (e.g. an eye, a nucleus)."
        )
        self.sort_combo = QComboBox()
        self.sort_combo.addItem("ratio inside / outside", "ratio")
        self.sort_combo.addItem("difference inside − outside", "difference")
        self.rank_button = QPushButton("Rank channels")
        self.rank_button.clicked.connect(self.rank_region)
        self.region_table = _table(
            "Mean activation inside and outside the region; click a row to show that channel."
        )
        self.region_table.cellClicked.connect(lambda r, _: self._jump_to_row(self.region_table, r))
        form = QFormLayout()
        form.addRow("Region", self.region_combo)
        form.addRow("Sort by", self.sort_combo)
        form.addRow(self.rank_button)
        form.addRow(self.region_table)
        return self._page(form)

    def _build_compare(self) -> QWidget:
        self.images_list = QListWidget()
        self.images_list.setToolTip(
            "Tick two or more image layers of the same size; the "
            "difference is the first ticked minus the second (drag "
            "to reorder)."
        )
        self.images_list.setMaximumHeight(90)
        self.images_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.compare_layer_combo = QComboBox()
        self.compare_layer_combo.addItems(layer_names()[:-2])  # not the 1x1 global layers
        self.compare_layer_combo.setCurrentText("fire6-relu_squeeze1x1")
        self.compare_region_combo = QComboBox()
        self.change_combo = QComboBox()
        self.change_combo.addItem("drop: mean (first − second)", "difference")
        self.change_combo.addItem("any change: mean |first − second|", "absolute")
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(self.compare)
        self.compare_table = _table(
            "Channels ranked by their change; click a row to show "
            "that channel in every compared layer."
        )
        self.compare_table.cellClicked.connect(
            lambda r, _: self._jump_to_row(self.compare_table, r)
        )
        form = QFormLayout()
        form.addRow("Images", self.images_list)
        form.addRow("Network layer", self.compare_layer_combo)
        form.addRow("Region", self.compare_region_combo)
        form.addRow("Rank by", self.change_combo)
        form.addRow(self.compare_button)
        form.addRow(self.compare_table)
        return self._page(form)

    def _build_probe(self) -> QWidget:
        self.probe_check = QCheckBox("Probe on click")
        self.probe_check.setChecked(True)
        self.hover_check = QCheckBox("…and while hovering")
        self.probe_plot = ProbePlot()
        self.probe_plot.channel_clicked.connect(self.jump_to_channel)
        self.probe_label = QLabel("Click a pixel of the image.")
        self.probe_label.setWordWrap(True)
        layout = QVBoxLayout()
        row = QHBoxLayout()
        row.addWidget(self.probe_check)
        row.addWidget(self.hover_check)
        layout.addLayout(row)
        layout.addWidget(self.probe_plot)
        layout.addWidget(self.probe_label)
        return self._page(layout)

    def _build_network(self) -> QWidget:
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self.refresh_network_table)
        self.classify_button = QPushButton("Classify (top 5)")
        self.classify_button.clicked.connect(self.classify)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        self.network_table = _table(
            "Every layer's output for this image; click a row to "
            "choose that layer for Run (and Compare)."
        )
        self.network_table.cellClicked.connect(self.choose_network_row)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow(self.classify_button)
        form.addRow(self.classes_label)
        form.addRow(self.network_table)
        return self._page(form)

    @staticmethod
    def _page(layout: Any) -> QWidget:
        page = QWidget()
        page.setLayout(layout)
        return page

    # -- layers -------------------------------------------------------------------------------

    def refresh_layers(self, event: Any = None) -> None:
        """Refill the layer choices from the viewer, keeping the current choices."""
        from napari.layers import Image, Labels, Shapes

        def refill(combo: QComboBox, names: list[str]) -> None:
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)

        refill(self.layer_combo, [layer.name for layer in activation_layers(self.viewer)])
        regions = [
            layer.name for layer in self.viewer.layers if isinstance(layer, (Shapes, Labels))
        ]
        refill(self.region_combo, regions)
        refill(self.compare_region_combo, [WHOLE_IMAGE] + regions)
        images = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not self._is_derived(layer)
        ]
        refill(self.image_combo, images)
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
        self.refresh_network_table()

    @staticmethod
    def _is_derived(layer: Layer) -> bool:
        """Layers this plugin made (activations, differences, montages): not inputs."""
        return is_activation_layer(layer) or MONTAGE_KEY in layer.metadata

    def activation_layer(self) -> Image | None:
        """The activation layer chosen at the top, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _require_activation_layer(self) -> Image | None:
        from napari.utils.notifications import show_error

        layer = self.activation_layer()
        if layer is None:
            show_error(
                "There is no activation layer yet: compute one with the SqueezeNet "
                "activations widget (Run), then choose it here."
            )
        return layer

    def ticked_images(self) -> list[Image]:
        """The image layers ticked under Compare, in list order."""
        names = [
            self.images_list.item(i).text()
            for i in range(self.images_list.count())
            if self.images_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        return [self.viewer.layers[n] for n in names if n in self.viewer.layers]

    def set_ticked_images(self, names: list[str]) -> None:
        """Tick exactly these image layers under Compare (the first is "first")."""
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

    # -- channels -----------------------------------------------------------------------------

    def jump_to_channel(self, channel: int) -> None:
        """Show ``channel`` of the chosen activation layer (moves the shared channel slider)."""
        layer = self.activation_layer()
        if layer is not None:
            set_channel(self.viewer, layer, channel)
            self.status_label.setText(f"{layer.name}: channel {channel}")

    def _jump_to_row(self, table: QTableWidget, row: int) -> None:
        item = table.item(row, 0)
        if item is not None:
            self.jump_to_channel(int(item.text()))

    def show_montage(self) -> None:
        """Add (or update) the montage of the chosen layer's channels beside it."""
        layer = self._require_activation_layer()
        if layer is None:
            return
        image, _, m = show_montage(self.viewer, layer, normalize=self.normalize_combo.currentData())
        self.viewer.layers.selection.active = layer
        self.status_label.setText(
            f"{image.name}: {m.channels} channels as {m.grid[0]}x"
            f"{m.grid[1]} tiles; click a tile to show that channel."
        )

    def find_strongest(self) -> None:
        """List the top-k channels of the shown plane, by max or mean (network resolution)."""
        layer = self._require_activation_layer()
        if layer is None:
            return
        plane = current_plane_activations(self.viewer, layer)
        acts = native_activations(plane)
        if isinstance(plane, AlignedActivations) and not self.border_check.isChecked():
            rows, cols = plane.native_interior()  # exact: knows the network input's size
            acts = acts[..., rows, cols]
        self.strongest = analysis.strongest_channels(
            acts, self.k_spin.value(), by=self.by_combo.currentData()
        )
        fill_table(self.strongest_table, self.strongest, ["channel", self.by_combo.currentData()])
        if self.strongest:
            self.jump_to_channel(self.strongest[0][0])

    # -- background work ----------------------------------------------------------------------

    def _start(self, func: Any, *args: Any, on_result: Any, message: str, **kwargs: Any) -> None:
        """Run ``func`` (a function or a Progress generator) in a napari worker thread.

        Errors meant for users are shown as notifications; anything else is a bug, reported by
        napari's own error notification with its traceback.
        """
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.worker is not None:
            show_error("The analysis widget is still busy; wait for it to finish.")
            return
        worker = create_worker(_guarded_call, func, *args, _start_thread=False, **kwargs)
        self.worker = worker
        for button in self._buttons():
            button.setEnabled(False)
        self.status_label.setText(message)
        status = self.status_label

        def returned(value: Any) -> None:
            if isinstance(value, _Failure):
                show_error(value.message)
                status.setText(f"Failed: {value.message}")
            else:
                on_result(value)

        def finished() -> None:
            self.worker = None
            for button in self._buttons():
                button.setEnabled(True)

        worker.yielded.connect(lambda step: status.setText(step.message))
        worker.returned.connect(returned)
        worker.finished.connect(finished)
        worker.start()

    def _buttons(self) -> list[QPushButton]:
        return [self.rank_button, self.compare_button, self.classify_button]

    def _weights_for(self, layer: Layer | None) -> Any:
        return "DEFAULT" if layer is None else network_for(layer)

    # -- region -------------------------------------------------------------------------------

    def rank_region(self) -> None:
        """Rank the chosen layer's channels by the region (inside vs outside), in a worker."""
        from napari.utils.notifications import show_error

        layer = self._require_activation_layer()
        if layer is None:
            return
        name = self.region_combo.currentText()
        if name not in self.viewer.layers:
            show_error("Add a Shapes or Labels layer and mark the region first.")
            return
        try:
            mask = region_mask(self.viewer.layers[name], layer)
        except ValueError as exc:
            show_error(str(exc))
            return
        acts = current_plane_activations(self.viewer, layer)
        sort = self.sort_combo.currentData()
        self._start(
            analysis.rank_channels,
            acts,
            region=mask,
            sort=sort,
            include_border=self.border_check.isChecked(),
            on_result=self._show_region_ranking,
            message=f"Ranking {layer.name} by {name!r}…",
        )

    def _show_region_ranking(self, rows: np.ndarray) -> None:
        self.ranking = rows
        shown = rows[["channel", "inside", "outside", "ratio"]]
        fill_table(self.region_table, shown.tolist(), list(shown.dtype.names))
        if len(rows):
            self.jump_to_channel(int(rows["channel"][0]))

    # -- compare ------------------------------------------------------------------------------

    def compare(self) -> None:
        """Compute the network layer for the ticked images, show them side by side with the
        difference, and rank channels by their change (in a worker)."""
        from napari.utils.notifications import show_error

        images = self.ticked_images()
        if len(images) < 2:
            show_error(
                "Tick two or more image layers to compare (e.g. the samples Face and "
                "Face, one eye covered)."
            )
            return
        region_name = self.compare_region_combo.currentText()
        region_layer = (
            self.viewer.layers[region_name] if region_name in self.viewer.layers else None
        )
        info = find_layer(self.compare_layer_combo.currentText())
        mask = None
        if region_layer is not None:
            try:
                mask = region_mask(region_layer, images[0])
            except ValueError as exc:
                show_error(str(exc))
                return
        self._start(
            compare_images,
            self.network,
            images,
            info,
            region=mask,
            change=self.change_combo.currentData(),
            weights=self._weights_for(self.activation_layer()),
            on_result=lambda result: self._show_comparison(images, result, region_layer),
            message=f"Comparing {info.name} for {', '.join(repr(i.name) for i in images)}…",
        )

    def _show_comparison(
        self, images: list[Image], result: Any, region_layer: Layer | None
    ) -> None:
        if any(image not in self.viewer.layers for image in images):
            return
        if self.network is None:
            self.network = result.results[0].network
        shown = show_comparison(self.viewer, images, result, region_layer)
        self.comparison_ranking = result.ranking
        self.refresh_layers()
        self.layer_combo.setCurrentText(shown[0].name)
        fill_table(self.compare_table, result.ranking.tolist(), list(result.ranking.dtype.names))
        if len(result.ranking):
            self.jump_to_channel(int(result.ranking["channel"][0]))
        self.status_label.setText(f"{shown[-1].name}: channels ranked by their change.")

    # -- probe --------------------------------------------------------------------------------

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
        if self.probe_check.isChecked():
            self.probe_at(world_position)

    def probe_at(self, world_position: Any) -> None:
        """Show the chosen layer's activation across channels at a world position."""
        layer = self.activation_layer()
        if layer is None:
            return
        pixel = pixel_under(layer, world_position)
        if pixel is None:
            return
        y, x = pixel
        acts = current_plane_activations(self.viewer, layer)
        values = analysis.probe(acts, y, x)
        top = analysis.top_channels(values, 5)
        self.probed = values
        self.probe_plot.set_values(values, [c for c, _ in top])
        listed = ", ".join(f"{c} ({v:.3g})" for c, v in top)
        self.probe_label.setText(
            f"{layer.name} at pixel ({round(y)}, {round(x)}); strongest: {listed}"
        )

    # -- network ------------------------------------------------------------------------------

    def _selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def refresh_network_table(self, *args: Any) -> None:
        """Fill the layer table for the chosen image's size."""
        image = self._selected_image()
        if image is None:
            self.network_table.setRowCount(0)
            return
        _, (h, w), _ = image_planes_shape(image.data.shape, image.rgb)
        table = analysis.network_table(h, w)
        rows = [
            (
                row["layer"],
                f"{row['height']}x{row['width']}",
                row["channels"],
                row["stride"] or "–",
                row["receptive_field"] or "whole image",
            )
            for row in table
        ]
        fill_table(
            self.network_table,
            rows,
            ["layer", f"output for {h}x{w}", "channels", "stride", "receptive field"],
        )

    def choose_network_row(self, row: int, column: int = 0) -> None:
        """Choose that row's layer for Run (in the SqueezeNet activations widget) and Compare."""
        item = self.network_table.item(row, 0)
        if item is None:
            return
        self.chosen_layer = item.text()
        if self.compare_layer_combo.findText(self.chosen_layer) >= 0:
            self.compare_layer_combo.setCurrentText(self.chosen_layer)
        main = self._main_widget()
        if main is not None:
            main.set_network_layer(self.chosen_layer)
        self.status_label.setText(
            f"{self.chosen_layer} chosen for Run"
            f"{'' if main is not None else ' (open the SqueezeNet activations widget)'}"
            " and Compare."
        )

    def _main_widget(self) -> Any:
        from ._widget import ActivationsWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        return next((w for w in docks.values() if isinstance(w, ActivationsWidget)), None)

    def classify(self) -> None:
        """The chosen image's top-5 ImageNet classes, in a worker."""
        from napari.utils.notifications import show_error

        image = self._selected_image()
        if image is None:
            show_error("There is no image to classify.")
            return
        data, rgb = image.data, image.rgb
        limits = tuple(float(v) for v in image.contrast_limits)
        network, weights = self.network, self._weights_for(self.activation_layer())
        avoid_triton_llvm_crash()  # before the worker first imports torch

        def run() -> list[tuple[str, float]]:
            from .compute import classify
            from .network import load_squeezenet

            net = network if network is not None else load_squeezenet(weights, progress=False)
            return classify(net, data, 5, intensity_range=limits, rgb=rgb)

        self._start(run, on_result=self._show_classes, message=f"Classifying {image.name!r}…")

    def _show_classes(self, classes: list[tuple[str, float]]) -> None:
        self.classes = classes
        self.classes_label.setText("\n".join(f"{p:6.1%}  {name}" for name, p in classes))
        self.status_label.setText("Classified.")

    # -- info ---------------------------------------------------------------------------------

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
