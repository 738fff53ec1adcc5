"""The main widget with every kind of network: torchvision's (ResNet-18, random weights) and
the user's own model from a Python file and a state_dict, in a real napari viewer.

Nothing is downloaded: torchvision networks run with random weights, and a download attempt
fails the test (:func:`_no_download`).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SMALL_CNN = """
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.grid = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        return self.grid(self.conv2(self.pool(self.relu1(self.conv1(x)))))


torch.manual_seed(0)
model = SmallCNN({channels})
"""


@pytest.fixture(scope="module", autouse=True)
def _network_before_any_viewer(random_net):
    """Load torch before the first viewer exists, as the conftest's networks need it."""
    return random_net


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """torchvision's weights are never fetched here: an attempt fails the test."""
    from napari_activations import network

    tried = []

    def refuse(entry, title, progress):
        tried.append(title)
        raise network.WeightsUnavailableError("tests never download")

    monkeypatch.setattr(network, "_download", refuse)
    yield
    assert not tried, f"a test tried to download the weights of {tried}"


@pytest.fixture(autouse=True)
def _forget_network():
    """Each test starts, and leaves, with no network remembered (SqueezeNet at launch)."""
    from napari_activations._plugin_settings import NETWORK, remember

    remember(NETWORK, "")
    yield
    remember(NETWORK, "")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def image(viewer):
    rng = np.random.default_rng(0)
    return viewer.add_image(rng.integers(0, 256, (96, 80, 3), dtype=np.uint8), name="Face")


@pytest.fixture
def widget(viewer):
    from napari_activations._widget import ActivationsWidget

    w = ActivationsWidget(viewer, weights=None)
    viewer.window.add_dock_widget(w)
    w.set_device("cpu")
    w.set_backend("torch")
    return w


@pytest.fixture
def confirmed(monkeypatch):
    """Running a user's Python file is confirmed (the paths asked about are recorded)."""
    from napari_activations._qt.network_choice import NetworkChoice

    asked = []
    monkeypatch.setattr(NetworkChoice, "confirm_run", lambda self, path: asked.append(path) or True)
    return asked


def choose(qtbot, widget, name):
    widget.choose_network(name)
    qtbot.waitUntil(lambda: widget.selected_layer() is not None, timeout=60_000)
    assert widget.layer_combo.arch.name == name


def run_and_wait(qtbot, widget, timeout=60_000):
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def menu(widget):
    model = widget.layer_combo.model()
    return [model.item(r) for r in range(model.rowCount())]


def write_model(tmp_path, channels=3, name="small_cnn.py"):
    path = tmp_path / name
    path.write_text(SMALL_CNN.format(channels=channels))
    return path


def load_user_model(qtbot, widget, path, monkeypatch):
    """Choose "Your model…" in the network menu, answering the file dialog with ``path``."""
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    combo = widget.network_choice.combo
    combo.setCurrentIndex(combo.count() - 1)
    qtbot.waitUntil(lambda: not widget.network_choice.busy, timeout=60_000)


def errors(notifications):
    return [m for severity, m in notifications if "error" in severity.lower()]


# -- the network menu -----------------------------------------------------------------------


def test_network_menu_squeezenet_first_then_torchvision_then_your_model(viewer, widget):
    from napari_activations import list_networks

    combo = widget.network_choice.combo
    titles = [combo.itemText(i) for i in range(combo.count())]
    assert titles[0] == "SqueezeNet v1.1" and combo.currentIndex() == 0
    assert [combo.itemData(i) for i in range(combo.count() - 1)] == list_networks()
    assert "ResNet-18" in titles and titles[-1] == "Your model…"
    assert widget.selected_layer().name == "conv1"  # SqueezeNet's menu, as before
    assert "model = MyNet()" in combo.itemData(combo.count() - 1, 3)  # the tooltip says how


