"""The analysis widget's Network tab: every network layer's output for the image
(``analyzeNetwork``) of the network that made the chosen activation layer, and the image's
top-5 classes by that network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton

from .. import analysis
from .._napari_layers import avoid_triton_llvm_crash
from ..compute import Progress, image_planes_shape
from .tab import AnalysisTab
from .tables import fill_table, make_table

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari.layers import Image

    from .._analysis_widget import AnalysisWidget
    from ..network import Network

__all__ = ["NetworkTab"]


class NetworkTab(AnalysisTab):
    """The network-layer table for the chosen image (a row chooses that network layer for
    Run and Compare), and the image's classification."""

    def __init__(self, host: AnalysisWidget):
        super().__init__(host)
        self.classes: list[tuple[str, float]] = []
        self.chosen_layer: str | None = None
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self.refresh_network_table)
        self.classify_button = QPushButton("Classify (top 5)")
        self.classify_button.clicked.connect(self.classify)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        self.network_table = make_table(
            "Every layer's output for this image; click a row to choose that layer for Run "
            "(and Compare)."
        )
        self.network_table.cellClicked.connect(self.choose_network_row)
        form = QFormLayout(self)
        form.addRow("Image", self.image_combo)
        form.addRow(self.classify_button)
        form.addRow(self.classes_label)
        form.addRow(self.network_table)

    def selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        layers = self.host.viewer.layers
        return layers[name] if name in layers else None

    def refresh_network_table(self, *args: Any) -> None:
        """Fill the layer table of the host's network for the chosen image's size."""
        image = self.selected_image()
        arch = self.host.architecture()
        if image is None or arch is None:
            self.network_table.setRowCount(0)
            return
        _, (h, w), _ = image_planes_shape(image.data.shape, image.rgb)
        rows = [
            (
                row["layer"],
                f"{row['height']}x{row['width']}",
                row["channels"],
                _number(row["stride"]) if row["aligned"] else "–",
                _number(row["receptive_field"])
                if row["receptive_field"]
                else ("whole image" if row["aligned"] else f"not aligned: {row['note']}"),
            )
            for row in analysis.network_table(h, w, arch)
        ]
        headers = ["layer", f"output for {h}x{w}", "channels", "stride", "receptive field"]
        fill_table(self.network_table, rows, headers)

    def choose_network_row(self, row: int, column: int = 0) -> None:
        """Choose that row's layer for Run (in the activations widget) and Compare."""
        item = self.network_table.item(row, 0)
        if item is None:
            return
        self.chosen_layer = item.text()
        compare = self.host.compare_tab.compare_layer_combo
        if compare.findText(self.chosen_layer) >= 0:
            compare.setCurrentText(self.chosen_layer)
        main = self.host.main_widget()
        arch = self.host.architecture()
        note = "" if main is not None else " (open the activations widget)"
        if main is not None and arch is not None:
            row = arch.find_layer(self.chosen_layer)
            try:  # the row knows its network: the activations widget may run another one
                main.set_network_layer(row)
                taken = main.selected_layer() == row
            except ValueError:
                taken = False
            if not taken:
                note = (
                    f" (not for Run: the activations widget has another network than {arch.title})"
                )
        self.host.status_label.setText(f"{self.chosen_layer} chosen for Run{note} and Compare.")

    def classify(self) -> None:
        """The chosen image's top-5 classes by the host's network, in a worker."""
        from napari.utils.notifications import show_error

        image = self.selected_image()
        if image is None:
            show_error("There is no image to classify.")
            return
        avoid_triton_llvm_crash()  # before the worker first imports torch
        gen = top_classes(
            self.host.network_for_run(),
            None,
            image.data,
            tuple(float(v) for v in image.contrast_limits),
            bool(image.rgb),
        )
        self.host.start(gen, on_result=self._show_classes, message=f"Classifying {image.name!r}…")

    def _show_classes(self, classes: list[tuple[str, float]]) -> None:
        self.classes = classes
        self.classes_label.setText("\n".join(f"{p:6.1%}  {name}" for name, p in classes))
        self.host.status_label.setText("Classified.")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def top_classes(
    network: Network | Callable[[], Network] | None,
    weights: Any,
    data: Any,
    intensity_range: Any,
    rgb: bool,
    k: int = 5,
) -> Generator[Progress, None, list[tuple[str, float]]]:
    """The image's top-``k`` classes by ``network`` (a Network, a function that loads one, or
    None: SqueezeNet with ``weights``), loaded here, in the worker (a Progress generator).

    Raises :class:`~napari_activations.ImageError` for a network without categories."""
    from .. import compute

    if callable(network):
        yield Progress(0, 1, "Loading the network")
        network = network()
    if network is None:
        yield Progress(0, 1, "Loading SqueezeNet")
        from ..network import load_squeezenet

        network = load_squeezenet(weights, progress=False)
    yield Progress(0, 1, "Classifying")
    return compute.classify(network, data, k, intensity_range=intensity_range, rgb=rgb)
