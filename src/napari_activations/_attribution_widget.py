"""The "Class attribution" dock widget: Grad-CAM and occlusion sensitivity over an image.

A thin Qt skin over :mod:`napari_activations._attribution_layers`: pick the image, the method
(Grad-CAM with its network layer, or occlusion with its window and stride) and the target
class (one of the image's top 5, filled in by "Top 5", or any ImageNet category typed in),
then Run. The compute runs in a napari ``thread_worker`` with a progress bar and Cancel, and
the result becomes, or updates, the layer ``"<image>: Grad-CAM <class>"``.

The "Region" section takes a Shapes or Labels layer drawn over the image: "Rank classes in
region" lists the classes whose Grad-CAM is strongest there (click one to explain it), and
with "Explain the score inside the region" checked, Run explains the class-score map's mean
inside the region instead of the whole image's score.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._attribution_layers import (
    AttributionResult,
    add_attribution_layer,
    compute_attribution_for_image_layer,
    rank_classes_for_image_layer,
    region_layers,
)
from ._napari_layers import LayerInputError, avoid_triton_llvm_crash, unproxy
from ._widget import _RunState
from .attribution import AttributionError
from .compute import ImageError, Progress
from .layers import LAYERS, UnknownLayerError
from .network import DeviceUnavailableError, WeightsError

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = ["AttributionWidget"]

USER_ERRORS = (
    ImageError,
    WeightsError,
    LayerInputError,
    UnknownLayerError,
    DeviceUnavailableError,
    AttributionError,
)
AUTO = 0  # spin-box value meaning "the default for this image"


def _guarded(gen: Generator) -> Generator[Progress, None, Any]:
    """Run ``gen``; an error meant for users is returned as its message (a str)."""
    try:
        return (yield from gen)
    except USER_ERRORS as exc:
        return str(exc)


def _top5(
    network: Network | None, weights: Any, data: Any, intensity_range: Any, rgb: bool
) -> Generator[Progress, None, Any]:
    from . import compute

    avoid_triton_llvm_crash()
    if network is None:
        yield Progress(0, 1, "Loading SqueezeNet")
        from .network import load_squeezenet

        network = load_squeezenet(weights, progress=False)
    yield Progress(0, 1, "Classifying")
    return compute.classify(network, data, 5, intensity_range=intensity_range, rgb=rgb)


class AttributionWidget(QWidget):
    """Dock widget: which parts of the image made the network say this class?

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        Use this network instead of loading one.
    weights : "DEFAULT", path or None
        Weights to load when no ``network`` is given.
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        network: Network | None = None,
        weights: Any = "DEFAULT",
    ):
        super().__init__()
        self.viewer = unproxy(napari_viewer)
        self._network = network
        self._weights = weights
        self._run = _RunState()
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_images)
        self.viewer.layers.events.removed.connect(self.refresh_images)
        self.destroyed.connect(self._disconnect)
        self.refresh_images()

    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to explain (Image layers only).")
        self.method_combo = QComboBox()
        self.method_combo.addItem("Grad-CAM", "grad-cam")
        self.method_combo.addItem("Occlusion sensitivity", "occlusion")
        self.target_combo = QComboBox()
        self.target_combo.setEditable(True)
        self.target_combo.setToolTip(
            "The class to explain: press 'Top 5' for the image's five "
            "most likely classes, or type a category name or index."
        )
        self.top5_button = QPushButton("Top 5")
        self.layer_combo = QComboBox()
        for info in LAYERS:
            if not info.is_global:
                self.layer_combo.addItem(info.name, info.name)
        self.layer_combo.setCurrentIndex(self.layer_combo.count() - 1)  # relu_conv10
        self.layer_combo.setToolTip(
            "Grad-CAM weights this network layer's channels by the "
            "class score's gradient; default: the last one before "
            "global pooling."
        )
        self.window_spin = QSpinBox()
        self.window_spin.setRange(AUTO, 4096)
        self.window_spin.setSpecialValueText("auto (a fifth of the shorter side)")
        self.window_spin.setSuffix(" px")
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(AUTO, 4096)
        self.stride_spin.setSpecialValueText("auto (half the window)")
        self.stride_spin.setSuffix(" px")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Method", self.method_combo)
        target_row = QHBoxLayout()
        target_row.addWidget(self.target_combo, 1)
        target_row.addWidget(self.top5_button)
        form.addRow("Class", target_row)
        form.addRow("Network layer", self.layer_combo)
        form.addRow("Window", self.window_spin)
        form.addRow("Stride", self.stride_spin)
        self._form = form
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self._build_region())
        layout.addStretch(1)

        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.top5_button.clicked.connect(self.fill_top5)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._on_method_changed()
        self._set_busy(False)

    def _disconnect(self, *args: Any) -> None:
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                event.disconnect(self.refresh_images)

    # -- state --------------------------------------------------------------------------------

    def _image_layers(self) -> list[Image]:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not _is_attribution(layer)
        ]

    def refresh_images(self, event: Any = None) -> None:
        """Refill the image list (attribution layers are not offered as images)."""
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    def selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def set_weights(self, weights: Any) -> None:
        """Weights for the next run ("DEFAULT", a path, or None for random); forgets the network."""
        self._weights = weights
        self._network = None

    def set_network(self, network: Network) -> None:
        """Use this network (e.g. one loaded in the console) for the next runs."""
        self._network = network

    def set_method(self, method: str) -> None:
        self.method_combo.setCurrentIndex(self.method_combo.findData(method))

    def set_target(self, target: str | int) -> None:
        self.target_combo.setCurrentText(str(target))

    def target(self) -> str | int:
        """The class typed or chosen: an index where it is a whole number, else a name."""
        text = self.target_combo.currentText().strip()
        data = self.target_combo.currentData()
        if (
            data is not None
            and self.target_combo.itemText(self.target_combo.currentIndex()) == text
        ):
            return data
        return int(text) if text.lstrip("-").isdigit() else text

    def _on_method_changed(self, *args: Any) -> None:
        grad_cam = self.method_combo.currentData() == "grad-cam"
        for field, visible in (
            (self.layer_combo, grad_cam),
            (self.window_spin, not grad_cam),
            (self.stride_spin, not grad_cam),
        ):
            field.setVisible(visible)  # QFormLayout.setRowVisible needs Qt 6.4
            self._form.labelForField(field).setVisible(visible)

    @property
    def busy(self) -> bool:
        return self._run.worker is not None

    def _set_busy(self, busy: bool, message: str = "Ready.") -> None:
        self.run_button.setEnabled(not busy)
        self.top5_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.status_label.setText(message)

    # -- actions ------------------------------------------------------------------------------

    def _start(self, gen: Generator, on_returned: Any, message: str) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(_guarded, gen, _start_thread=False)
        run = _RunState(worker, self.selected_image())
        self._run = run
        worker.yielded.connect(run.show_progress)
        worker.returned.connect(on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        worker.finished.connect(lambda: run.release())
        self._set_busy(True, message)
        worker.start()

    def _no_image(self) -> bool:
        from napari.utils.notifications import show_error

        if self.selected_image() is None:
            show_error(
                "There is no image to explain. Open an image (or File > Open Sample > "
                "napari-activations > Face) and choose it under 'Image'."
            )
            return True
        return False

    def fill_top5(self) -> None:
        """Classify the image (in a worker) and offer its top 5 classes as targets."""
        if self.busy or self._no_image():
            return
        source = self.selected_image()
        gen = _top5(
            self._network,
            self._weights,
            source.data,
            tuple(float(v) for v in source.contrast_limits),
            bool(source.rgb),
        )
        self._start(gen, self._on_top5, f"Classifying {source.name!r}…")

    def _on_top5(self, result: Any) -> None:
        from napari.utils.notifications import show_error

        if isinstance(result, str):
            self._run.outcome = "Ready. Classifying failed: see the notification."
            show_error(result)
            return
        self.target_combo.clear()
        for name, p in result:
            self.target_combo.addItem(f"{name} ({p:.0%})", name)
        self.target_combo.setCurrentIndex(0)
        self._run.outcome = f"Top class: {result[0][0]}."

    def run(self) -> None:
        """Compute the map for the chosen image, method and class (does nothing while busy)."""
        from napari.utils.notifications import show_error

        if self.busy or self._no_image():
            return
        target = self.target()
        if target == "":
            show_error("Choose the class to explain: press 'Top 5' or type a category name.")
            return
        source = self.selected_image()
        method = self.method_combo.currentData()
        gen = compute_attribution_for_image_layer(
            self._network,
            source,
            method,
            target,
            layer=self.layer_combo.currentData(),
            window=self.window_spin.value() or None,
            stride=self.stride_spin.value() or None,
            weights=self._weights,
            region=self.selected_region() if self.region_check.isChecked() else None,
        )
        self._start(
            gen,
            self._on_returned,
            f"Computing {self.method_combo.currentText()} of {target!r} for {source.name!r}…",
        )

    def cancel(self) -> None:
        """Stop the running computation; nothing is added."""
        if self._run.worker is not None:
            self._run.worker.quit()
            self.status_label.setText("Cancelling…")

    def _on_returned(self, result: AttributionResult | str) -> None:
        from napari.utils.notifications import show_error, show_warning

        source = self._run.source
        if isinstance(result, str):
            self._run.outcome = "Ready. The last run failed: see the notification."
            show_error(result)
            return
        if source is None or source not in self.viewer.layers:
            return
        layer = add_attribution_layer(self.viewer, source, result)
        self._run.outcome = f"Showing {layer.name!r}."
        if not result.network.trained:
            show_warning(
                f"{layer.name!r} was computed with random, untrained weights: it means nothing."
            )

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        self._run.outcome = "Cancelled."
        show_info("Computation cancelled; nothing was added.")

    def _on_finished(self) -> None:
        outcome = self._run.outcome
        self._run = _RunState()
        self._set_busy(False, outcome)

    # -- region: rank classes inside it, explain the score inside it ---------------------------

    def _build_region(self) -> QGroupBox:
        box = QGroupBox("Region")
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "A Shapes or Labels layer drawn over the image (add one with the layer buttons "
            "and draw a rectangle or polygon)."
        )
        self.region_check = QCheckBox("Explain the score inside the region")
        self.region_check.setToolTip(
            "Run explains the class-score map's mean inside the region (why this class "
            "here?), not the class score of the whole image."
        )
        self.rank_button = QPushButton("Rank classes in region")
        self.rank_table = QTableWidget(0, 2)
        self.rank_table.setHorizontalHeaderLabels(["Class", "Grad-CAM in region"])
        self.rank_table.verticalHeader().setVisible(False)
        self.rank_table.horizontalHeader().setStretchLastSection(True)
        self.rank_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.rank_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.rank_table.setToolTip("Click a class to make it the class to explain.")
        form = QFormLayout()
        form.addRow("Region layer", self.region_combo)
        layout = QVBoxLayout(box)
        layout.addLayout(form)
        layout.addWidget(self.region_check)
        layout.addWidget(self.rank_button)
        layout.addWidget(self.rank_table)
        self.rank_button.clicked.connect(self.rank_in_region)
        self.rank_table.cellClicked.connect(self._on_rank_clicked)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self.refresh_regions)
        self.destroyed.connect(self._disconnect_regions)
        self.refresh_regions()
        return box

    def _disconnect_regions(self, *args: Any) -> None:
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                event.disconnect(self.refresh_regions)

    def refresh_regions(self, event: Any = None) -> None:
        """Refill the region list (Shapes and Labels layers)."""
        current = self.region_combo.currentText()
        names = [layer.name for layer in region_layers(self.viewer)]
        self.region_combo.clear()
        self.region_combo.addItems(names)
        if current in names:
            self.region_combo.setCurrentText(current)
        self.region_check.setEnabled(bool(names))
        self.rank_button.setEnabled(bool(names))
        if not names:
            self.region_check.setChecked(False)

    def selected_region(self) -> Any:
        name = self.region_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def set_region(self, name: str | None) -> None:
        """Use that Shapes or Labels layer as the region target (None: the whole image)."""
        if name is not None:
            self.region_combo.setCurrentText(name)
        self.region_check.setChecked(name is not None)

    def rank_in_region(self) -> None:
        """Rank every class by its Grad-CAM inside the region (in a worker) and list the top 5."""
        from napari.utils.notifications import show_error

        if self.busy or self._no_image():
            return
        region = self.selected_region()
        if region is None:
            show_error(
                "There is no region to rank classes in. Add a Shapes layer, draw a rectangle "
                "or polygon over the image, and choose it under 'Region layer'."
            )
            return
        source = self.selected_image()
        gen = rank_classes_for_image_layer(self._network, source, region, 5, weights=self._weights)
        self._start(gen, self._on_ranked, f"Ranking classes in {region.name!r}…")

    def _on_ranked(self, result: Any) -> None:
        from napari.utils.notifications import show_error

        if isinstance(result, str):
            self._run.outcome = "Ready. Ranking failed: see the notification."
            show_error(result)
            return
        self.rank_table.setRowCount(len(result))
        for row, (index, name, score) in enumerate(result):
            item = QTableWidgetItem(name)
            item.setData(256, index)  # Qt.UserRole
            self.rank_table.setItem(row, 0, item)
            self.rank_table.setItem(row, 1, QTableWidgetItem(f"{score:.4g}"))
        self._run.outcome = f"Strongest class in the region: {result[0][1]}."

    def ranked_classes(self) -> list[str]:
        """The classes listed by the last ranking, strongest first."""
        return [self.rank_table.item(r, 0).text() for r in range(self.rank_table.rowCount())]

    def _on_rank_clicked(self, row: int, column: int) -> None:
        self.set_target(self.rank_table.item(row, 0).text())


def _is_attribution(layer: Any) -> bool:
    from ._attribution_layers import ATTRIBUTION_KEY

    return ATTRIBUTION_KEY in getattr(layer, "metadata", {})
