"""Analysis and attribution for networks other than SqueezeNet: ResNet-18 and a user's model.

Random weights throughout (``weights=None``): what is checked is arithmetic and plumbing (layer
tables, peers' numbers, which network a widget runs), not meaning. Small images keep it fast.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import napari_activations as na
from napari_activations.attribution import AttributionError, default_feature_layer
from napari_activations.compute import network_input


@pytest.fixture(scope="module")
def resnet():
    return na.load_network("resnet18", None, device="cpu")


@pytest.fixture(scope="module")
def picture():
    """A (64, 72, 3) uint8 crop of chelsea: every ResNet-18 layer has a pixel."""
    import skimage.data

    return skimage.data.chelsea()[100:164, 150:222].copy()


def _small_cnn():
    """A user's gray-image classifier: two convolutions, then a 3x3 adaptive pool (its grid
    depends on the input size: not aligned) and a linear layer."""
    import torch
    from torch import nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
            self.squash = nn.AdaptiveAvgPool2d(3)
            self.fc = nn.Linear(54, 2)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv1(x)))
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(self.squash(x), 1))

    torch.manual_seed(0)
    return Small()


@pytest.fixture(scope="module")
def small_net():
    return na.load_network(_small_cnn(), device="cpu")


def _close(ours: np.ndarray, theirs: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.abs(theirs).max())
    assert scale > 0, "the peer's map is all zero: the comparison would mean nothing"
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rel * scale)


# --- the layer table -------------------------------------------------------------------------


def test_network_table_of_resnet18_lists_its_layers_with_sizes_that_the_network_computes(
    resnet, picture
):
    table = na.network_table(64, 72, resnet)
    assert list(table["layer"]) == [info.name for info in resnet.layers]
    assert table["aligned"].all()  # ResNet's branches agree everywhere
    conv1 = table[0]
    assert (conv1["layer"], conv1["height"], conv1["width"], conv1["channels"]) == (
        "conv1",
        32,
        36,
        64,
    )
    assert (conv1["stride"], conv1["receptive_field"]) == (2, 7)
    fc = table[list(table["layer"]).index("fc")]
    assert (fc["height"], fc["channels"], fc["stride"], fc["receptive_field"]) == (1, 1000, 0, 0)
    row = table[list(table["layer"]).index("layer2.1.relu_1")]
    acts = na.activations(resnet, picture, resnet.find_layer("layer2.1.relu_1"))
    assert acts.shape == (row["channels"], row["height"], row["width"])
    # the architecture alone gives the same table (menus before weights are loaded)
    np.testing.assert_array_equal(na.network_table(64, 72, resnet.arch), table)
    # SqueezeNet's stays the default
    assert list(na.network_table(64, 72)["layer"]) == na.layer_names()


def test_network_table_of_a_user_cnn_says_which_layer_is_not_aligned(small_net):
    table = na.network_table(24, 30, small_net)
    rows = {row["layer"]: row for row in table}
    assert list(rows) == ["conv1", "relu", "pool", "conv2", "relu_1", "squash", "flatten", "fc"]
    assert (rows["pool"]["height"], rows["pool"]["width"], rows["pool"]["stride"]) == (12, 15, 2)
    squash = rows["squash"]
    assert not squash["aligned"] and "adaptive" in squash["note"]
    assert (squash["height"], squash["width"], squash["stride"]) == (3, 3, 0)
    assert rows["fc"]["aligned"] and rows["fc"]["channels"] == 2
    with pytest.raises(TypeError, match="Network"):
        na.network_table(24, 30, "resnet18")


def test_border_of_native_activations_comes_from_the_named_networks_layer(resnet, picture):
    acts = na.activations(resnet, picture, resnet.find_layer("layer1.0.conv1"))
    info = resnet.find_layer("layer1.0.conv1")
    by_row = na.inside_border(acts, info)
    assert by_row == na.inside_border(acts, "layer1.0.conv1", network=resnet)
    assert by_row != (slice(0, acts.shape[-2]), slice(0, acts.shape[-1]))  # padding shows
    with pytest.raises(na.UnknownLayerError, match="SqueezeNet"):
        na.inside_border(acts, "layer1.0.conv1")  # a name without its network: SqueezeNet's
    top = na.strongest_channels(acts, 3, layer="layer1.0.conv1", network=resnet)
    rows, cols = by_row
    assert top == na.strongest_channels(acts[:, rows, cols], 3)


# --- Grad-CAM and occlusion against the peers ------------------------------------------------


@pytest.fixture(scope="module")
def peer_resnet(resnet):
    model = copy.deepcopy(resnet.model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


@pytest.mark.parametrize(("layer", "module"), [(None, "layer4"), ("layer3.1.relu_1", "layer3")])
def test_resnet18_grad_cam_equals_pytorch_grad_cam_and_captum(
    resnet, peer_resnet, picture, layer, module
):
    """At a block's output (a node that nothing changes in place later), the peers' module
    hooks see the same values as our graph tap."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    info = resnet.find_layer(layer) if layer else default_feature_layer(resnet)
    assert info.name == (layer or "layer4.1.relu_1")
    cls = 7
    ours = na.grad_cam(resnet, picture, cls, layer=layer, resize=False)
    x, *_ = network_input(resnet, picture, info)
    target = peer_resnet.get_submodule(module)
    cam = GradCAM(model=peer_resnet, target_layers=[target])
    try:
        targets = [ClassifierOutputTarget(cls)]
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        theirs = np.maximum(cam.get_cam_image(x, target, targets, acts, grads), 0)[0]
    finally:
        cam.activations_and_grads.release()
    assert ours.shape == theirs.shape == na.output_size(info, *picture.shape[:2])
    _close(ours, theirs)
    captum_map = LayerGradCam(peer_resnet, target).attribute(x, target=cls, relu_attributions=True)
    _close(ours, captum_map[0, 0].detach().numpy())
    placed = na.grad_cam(resnet, picture, cls, layer=layer)
    assert placed.shape == picture.shape[:2] and np.isfinite(placed).all()


