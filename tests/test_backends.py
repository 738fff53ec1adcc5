"""The inference backend seam: choice, exactness against torch, the export cache, fallback.

Agreement is checked for every layer of the network on odd-sized inputs (whose max pools
overhang in ceil mode), with random weights; each backend against the torch reference.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import napari_activations as na
from napari_activations import backends
from napari_activations.backends import onnx_backend

ORT = pytest.mark.skipif(
    not backends.onnxruntime_installed(), reason="onnxruntime/onnx not installed"
)
CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU here: half precision and channels_last run on GPUs only",
)
TOLERANCE = 1e-5  # of the layer's largest magnitude


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty export cache, and a network object that has prepared nothing yet."""
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path))
    return tmp_path / "onnx"


def fresh_net():
    """The random network as a new object (its prepared runners start empty)."""
    net = na.load_squeezenet(None, device="cpu")
    return dataclasses.replace(net)


# --- choosing ---------------------------------------------------------------------------------


def test_auto_is_onnxruntime_on_the_cpu_and_torch_on_gpus(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    expected = "onnxruntime" if backends.onnxruntime_installed() else "torch"
    assert backends.resolve_backend("auto", "cpu") == expected
    assert backends.resolve_backend(None, "cpu") == expected
    assert backends.resolve_backend(None, "cuda") == "torch"
    assert backends.resolve_backend("auto", "mps") == "torch"
    monkeypatch.setenv(backends.BACKEND_ENV, "onnxruntime")
    assert backends.resolve_backend("auto", "cuda") == "torch"  # not usable there


def test_auto_is_torch_where_onnxruntime_is_missing(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: False)
    assert backends.resolve_backend("auto", "cpu") == "torch"


def test_the_environment_variable_chooses_for_auto(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "torch")
    assert backends.resolve_backend("auto", "cpu") == "torch"
    assert backends.resolve_backend("onnxruntime", "cpu") == "onnxruntime"  # explicit wins
    monkeypatch.setenv(backends.BACKEND_ENV, "tensorflow")
    with pytest.raises(backends.BackendError, match="NAPARI_ACTIVATIONS_BACKEND"):
        backends.resolve_backend("auto", "cpu")


@pytest.mark.parametrize(
    "backend, device, match",
    [
        ("tensorrt", "cpu", "backend must be one of"),
        ("onnxruntime", "cuda", "runs on the CPU"),
    ],
)
def test_unusable_backends_are_refused_with_advice(backend, device, match):
    with pytest.raises(backends.BackendError, match=match):
        backends.resolve_backend(backend, device)


def test_half_precision_on_the_cpu_is_refused(random_net):
    image = _image(40, 40)
    with pytest.raises(backends.BackendError, match="GPU only"):
        na.activations(random_net, image, "conv1", precision="float16")
    with pytest.raises(backends.BackendError, match="precision must be one of"):
        na.activations(random_net, image, "conv1", precision="int8")


def test_importing_the_backends_imports_no_runtime():
    code = (
        "import sys, napari_activations.backends as b; b.available_backends('cpu'); "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


# --- exactness ------------------------------------------------------------------------------


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@ORT
@pytest.mark.parametrize("hw", [(67, 93), (96, 131)])
def test_every_layer_agrees_with_torch(random_net, hw):
    """Odd and even sizes: 67 and 93 overhang the ceil-mode pools, 96 and 131 too at others."""
    image = _image(*hw)
    for info in na.LAYERS:
        if min(hw) < na.minimum_input_size(info):
            continue
        want = na.activations(random_net, image, info, backend="torch")
        got = na.activations(random_net, image, info, backend="onnxruntime")
        assert got.shape == want.shape and got.dtype == np.float32, info.name
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err <= TOLERANCE, (info.name, err)


@ORT
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_relu_of_pre_is_post_exactly_within_each_backend(random_net, backend):
    image = _image(45, 52, seed=3)
    for info in na.LAYERS:
        if info.after_relu or info.name in ("pool10", "prob"):
            continue
        post = na.LAYERS[info.index + 1]
        pre = na.activations(random_net, image, info, backend=backend)
        assert (pre < 0).any(), f"{info.name} on {backend} has no negative values"
        if post.module.endswith(("_activation", "features.1", "classifier.2")):
            np.testing.assert_array_equal(
                np.maximum(pre, 0), na.activations(random_net, image, post, backend=backend)
            )


@ORT
def test_tiles_lazy_stacks_and_dask_run_through_the_backend(random_net):
    import dask.array as da

    image = _image(150, 170, seed=4)
    whole = na.activations(random_net, image, "fire5-concat", backend="onnxruntime")
    tiled = na.activations(random_net, image, "fire5-concat", backend="onnxruntime", tile=48)
    np.testing.assert_allclose(tiled, whole, atol=1e-4 * np.abs(whole).max())
    stack = np.stack([image, image[::-1].copy()])
    lazy = na.activations(random_net, stack, "fire5-concat", resize=True, backend="onnxruntime")
    assert lazy.backend == "onnxruntime"
    np.testing.assert_allclose(lazy.native.plane((0,)), whole, rtol=0, atol=1e-6)
    lazy_dask = na.activations(
        random_net,
        da.from_array(stack, chunks=(1, 150, 170, 3)),
        "fire5-concat",
        backend="onnxruntime",
    )
    np.testing.assert_allclose(lazy_dask[0].compute(), whole, rtol=0, atol=1e-6)
    global_tiled = na.activations(random_net, image, "prob", backend="onnxruntime", tile=64)
    global_whole = na.activations(random_net, image, "prob", backend="torch")
    np.testing.assert_allclose(global_tiled, global_whole, atol=1e-5)


# --- preparing, the cache, falling back -----------------------------------------------------


@ORT
def test_first_use_is_a_visible_step_and_later_uses_skip_it(fresh_cache):
    net = fresh_net()
    image = _image(40, 44)
    messages = [
        p.message
        for p in na.iter_activations(net, image, "fire2-squeeze1x1", backend="onnxruntime")
    ]
    assert "preparing the fast path" in messages[0]
    again = [
        p.message
        for p in na.iter_activations(net, image, "fire2-squeeze1x1", backend="onnxruntime")
    ]
    assert not any("preparing" in m for m in again)
    assert len(list(fresh_cache.glob("*.onnx"))) == 1


@ORT
def test_exports_are_cached_on_disk_by_layer_and_weights(fresh_cache, monkeypatch):
    net = fresh_net()
    runner = backends.prepare(net, na.find_layer("pool1"), "onnxruntime")
    assert runner.source == "export"
    path = onnx_backend.cache_path(net, na.find_layer("pool1"))
    assert path.is_file() and path.with_suffix(".sha256").is_file()
    # A new network object with the same weights loads the export from disk.
    assert backends.prepare(fresh_net(), na.find_layer("pool1"), "onnxruntime").source == "cache"
    # Other weights, layer or library versions make another entry.
    other = dataclasses.replace(net, model=copy.deepcopy(net.model))
    with torch.no_grad():
        other.model.features[0].bias += 1.0
    assert onnx_backend.cache_path(other, na.find_layer("pool1")) != path
    assert onnx_backend.cache_path(net, na.find_layer("pool3")) != path
    monkeypatch.setattr(onnx_backend, "_versions", lambda: {"onnxruntime": "0.0"})
    assert onnx_backend.cache_path(net, na.find_layer("pool1")) != path


@ORT
@pytest.mark.parametrize(
    "damage", ["garbage", "truncated", "garbage with a matching hash", "hash file missing"]
)
def test_a_damaged_cache_entry_is_exported_again(fresh_cache, damage, random_net):
    import hashlib

    info = na.find_layer("fire2-expand3x3")
    backends.prepare(fresh_net(), info, "onnxruntime")
    path = onnx_backend.cache_path(random_net, info)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00not an onnx file" * 100)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage with a matching hash":
        bad = b"\x08\x07not a model" * 50
        path.write_bytes(bad)
        path.with_suffix(".sha256").write_text(hashlib.sha256(bad).hexdigest())
    else:
        path.with_suffix(".sha256").unlink()
    net = fresh_net()
    runner = backends.prepare(net, info, "onnxruntime")
    assert runner.source == "export" and runner.backend == "onnxruntime"
    assert onnx_backend._read_cached(path) is not None  # repaired
    image = _image(40, 41)
    want = na.activations(random_net, image, info, backend="torch")
    got = na.activations(net, image, info, backend="onnxruntime")
    assert np.abs(got - want).max() <= TOLERANCE * np.abs(want).max()


@ORT
def test_an_unwritable_cache_costs_only_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(blocker))
    with pytest.warns(RuntimeWarning, match="Could not cache"):
        runner = backends.prepare(fresh_net(), na.find_layer("conv1"), "onnxruntime")
    assert runner.backend == "onnxruntime"


@ORT
@pytest.mark.parametrize("failure", ["export", "check"])
def test_where_the_export_fails_torch_runs_and_says_so_once(fresh_cache, monkeypatch, failure):
    if failure == "export":

        def broken(net, info):
            raise onnx_backend.ExportError("unsupported operator 'aten::frobnicate'")

        monkeypatch.setattr(onnx_backend, "_export", broken)
    else:  # the export disagrees with torch
        monkeypatch.setattr(onnx_backend, "TOLERANCE", -1.0)
    net = fresh_net()
    image = _image(60, 64)
    with pytest.warns(backends.BackendFallbackWarning, match="using torch instead"):
        a = na.activations(net, image, "fire3-concat", resize=True, backend="onnxruntime")
    assert a.backend == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per network, not per layer or call
        b = na.activations(net, image, "conv1", backend="onnxruntime")
    np.testing.assert_array_equal(b, na.activations(net, image, "conv1", backend="torch"))
    assert not list(fresh_cache.glob("*.onnx"))  # nothing untrusted was cached


@ORT
def test_each_thread_count_gets_its_own_session(random_net):
    info = na.find_layer("conv1")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = backends.prepare(random_net, info, "onnxruntime")
        torch.set_num_threads(2)
        two = backends.prepare(random_net, info, "onnxruntime")
    finally:
        torch.set_num_threads(before)
    assert one is not two


def test_a_much_larger_input_gets_a_fresh_session(fresh_cache):
    """A session first run on small inputs ran large ones up to 1.75x slower: a runner loads
    a fresh session from the cache for inputs over GROWTH times its largest so far; same
    numbers either way."""
    from napari_activations.backends import onnx_backend

    net = fresh_net()
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    larger = rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)  # 3.5x: the same session
    large = rng.integers(0, 256, (130, 140, 3), dtype=np.uint8)  # 3.25x the larger: same
    big = rng.integers(0, 256, (300, 310, 3), dtype=np.uint8)  # 5.1x the large: fresh
    runner = backends.prepare(net, net.find_layer("fire3-concat"), "onnxruntime")
    assert runner.sessions_loaded == 1
    for image, loaded in ((small, 1), (larger, 1), (large, 1), (small, 1), (big, 2), (big, 2)):
        got = na.activations(net, image, "fire3-concat", backend="onnxruntime")
        assert runner.sessions_loaded == loaded
        want = na.activations(net, image, "fire3-concat", backend="torch")
        np.testing.assert_allclose(got, want, atol=onnx_backend.TOLERANCE * np.abs(want).max())