def test_resnet18_layer_menu_grouped_by_block_with_sizes(qtbot, viewer, image, widget):
    choose(qtbot, widget, "resnet18")
    rows = menu(widget)
    headers = [r.text() for r in rows if not r.isSelectable()]
    assert headers == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
    ]
    texts = {r.text().split()[0]: r.text() for r in rows if r.isSelectable()}
    assert "layer3.1.relu_1" in texts and "fire2-concat" not in texts
    assert "256 ch, 6×5" in texts["layer3.1.relu_1"]  # stride 16 over the 96 x 80 image
    widget.scale_spin.setValue(2.0)
    texts = {r.text().split()[0]: r.text() for r in menu(widget) if r.isSelectable()}
    assert "256 ch, 12×10" in texts["layer3.1.relu_1"]
    assert "stretched" not in " ".join(texts.values())  # ResNet-18 is aligned throughout
    # The weights rows offer torchvision's weights, random ones and a file.
    choice = widget.weights_choice
    assert choice.random_button.isVisibleTo(widget) and not choice.default_button.isVisibleTo(
        widget
    )
    assert "download once" in choice.torchvision_button.text()
    assert "random" in widget.weights_label.text()  # weights=None is kept for every network
    choice.torchvision_button.click()
    assert "torchvision's ImageNet weights for ResNet-18" in widget.weights_label.text()
    # Back to SqueezeNet: its own menu and its own weights buttons again.
    choose(qtbot, widget, "squeezenet1_1")
    assert menu(widget)[1].text().split()[0] == "conv1"
    assert choice.default_button.isVisibleTo(widget)


def test_resnet18_runs_named_and_described_for_its_network(
    qtbot, viewer, image, widget, notifications, random_net
):
    import napari_activations as na
    from napari_activations._plugin_settings import NETWORK, remembered

    choose(qtbot, widget, "resnet18")
    assert remembered(NETWORK) == "resnet18"
    widget.set_network_layer("layer1.0.relu_1")
    run_and_wait(qtbot, widget)
    assert not errors(notifications), notifications
    layer = viewer.layers["Face: layer1.0.relu_1 (ResNet-18)"]
    assert layer.data.shape == (64, 96, 80)  # exactly over the image
    meta = layer.metadata["napari_activations"]
    assert meta["layer"]["network"] == "resnet18" and meta["layer"]["name"] == "layer1.0.relu_1"
    assert meta["network"] == "ResNet-18" and meta["layer_index"] == 10
    assert meta["weights"]["trained"] is False
    assert "ResNet-18 with RANDOM" in widget.weights_label.text()
    # Input scale and contrast as for SqueezeNet: the same layer, updated, still on the image.
    widget.scale_spin.setValue(2.0)
    widget.contrast_combo.setCurrentIndex(widget.contrast_combo.findData("global"))
    run_and_wait(qtbot, widget)
    assert viewer.layers["Face: layer1.0.relu_1 (ResNet-18)"] is layer
    assert layer.data.native.shape == (64, 48, 40)  # stride 4 over the image seen at 192 x 160
    meta = layer.metadata["napari_activations"]
    assert meta["input_scale"] == 2.0 and meta["contrast"] == "global"
    assert layer.contrast_limits[1] == pytest.approx(float(np.asarray(layer.data.native).max()))
    # Its channel axis is its own, apart from SqueezeNet's conv1 shown beside it.
    na.show_activations(viewer, "Face", "conv1", network=random_net)
    labels = [str(label) for label in viewer.dims.axis_labels]
    assert "layer1.0.relu_1 (ResNet-18) channel" in labels and "conv1 channel" in labels
    assert labels.index("layer1.0.relu_1 (ResNet-18) channel") < labels.index("conv1 channel")


def test_resnet18_in_tiles_equals_one_pass(qtbot, viewer, image, widget, monkeypatch):
    from napari_activations import tiling

    choose(qtbot, widget, "resnet18")
    widget.set_network_layer("layer1.0.relu_1")
    run_and_wait(qtbot, widget)
    layer = viewer.layers["Face: layer1.0.relu_1 (ResNet-18)"]
    whole = np.array(layer.data.native)
    info = widget.selected_layer()
    assert tiling.choose_tile(info, 96, 80, "600k") is not None  # this budget tiles
    monkeypatch.setenv(tiling.MEMORY_BUDGET_ENV, "600k")
    run_and_wait(qtbot, widget)
    tiled = np.asarray(layer.data.native)
    assert np.abs(tiled - whole).max() <= 1e-4 * np.abs(whole).max()


def test_network_is_remembered_for_the_next_launch(qtbot, viewer, widget):
    from napari_activations._widget import ActivationsWidget

    choose(qtbot, widget, "resnet18")
    again = ActivationsWidget(viewer)  # as the widget opens at the next launch
    assert again.network_choice.name == "resnet18"
    assert "torchvision's ImageNet weights for ResNet-18" in again.weights_label.text()
    qtbot.waitUntil(lambda: again.selected_layer() is not None, timeout=60_000)
    assert again.selected_layer().network == "resnet18"