def test_resnet18_occlusion_equals_captum(resnet, peer_resnet, picture):
    import torch
    from captum.attr import Occlusion

    ours = na.occlusion_sensitivity(resnet, picture, 7, window=32, stride=16)
    x, *_ = network_input(resnet, picture, "conv1")
    with torch.no_grad():
        theirs = (
            Occlusion(peer_resnet)
            .attribute(
                x,
                sliding_window_shapes=(3, 32, 32),
                strides=(3, 16, 16),
                baselines=x.mean(dim=(2, 3), keepdim=True),
                target=7,
                perturbations_per_eval=16,
            )[0, 0]
            .numpy()
        )
    assert ours.shape == theirs.shape == picture.shape[:2]
    _close(ours, theirs)


def test_a_user_model_without_categories_explains_functions_of_its_output_only(small_net):
    import torch

    image = np.random.default_rng(0).integers(0, 255, (24, 30), dtype=np.uint8)
    with pytest.raises(na.ImageError, match="no categories.*categories=\\["):
        na.classify(small_net, image)
    for target in (1, "cat"):
        with pytest.raises(AttributionError, match="has no categories.*categories=\\[.*lambda"):
            na.grad_cam(small_net, image, target)
    # its default layer is the last aligned one (the 3x3 adaptive pool is not aligned)
    assert default_feature_layer(small_net).name == "relu_1"
    cam = na.grad_cam(small_net, image, lambda out: out[0, 1], resize=False)
    # Grad-CAM by hand: the class score's gradient at relu_1, averaged per channel
    model = small_net.model
    x, *_ = network_input(small_net, image, "relu_1")
    with torch.enable_grad():
        a = torch.relu(model.conv2(model.pool(torch.relu(model.conv1(x))))).requires_grad_(True)
        (grad,) = torch.autograd.grad(model.fc(torch.flatten(model.squash(a), 1))[0, 1], a)
    want = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0].detach().numpy()
    _close(cam, want, 1e-5)
    named = na.load_network(_small_cnn(), device="cpu", categories=["no", "yes"])
    np.testing.assert_allclose(na.grad_cam(named, image, "yes", resize=False), cam, rtol=1e-5)
    assert [c for c, _ in na.classify(named, image, 2)] in (["no", "yes"], ["yes", "no"])


# --- the widgets on another network's activation layers ----------------------------------------


