"""The "Class attribution" dock widget: Grad-CAM and occlusion sensitivity over an image.

A thin Qt skin over :mod:`napari_activations._attribution_layers`: pick the image, the method
(Grad-CAM with its network layer, or occlusion with its window and stride) and the target
class (one of the image's top 5, filled in by "Top 5", or any category of the network typed in),
then Run. The compute runs in a napari ``thread_worker`` with a progress bar and Cancel, and
the result becomes, or updates, the layer ``"<image>: Grad-CAM <class>"``.

The "Region" section (:mod:`._qt.attribution_region`) takes a Shapes or Labels layer drawn
over the image: "Rank classes in region" lists the classes whose Grad-CAM is strongest there
(click one to explain it), and with "Explain the score inside the region" checked, Run
explains the class-score map's mean inside the region instead of the whole image's score.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from . import _mesa_workaround
from ._attribution_layers import (
    AttributionResult,
    add_attribution_layer,
    compute_attribution_for_image_layer,
    rank_classes_for_image_layer,
)
from ._napari_layers import avoid_triton_llvm_crash
from ._qt.attribution_method import AttributionMethod
from ._qt.attribution_region import RegionSection
from ._qt.class_choice import ClassChoice
from ._qt.layer_choice import input_images, refill_combo
from ._qt.network_tab import top_classes
from ._qt.worker import BackgroundRun, RunOutcome, run_layout
from .architecture import SQUEEZENET
from .compute import Progress

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = ["AttributionWidget"]


class AttributionWidget(RunOutcome, QWidget):
    """Dock widget: which parts of the image made the network say this class?

    Parameters
    ----------
    napari_viewer : napari.Viewer
    network : Network, optional
        Use this network (any: SqueezeNet, torchvision's, your own model) instead of loading
        SqueezeNet; its layers fill the Grad-CAM layer menu and its categories the classes.
    weights : "DEFAULT", path or None
        SqueezeNet's weights to load when no ``network`` is given.
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        network: Network | None = None,
        weights: Any = "DEFAULT",
    ):
        super().__init__()
        self.viewer = napari_viewer
        self._network = network
        self._weights = weights
        self._run: BackgroundRun | None = None
        _mesa_workaround.install()  # deleting layers must not crash napari (Mesa software GL)
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_images)
        self.viewer.layers.events.removed.connect(self.refresh_images)
        # A lambda, not a method: it must run while the widget is being destroyed.
        self.destroyed.connect(lambda *_: self._disconnect())
        self.refresh_images()

    def _build(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to explain (Image layers only).")
        self.method = AttributionMethod(self)
        for name in ("method_combo", "layer_combo", "window_spin", "stride_spin"):
            setattr(self, name, getattr(self.method, name))
        self.classes = ClassChoice(self)
        self.target_combo, self.top5_button = self.classes.target_combo, self.classes.top5_button
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        self.classes.add_rows(form)
        self.method.add_rows(form)
        self.method.set_layers(SQUEEZENET if self._network is None else self._network.arch)
        layout = run_layout(self, form)
        self.region = RegionSection(self.viewer, self.set_target, self.image_combo)
        self.region.rank_button.clicked.connect(self.rank_in_region)
        layout.addWidget(self.region)
        layout.addStretch(1)

        self.top5_button.clicked.connect(self.fill_top5)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._set_busy(False)

    def _disconnect(self) -> None:
        if self._run is not None:
            self._run.detach()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                event.disconnect(self.refresh_images)

    def refresh_images(self, event: Any = None) -> None:
        """Refill the image list (the plugin's own results are not offered as images)."""
        if refill_combo(self.image_combo, [layer.name for layer in input_images(self.viewer)]):
            self.region.clear_ranking()  # the ranking's image is gone

    def selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def set_weights(self, weights: Any) -> None:
        """SqueezeNet's weights for the next run ("DEFAULT", a path, or None for random);
        forgets the network."""
        self._weights = weights
        if self._network is not None and self._network.arch is not SQUEEZENET:
            self.method.set_layers(SQUEEZENET)
        self._network = None

    def set_network(self, network: Network) -> None:
        """Use this network (e.g. one loaded in the console) for the next runs: its layers are
        offered for Grad-CAM, and Top 5 lists its classes."""
        old = SQUEEZENET if self._network is None else self._network.arch
        self._network = network
        if network.arch is not old:
            self.method.set_layers(network.arch)
            self.classes.offer([])

    def set_method(self, method: str) -> None:
        """Choose "grad-cam" or "occlusion" for the next run."""
        self.method.set_method(method)

    def set_target(self, target: str | int) -> None:
        self.classes.set_target(target)

    def target(self) -> str | int:
        """The class typed or chosen: an index where it is a whole number, else a name."""
        return self.classes.target()

    @property
    def busy(self) -> bool:
        return self._run is not None

    @property
    def worker(self) -> Any:
        """The running napari worker, or None when ready."""
        return self._run.worker if self._run is not None else None

    def _set_busy(self, busy: bool, message: str = "Ready.") -> None:
        for button in (self.run_button, self.top5_button, self.region.rank_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.status_label.setText(message)

    # -- actions ------------------------------------------------------------------------------

    def _start(self, gen: Generator[Progress], on_result: Callable, message: str) -> None:
        self._outcome = "Ready."
        self._run = BackgroundRun(
            gen,
            on_result=on_result,
            on_failure=self._on_failure,
            on_cancelled=self._on_cancelled,
            on_end=self._on_finished,
            description=message,
        )
        self._set_busy(True, message)
        self._run.start()

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
        avoid_triton_llvm_crash()  # before the worker first imports torch
        gen = top_classes(
            self._network,
            self._weights,
            source.data,
            tuple(float(v) for v in source.contrast_limits),
            bool(source.rgb),
        )
        self._start(gen, self._on_top5, f"Classifying {source.name!r}…")

    def _on_top5(self, result: Any) -> None:
        self.classes.offer(result)
        self._outcome = f"Top class: {result[0][0]}."

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
        avoid_triton_llvm_crash()  # before the worker first imports torch
        gen = compute_attribution_for_image_layer(
            self._network,
            source,
            method,
            target,
            layer=self.layer_combo.currentData(),
            window=self.window_spin.value() or None,
            stride=self.stride_spin.value() or None,
            weights=self._weights,
            region=self.region.target_region(),
        )
        self._start(
            gen,
            lambda result: self._on_returned(source, result),
            f"Computing {self.method_combo.currentText()} of {target!r} for {source.name!r}…",
        )

    def cancel(self) -> None:
        """Stop the running computation; nothing is added."""
        if self._run is not None:
            self._run.cancel()
            self.status_label.setText("Cancelling…")

    def _on_returned(self, source: Image, result: AttributionResult) -> None:
        from napari.utils.notifications import show_warning

        if source not in self.viewer.layers:
            return
        layer = add_attribution_layer(self.viewer, source, result)
        self._outcome = f"Showing {layer.name!r}."
        if not result.network.trained:
            show_warning(
                f"{layer.name!r} was computed with random, untrained weights: it means nothing."
            )

    def _on_finished(self) -> None:
        self._run = None
        self._set_busy(False, self._outcome)

    # -- region: rank classes inside it, explain the score inside it ---------------------------

    def set_region(self, name: str | None) -> None:
        """Use that Shapes or Labels layer as the region target (None: the whole image)."""
        self.region.set_region(name)

    def ranked_classes(self) -> list[str]:
        """The classes listed by the last ranking, strongest first."""
        return self.region.ranked_classes()

    def rank_in_region(self) -> None:
        """Rank every class by its Grad-CAM inside the region (in a worker) and list the top 5."""
        if self.busy or self._no_image():
            return
        if (region := self.region.required_region()) is None:
            return
        source = self.selected_image()
        self.region.expect_ranking()  # shown only if image and region stay as they are
        gen = rank_classes_for_image_layer(self._network, source, region, 5, weights=self._weights)
        self._start(gen, self._on_ranked, f"Ranking classes in {region.name!r}…")

    def _on_ranked(self, result: Any) -> None:
        if self.region.show_ranking(result):
            self._outcome = f"Strongest class in the region: {result[0][1]}."