def test_a_network_from_the_console_shows_in_the_menus(qtbot, viewer, widget):
    import napari_activations as na

    net = na.load_network("resnet18", None, device="cpu")
    widget.set_network(net)
    assert widget.network_choice.combo.currentText() == "ResNet-18"
    assert widget.selected_layer().network == "resnet18"
    assert widget.weights_choice.network is net
    assert widget.weights_choice.weights is None  # loading it again needs no download


def test_run_starts_once_the_menu_shows_the_network_while_its_reading_job_winds_down(
    qtbot, viewer, image, widget, monkeypatch
):
    # The menu is filled by the reading job's result, before that job counts as finished:
    # Run pressed in between said "still being read" (and the cancel test below raced it).
    choose(qtbot, widget, "resnet18")
    monkeypatch.setattr(type(widget.network_choice), "busy", property(lambda self: True))
    widget.set_network_layer("conv1")
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert "Face: conv1 (ResNet-18)" in [layer.name for layer in viewer.layers]


def test_cancel_with_resnet18_adds_nothing(qtbot, viewer, image, widget, notifications):
    choose(qtbot, widget, "resnet18")
    widget.set_network_layer("layer4.1.relu_1")
    widget.run()
    worker = widget.worker
    fired = []

    def once(_):
        if not fired:
            fired.append(True)
            widget.cancel()

    worker.yielded.connect(once)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert fired and list(viewer.layers) == [image]
    assert any("cancelled" in m for _, m in notifications)
    assert widget.run_button.isEnabled()


# -- the user's own model -------------------------------------------------------------------


def test_your_model_from_a_python_file_and_a_state_dict(
    qtbot, viewer, image, widget, notifications, confirmed, tmp_path, monkeypatch
):
    import torch

    path = write_model(tmp_path)
    load_user_model(qtbot, widget, path, monkeypatch)
    assert confirmed == [str(path)]  # asked before running it
    assert widget.network_choice.combo.currentText() == "Your model…"
    assert widget.network_choice.state_button.isEnabled()
    rows = menu(widget)
    texts = {r.text().split()[0]: r.text() for r in rows if r.isSelectable()}
    assert list(texts) == ["conv1", "relu1", "pool", "conv2", "grid"]
    assert "8 ch, 96×80" in texts["conv1"] and "16 ch, 48×40" in texts["conv2"]
    # Adaptive pooling to 2 x 2 has no single grid: marked in the menu and its tooltip.
    assert "(stretched: no single grid)" in texts["grid"]
    grid = next(r for r in rows if r.text().startswith("    grid"))
    assert "adaptive pooling" in grid.toolTip() and "stretched" in grid.toolTip()
    assert "SmallCNN, its own weights" in widget.weights_label.text()

    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    assert not errors(notifications), notifications
    layer = viewer.layers["Face: conv1 (SmallCNN)"]
    assert layer.data.shape == (8, 96, 80)
    assert layer.metadata["napari_activations"]["layer"]["network"] == "module:SmallCNN"

    # A state_dict: conv1 answers 1 everywhere, whatever the image.
    state = {
        k: torch.zeros_like(v) for k, v in widget.weights_choice.network.model.state_dict().items()
    }
    state["conv1.bias"] += 1.0
    weights = tmp_path / "small_cnn_weights.pth"
    torch.save(state, weights)
    monkeypatch.setattr(
        "qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *a, **k: (str(weights), "")
    )
    widget.network_choice.state_button.click()
    qtbot.waitUntil(lambda: not widget.network_choice.busy, timeout=60_000)
    assert confirmed == [str(path)]  # the Python file was not run again
    assert "weights from small_cnn_weights.pth" in widget.weights_label.text()
    run_and_wait(qtbot, widget)
    np.testing.assert_allclose(np.asarray(layer.data.native), 1.0)