def _wait(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_analysis_widget_runs_on_a_resnet18_activation_layer(
    make_napari_viewer, qtbot, resnet, picture
):
    from napari_activations._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    viewer.add_image(picture, name="Cat", rgb=True)
    viewer.add_image(picture[:, ::-1].copy(), name="Mirrored", rgb=True)
    info = resnet.find_layer("layer1.1.relu_1")
    act = na.show_activations(viewer, "Cat", info, network=resnet)
    widget = AnalysisWidget(viewer)  # no network given: it takes the layer's own
    qtbot.addWidget(widget)
    assert widget.layer_combo.currentText() == act.name
    assert widget.architecture() is resnet.arch
    # Channels
    widget.find_strongest()
    want = na.activations(resnet, picture, info, resize=True)
    rows, cols = want.native_interior()
    expected = na.strongest_channels(want.native[..., rows, cols], 5)
    assert [c for c, _ in widget.channels_tab.strongest] == [c for c, _ in expected]
    # Network: ResNet-18's table for the image
    table = widget.network_tab.network_table
    assert table.rowCount() == len(resnet.layers)
    assert (table.item(0, 0).text(), table.item(0, 1).text()) == ("conv1", "32x36")
    # a row chooses the layer for Compare, and for Run where the activations widget runs
    # ResNet-18 too; otherwise the status says so (no traceback)
    from napari_activations._widget import ActivationsWidget

    main = ActivationsWidget(viewer)
    viewer.window.add_dock_widget(main)
    chosen = resnet.find_layer("layer3.0.relu")
    widget.choose_network_row(resnet.layers.index(chosen))
    assert widget.compare_tab.compare_layer_combo.currentText() == chosen.name
    status = widget.status_label.text()
    assert main.selected_layer() == chosen or "not for Run" in status, status
    # Compare: ResNet-18's layers offered, and computed with ResNet-18
    combo = widget.compare_tab.compare_layer_combo
    offered = [combo.itemText(i) for i in range(combo.count())]
    assert offered == [row.name for row in resnet.layers if not row.is_global]
    combo.setCurrentText("layer2.0.relu_1")
    widget.set_ticked_images(["Cat", "Mirrored"])
    widget.compare()
    _wait(qtbot, widget)
    diff = viewer.layers["Cat − Mirrored: layer2.0.relu_1"]
    native = na.activations(resnet, picture, resnet.find_layer("layer2.0.relu_1"))
    assert diff.data.shape[0] == native.shape[0] == 128
    ranking = widget.compare_tab.comparison_ranking
    assert len(ranking) == 128
    # Classify: ResNet-18's 1000 categories (random weights: any five)
    widget.classify()
    _wait(qtbot, widget)
    assert len(widget.network_tab.classes) == 5
    assert {name for name, _ in widget.network_tab.classes} <= set(resnet.categories)


def test_analysis_widget_on_a_user_model_layer_uses_that_model(make_napari_viewer, qtbot):
    from napari_activations._analysis_layers import network_architecture, network_of
    from napari_activations._analysis_widget import AnalysisWidget
    from napari_activations._napari_layers import LayerInputError

    net = na.load_network(_small_cnn(), device="cpu")
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).integers(0, 255, (24, 30), np.uint8), name="G")
    act = na.show_activations(viewer, "G", net.find_layer("conv2"), network=net)
    assert network_of(act) is net and network_architecture(act) is net.arch
    widget = AnalysisWidget(viewer)
    qtbot.addWidget(widget)
    combo = widget.compare_tab.compare_layer_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "conv1",
        "relu",
        "pool",
        "conv2",
        "relu_1",
        "squash",
    ]
    assert widget.network_tab.network_table.rowCount() == 8
    widget.classify()  # no categories: a plain message, no traceback
    _wait(qtbot, widget)
    assert "no categories" in widget.status_label.text()
    # a layer whose model this session no longer holds (e.g. saved, then opened again)
    copy_ = viewer.add_image(np.zeros((6, 24, 30), np.float32), name="old", metadata=act.metadata)
    with pytest.raises(LayerInputError, match="your own model.*load_network"):
        network_of(copy_)


def test_attribution_widget_offers_the_networks_layers_and_explains_with_it(
    make_napari_viewer, qtbot, resnet, picture
):
    from napari_activations._attribution_widget import AttributionWidget

    viewer = make_napari_viewer()
    viewer.add_image(picture, name="Cat", rgb=True)
    widget = AttributionWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer_combo.currentData() == "relu_conv10"
    widget.set_network(resnet)
    names = [widget.layer_combo.itemData(i) for i in range(widget.layer_combo.count())]
    assert names == [row.name for row in resnet.layers if not row.is_global]
    assert widget.layer_combo.currentData() == "layer4.1.relu_1"
    widget.set_target(7)
    widget.run()
    _wait(qtbot, widget)
    layer = next(lay for lay in viewer.layers if "Grad-CAM" in lay.name)
    np.testing.assert_allclose(
        layer.data, na.grad_cam(resnet, picture, 7), rtol=1e-5, atol=1e-6 * layer.data.max()
    )


def test_resnet18_grad_cam_at_a_node_changed_in_place_later_uses_its_own_values(resnet, picture):
    """``layer2.0.bn2``'s output is changed in place by ``out += identity`` and the in-place
    ReLU after it: the peers' module hooks can see the block's output instead (pytorch-grad-cam
    differs by 82% of the map's maximum here; captum by 74% or 0%, depending on what ran on
    the model before). By hand, with the block written out of place: the same map."""
    import torch

    model = resnet.model
    ours = na.grad_cam(resnet, picture, 7, layer="layer2.0.bn2", resize=False)
    x, *_ = network_input(resnet, picture, "conv1")
    block = model.layer2[0]
    with torch.enable_grad():
        h = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))
        a = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h))))).requires_grad_(True)
        out = torch.relu(a + block.downsample(h))
        out = model.layer4(model.layer3(model.layer2[1](out)))
        score = model.fc(torch.flatten(model.avgpool(out), 1))[0, 7]
        (grad,) = torch.autograd.grad(score, a)
    want = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0].detach().numpy()
    _close(ours, want, 1e-5)


def test_occlusion_fill_by_intensity_is_refused_where_the_network_preprocesses_itself(small_net):
    from dataclasses import replace

    image = np.random.default_rng(3).integers(0, 255, (24, 30), dtype=np.uint8)
    standardised = replace(small_net, preprocess=lambda raw: (raw - raw.mean()) / raw.std())
    kwargs = {"window": 8, "stride": 8}
    with pytest.raises(AttributionError, match="fill='mean'"):
        na.occlusion_sensitivity(standardised, image, lambda out: out[0, 0], fill=0, **kwargs)
    drop = na.occlusion_sensitivity(standardised, image, lambda out: out[0, 0], **kwargs)
    assert drop.shape == image.shape and np.isfinite(drop).all()