# --- GPUs --------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("precision, tolerance", [("float16", 2e-2), ("bfloat16", 6e-2)])
def test_half_precision_on_cuda_is_close_to_float32(precision, tolerance):
    net = na.load_squeezenet(None, device="cuda")
    image = _image(128, 160)
    for layer in ["conv1", "fire5-concat", "fire9-concat", "prob"]:
        want = na.activations(net, image, layer)
        got = na.activations(net, image, layer, precision=precision)
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= tolerance * np.abs(want).max(), layer


@CUDA
def test_onnxruntime_is_refused_for_a_gpu_network():
    net = na.load_squeezenet(None, device="cuda")
    with pytest.raises(backends.BackendError, match="runs on the CPU"):
        na.activations(net, _image(64, 64), "conv1", backend="onnxruntime")


@ORT
def test_tiles_give_onnx_runtime_memory_back_and_untiled_runs_keep_it():
    net = na.load_squeezenet(None, device="cpu")
    # The arena kept the peak of every tile shape: 3.2 GiB for ResNet-50 in 1 GiB tiles.
    image = np.random.default_rng(3).integers(0, 256, (120, 130, 3), dtype=np.uint8)
    runner = backends.prepare(net, net.find_layer("conv1"), "onnxruntime")
    # runs on this size keep this session (no fresh one for a larger input: see below)
    runner._largest = max(runner._largest, image.shape[0] * image.shape[1])
    seen = []
    session = runner.session

    class Spy:
        def run(self, names, feed, options=None):
            seen.append(
                None
                if options is None
                else options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
            )
            return session.run(names, feed, options)

    runner.session = Spy()
    try:
        untiled = na.activations(net, image, "conv1", backend="onnxruntime")
        assert seen == [None]
        seen.clear()
        tiled = na.activations(net, image, "conv1", backend="onnxruntime", tile=64)
    finally:
        runner.session = session
    assert len(seen) > 1 and set(seen) == {"cpu:0"}
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)