def test_running_the_python_file_is_asked_first(
    qtbot, viewer, widget, tmp_path, monkeypatch, notifications
):
    from qtpy.QtWidgets import QMessageBox

    path = tmp_path / "side_effect.py"
    marker = tmp_path / "ran"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n")
    asked = []

    def decline(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", decline)
    widget.choose_network("resnet18")
    qtbot.waitUntil(lambda: widget.selected_layer() is not None, timeout=60_000)
    load_user_model(qtbot, widget, path, monkeypatch)
    assert asked and "runs the Python code in side_effect.py" in asked[0]
    assert not marker.exists()  # declined: not run
    assert widget.network_choice.combo.currentText() == "ResNet-18"  # back where it was
    assert widget.selected_layer().network == "resnet18"
    assert not notifications


BAD_FILES = {
    "raises": ("import torch\nraise RuntimeError('no GPU here, sorry')\n", "RuntimeError: no GPU"),
    "no_model": ("import torch\nnet = torch.nn.Conv2d(3, 4, 3)\n", "defines no `model`"),
    "not_python": ("model = (\n", "not valid Python"),
    "not_a_module": ("model = 42\n", "is of type int, not a torch.nn.Module"),
    # Neither traceable nor measurable: it never runs.
    "never_runs": (
        "import torch\n\n\nclass Odd(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.conv = torch.nn.Conv2d(3, 4, 3)\n\n"
        "    def forward(self, x):\n        raise ValueError('I never run')\n\n\nmodel = Odd()\n",
        "cannot run on a 3-channel 224x224 input (ValueError: I never run)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_python_file_is_a_plain_message(
    qtbot, viewer, image, widget, notifications, confirmed, tmp_path, monkeypatch, case
):
    code, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.py"
    path.write_text(code)
    load_user_model(qtbot, widget, path, monkeypatch)
    shown = errors(notifications)
    assert shown and expected in shown[-1], notifications
    assert "Traceback" not in shown[-1] and f"{case}.py" in shown[-1]
    # The viewer stays usable: back on SqueezeNet, which still runs.
    assert widget.network_choice.combo.currentText() == "SqueezeNet v1.1"
    assert widget.selected_layer().name == "conv1"
    run_and_wait(qtbot, widget)
    assert "Face: conv1" in viewer.layers


def test_layers_that_cannot_be_read_are_a_plain_message(
    qtbot, viewer, widget, notifications, monkeypatch
):
    from napari_activations import network

    def broken(name):
        raise RuntimeError("torch.fx gave up")

    monkeypatch.setattr(network, "torchvision_architecture", broken)
    monkeypatch.delitem(network._ARCH_CACHE, "googlenet", raising=False)
    widget.choose_network("googlenet")
    qtbot.waitUntil(lambda: not widget.network_choice.busy, timeout=60_000)
    shown = errors(notifications)
    assert shown and "layers of GoogLeNet: RuntimeError: torch.fx gave up" in shown[-1]
    assert widget.network_choice.combo.currentText() == "SqueezeNet v1.1"
    assert widget.selected_layer().name == "conv1" and widget.layer_combo.isEnabled()


def test_a_state_dict_for_another_architecture_is_a_plain_message(
    qtbot, viewer, image, widget, notifications, confirmed, tmp_path, monkeypatch
):
    import torch

    load_user_model(qtbot, widget, write_model(tmp_path), monkeypatch)
    loaded = widget.weights_choice.network
    other = tmp_path / "resnet_bits.pth"
    torch.save(torch.nn.Conv2d(3, 2, 1).state_dict(), other)
    widget.network_choice.load_state_dict(other)
    qtbot.waitUntil(lambda: not widget.network_choice.busy, timeout=60_000)
    shown = errors(notifications)
    assert shown and "is not a SmallCNN state_dict" in shown[-1], notifications
    assert widget.weights_choice.network is loaded  # the model as it was, still usable
    assert widget.network_choice.combo.currentText() == "Your model…"
    run_and_wait(qtbot, widget)
    assert "Face: conv1 (SmallCNN)" in viewer.layers


def test_a_model_for_five_channels_given_rgb_is_a_plain_message(
    qtbot, viewer, image, widget, notifications, confirmed, tmp_path, monkeypatch
):
    load_user_model(qtbot, widget, write_model(tmp_path, channels=5), monkeypatch)
    assert widget.weights_choice.network.in_channels == 5
    run_and_wait(qtbot, widget)
    shown = errors(notifications)
    assert shown and "takes 5 input channels" in shown[-1], notifications
    assert list(viewer.layers) == [image] and widget.run_button.isEnabled()


def test_load_model_file_from_the_console(tmp_path):
    from napari_activations.user_model import UserModelError, load_model_file

    net = load_model_file(write_model(tmp_path))
    assert net.name == "module:SmallCNN" and net.title == "SmallCNN"
    assert [info.name for info in net.layers][:2] == ["conv1", "relu1"]
    (tmp_path / "weights.pth").write_bytes(b"")
    with pytest.raises(UserModelError, match="not a Python"):
        load_model_file(tmp_path / "weights.pth")
    with pytest.raises(UserModelError, match="No Python file"):
        load_model_file(tmp_path / "missing.py")
