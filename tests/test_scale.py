"""Big images and stacks: exact tiling, memory budget, lazy planes, dask in and out."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_activations as na
from napari_activations import tiling


@pytest.fixture(scope="module")
def big_rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)


def _rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["conv1", "fire5-concat", "fire9-concat"])
def test_tiles_of_256_equal_untiled_on_1024(random_net, big_rgb, layer):
    whole = na.activations(random_net, big_rgb, layer)
    tiled = na.activations(random_net, big_rgb, layer, tile=256)
    assert tiling.tile_count(na.find_layer(layer), (1024, 1024), 256) >= 16
    assert tiled.shape == whole.shape
    assert _rel_err(tiled, whole) <= 1e-4


@pytest.mark.parametrize(
    "layer", ["pool1", "fire3-expand3x3", "fire7-squeeze1x1", "conv10", "pool10", "prob"]
)
@pytest.mark.parametrize("tile", [40, 97])
def test_tiling_is_exact_for_odd_sizes_and_tiles(random_net, layer, tile):
    img = np.random.default_rng(2).integers(0, 256, (203, 157, 3), dtype=np.uint8)
    whole = na.activations(random_net, img, layer)
    tiled = na.activations(random_net, img, layer, tile=tile)
    assert tiled.shape == whole.shape
    assert _rel_err(tiled, whole) <= 1e-4


def test_tile_origins_sit_on_the_stride_grid_and_cover_the_output():
    for name in ["conv1", "pool1", "fire4-concat", "fire9-concat"]:
        info = na.find_layer(name)
        tiles = tiling.plan_axis(1000, info, 128)
        assert all(t.start % info.stride == 0 for t in tiles)
        covered = np.concatenate([np.arange(t.out_start, t.out_stop) for t in tiles])
        assert np.array_equal(covered, np.arange(na.output_size(info, 1000, 1000)[0]))


def test_memory_budget_decides_tiling_and_keeps_the_result(random_net, monkeypatch):
    img = np.random.default_rng(3).integers(0, 256, (300, 300), dtype=np.uint8)
    assert tiling.choose_tile("fire5-concat", 300, 300) is None  # 1 GiB default fits
    small = 4 * 2**20
    side = tiling.choose_tile("fire5-concat", 300, 300, small)
    assert side is not None and side % 8 == 0
    assert tiling.estimate_forward_bytes(side + 62, side + 62) <= small
    whole = na.activations(random_net, img, "fire5-concat")
    budgeted = na.activations(random_net, img, "fire5-concat", memory_budget="4MiB")
    assert _rel_err(budgeted, whole) <= 1e-4
    monkeypatch.setenv(tiling.MEMORY_BUDGET_ENV, "4MiB")
    assert tiling.memory_budget() == small
    assert tiling.choose_tile("fire5-concat", 300, 300) == side


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4MiB", 4 * 2**20),
        ("4 mib", 4 * 2**20),
        ("4Mi", 4 * 2**20),
        ("2GiB", 2 * 2**30),
        ("0.5 GiB", 2**29),
        ("4M", 4 * 10**6),  # decimal without the i, as dask reads it
        ("4MB", 4 * 10**6),
        ("2G", 2 * 10**9),
        ("2gb", 2 * 10**9),
        (" 1500 ", 1500),
        ("1e9", 10**9),
        (123456, 123456),
    ],
)
def test_memory_budget_units_are_dasks(monkeypatch, text, expected):
    assert tiling.memory_budget(text) == expected
    monkeypatch.setenv(tiling.MEMORY_BUDGET_ENV, str(text))
    assert tiling.memory_budget() == expected


@pytest.mark.parametrize(
    "bad", ["lots", "2 GX", "-1G", "0", "inf", "nan", 0, -5, float("inf"), True, [1]]
)
def test_memory_budget_refuses_what_is_not_a_positive_size(bad):
    with pytest.raises(ValueError, match="memory budget"):
        tiling.memory_budget(bad)


def test_budget_too_small_for_the_receptive_field_is_a_clear_error(random_net):
    img = np.zeros((400, 400), np.uint8)
    with pytest.raises(na.ImageError, match="memory budget"):
        na.activations(random_net, img, "fire9-concat", memory_budget=100_000)
    with pytest.raises(ValueError, match="memory budget"):
        tiling.memory_budget("lots")


def test_stack_shows_its_first_plane_without_computing_the_rest(random_net):
    stack = np.random.default_rng(4).integers(0, 256, (6, 64, 80), dtype=np.uint8)
    lazy = na.activations(random_net, stack, "fire2-concat", resize=True)
    assert lazy.shape == (6, 128, 64, 80)
    assert lazy.native.forward_passes == 1  # only plane 0
    first = lazy[0, 7]
    for c in range(20):  # moving the channel slider: no forward pass
        lazy[0, c]
    assert lazy.native.forward_passes == 1
    lazy[3, 5]
    assert lazy.native.forward_passes == 2  # one more plane, once
    lazy[3, 9]
    assert lazy.native.forward_passes == 2
    eager = na.activations(random_net, stack, "fire2-concat")
    np.testing.assert_array_equal(
        first, na.align(eager[0, 7], na.find_layer("fire2-concat"), (64, 80))
    )
    np.testing.assert_allclose(
        np.asarray(lazy),
        np.asarray(na.align(eager, na.find_layer("fire2-concat"), (64, 80))),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("shape", [(3, 40, 50), (2, 3, 40, 50), (3, 40, 50, 3)])
def test_stacks_of_any_depth_have_channel_before_space(random_net, shape):
    data = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    out = na.activations(random_net, data, "pool1", rgb=shape[-1] == 3)
    lead = shape[:-3] if shape[-1] == 3 else shape[:-2]
    assert out.shape == lead + (64,) + na.output_size("pool1", 40, 50)
    lazy = na.activations(random_net, data, "pool1", resize=True, rgb=shape[-1] == 3)
    assert lazy.shape == lead + (64, 40, 50)
    idx = (1,) * len(lead)
    plane = data[idx]
    np.testing.assert_array_equal(
        lazy[idx],
        np.asarray(na.activations(random_net, plane, "pool1", resize=True, rgb=shape[-1] == 3)),
    )


class _CountingArray:
    """An array-like that counts how many pixels are read from it."""

    def __init__(self, data):
        self.data, self.read = data, 0
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.lock = threading.Lock()

    def __getitem__(self, key):
        out = self.data[key]
        with self.lock:
            self.read += out.size
        return out


def test_dask_input_is_read_chunk_by_chunk_and_output_is_dask(random_net):
    da = pytest.importorskip("dask.array")
    img = np.random.default_rng(6).integers(0, 256, (512, 512), dtype=np.uint8)
    source = _CountingArray(img)
    lazy_img = da.from_array(source, chunks=(128, 128), asarray=False, lock=False)
    out = na.activations(random_net, lazy_img, "fire3-concat", tile=128, intensity_range=(0, 255))
    assert isinstance(out, da.Array)
    assert source.read == 0  # nothing read to build the graph
    corner = out[:, :10, :10].compute()
    assert 0 < source.read < img.size / 2  # one tile plus halo, not the whole image
    ref = na.activations(random_net, img, "fire3-concat", intensity_range=(0, 255))
    np.testing.assert_allclose(corner, ref[:, :10, :10], rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert _rel_err(out.compute(), ref) <= 1e-4


@pytest.mark.slow
def test_same_graph_runs_on_a_local_cluster_of_two_processes(random_net):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    img = np.random.default_rng(7).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    lazy_img = da.from_array(img, chunks=(1024, 1024, 3))
    graph = na.activations(random_net, lazy_img, "fire2-concat", tile=1024)
    local = graph.compute(scheduler="threads")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = client.compute(graph).result()
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-4 * np.abs(local).max())


def test_network_pickles_as_its_weights_source(random_net):
    import pickle

    payload = pickle.dumps(random_net)
    assert len(payload) < 1000  # a recipe, not 5 MB of tensors
    assert pickle.loads(payload) is random_net  # same weights, same process: the cached one


def test_cuda_agrees_with_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    img = np.random.default_rng(8).integers(0, 256, (227, 227, 3), dtype=np.uint8)
    cpu = na.activations(na.load_squeezenet(None, device="cpu"), img, "fire9-concat")
    gpu = na.activations(na.load_squeezenet(None, device="cuda"), img, "fire9-concat")
    assert _rel_err(gpu, cpu) <= 1e-3


@pytest.mark.parametrize("name", ["pool10", "prob"])
def test_global_pool_is_one_function_for_numpy_and_dask(name):
    import dask.array as da

    info = na.find_layer(name)
    assert tiling.forward_layer(info).name == tiling.CONTEXT_LAYER
    assert tiling.forward_layer(info, tiled=False) is info  # untiled: to the end
    assert tiling.forward_layer(na.find_layer("conv1")).name == "conv1"
    context = np.random.default_rng(6).normal(size=(1000, 5, 7)).astype(np.float32)
    pooled = tiling.global_pool(context, info)
    lazy = tiling.global_pool(da.from_array(context, chunks=(1000, 3, 4)), info)
    assert isinstance(lazy, da.Array)  # dask stays lazy
    assert pooled.shape == lazy.shape == (1000, 1, 1) and pooled.dtype == lazy.dtype == np.float32
    np.testing.assert_allclose(lazy.compute(), pooled, rtol=1e-6)
    mean = context.mean(axis=(1, 2), dtype=np.float64)
    if name == "prob":
        want = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
        assert abs(float(pooled.sum()) - 1) < 1e-5
    else:
        want = mean
    np.testing.assert_allclose(pooled[:, 0, 0], want, rtol=1e-5)


def test_a_budget_that_cannot_be_read_is_a_user_error_everywhere(random_net, monkeypatch, tmp_path):
    """A bad $NAPARI_ACTIVATIONS_MEMORY_BUDGET reaches the widgets as one of the package's own
    errors (a plain notification there), not as a bare ValueError (a traceback)."""
    from napari_activations._qt.worker import USER_ERRORS

    image = np.zeros((40, 40, 3), np.uint8)
    monkeypatch.setenv("NAPARI_ACTIVATIONS_MEMORY_BUDGET", "lots")
    with pytest.raises(na.ImageError, match="Cannot read the memory budget 'lots'"):
        na.activations(random_net, image, "conv1")
    monkeypatch.delenv("NAPARI_ACTIVATIONS_MEMORY_BUDGET")
    stack = na.activations(random_net, image, "conv1", resize=True)
    with pytest.raises(na.ExportError, match="Cannot read the memory budget"):
        na.export_activations(stack, tmp_path / "out.ome.zarr", memory_budget="lots")
    assert issubclass(na.ImageError, USER_ERRORS) and issubclass(na.ExportError, USER_ERRORS)
