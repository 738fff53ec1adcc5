"""Loading the network: random, local file, torchvision's cache, the offline story, bad files."""

from __future__ import annotations

import hashlib
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import napari_activations as na
from napari_activations import network

# sha256 of the original float32 release file (squeezenet1_1_caffe_imagenet.pth, 4,959,683 bytes)
ORIGINAL_SHA256 = "77d6a8e018780ad4281f21b379bbd31d8b2819f10b8835475e1979c5af57226d"
# sha256 over that file's tensors (names sorted; each name, then its float32 bytes)
ORIGINAL_TENSORS_SHA256 = "d8ae1649422027ec551fb352388ae45065c5090f9a0f70a76dcf019b5eefa367"
TORCHVISION_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty torch hub cache of this test's own, and no cached networks.

    Every way torch.hub could reach the internet raises URLError; ``calls`` records attempts.
    """
    calls: list[str] = []

    def refuse(url, *args, **kwargs):
        calls.append(str(getattr(url, "full_url", url)))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(na.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(network, "_CACHE", {})
    return calls


@pytest.fixture
def random_state_file(tmp_path, random_net) -> Path:
    path = tmp_path / "random_squeezenet.pth"
    torch.save(random_net.model.state_dict(), path)
    return path


def _same_parameters(a: na.Network, b: na.Network) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_none_gives_untrained_network_that_says_so(random_net):
    assert random_net.trained is False
    assert random_net.weights == "random"
    assert "RANDOM" in random_net.description and "UNTRAINED" in random_net.description
    assert "RANDOM" in repr(random_net)
    assert random_net.sha256 is None
    assert len(random_net.categories) == 1000 and random_net.categories[0] == "tench"
    assert not random_net.model.training
    assert not any(p.requires_grad for p in random_net.model.parameters())


def test_random_weights_are_reproducible(random_net, monkeypatch):
    monkeypatch.setattr(network, "_CACHE", {})
    torch.manual_seed(1234)
    again = na.load_squeezenet(None, device="cpu")
    assert again is not random_net
    assert _same_parameters(again, random_net)
    # and loading left the caller's random stream alone
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    monkeypatch.setattr(network, "_CACHE", {})
    na.load_squeezenet(None, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def _tensors_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_builtin_weights_are_the_default_offline(offline, real_net):
    net = na.load_squeezenet(device="cpu")
    assert offline == []  # nothing downloaded, nothing looked up
    assert net.trained and net.weights == "caffe" and net.source == "caffe"
    assert "Caffe" in net.description and "built in" in net.description
    assert na.load_squeezenet("caffe", device="cpu") is net
    assert na.load_squeezenet("MATLAB", device="cpu") is net
    assert not network.default_weights_path().exists()


def test_builtin_weights_load_back_to_the_original_float32_bit_for_bit(real_net):
    path = network.builtin_weights_path()
    assert path.stat().st_size <= 2_600_000
    stored = torch.load(path, weights_only=True)
    for name, tensor in stored.items():
        expected = torch.float32 if name.startswith("features.0.") else torch.float16
        assert tensor.dtype == expected, name
    loaded = {k: v for k, v in real_net.model.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in loaded.values())
    assert _tensors_sha256(loaded) == ORIGINAL_TENSORS_SHA256
    assert real_net.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_builtin_weights_equal_the_original_file_where_it_is_given(real_net):
    """Where the original release file is at hand ($NAPARI_ACTIVATIONS_ORIGINAL_WEIGHTS),
    compare tensor by tensor too (the hash test above holds everywhere)."""
    import os

    original = os.environ.get("NAPARI_ACTIVATIONS_ORIGINAL_WEIGHTS", "")
    if not original or not Path(original).is_file():
        pytest.skip("set NAPARI_ACTIVATIONS_ORIGINAL_WEIGHTS to the original float32 file")
    assert hashlib.sha256(Path(original).read_bytes()).hexdigest() == ORIGINAL_SHA256
    state = torch.load(original, weights_only=True)
    loaded = real_net.model.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(state[k], loaded[k]) for k in state)


def test_builtin_weights_licence_ships_beside_them():
    text = (network.builtin_weights_path().parent / "SQUEEZENET_WEIGHTS_LICENSE.txt").read_text()
    assert "BSD LICENSE" in text and "forresti/SqueezeNet" in text


def test_path_loads_weights_with_their_hash_and_no_machine_path(random_net, random_state_file):
    net = na.load_squeezenet(random_state_file, device="cpu")
    assert net.trained is True
    assert net.sha256 == hashlib.sha256(random_state_file.read_bytes()).hexdigest()
    assert net.weights == f"file:{random_state_file.name}"
    assert net.source == str(random_state_file.resolve())
    assert random_state_file.name in net.description
    assert str(random_state_file.parent) not in net.description
    assert "RANDOM" not in net.description
    assert _same_parameters(net, random_net)


def test_same_weights_twice_give_the_same_network(real_net, random_state_file, random_net):
    net = na.load_squeezenet(random_state_file, device="cpu")
    assert na.load_squeezenet(str(random_state_file), device="auto") is net
    assert na.load_squeezenet("caffe", device="cpu") is real_net
    assert na.load_squeezenet(None, device="cpu") is random_net


def test_environment_variable_names_the_default_file(
    offline, monkeypatch, random_state_file, random_net
):
    monkeypatch.setenv(na.WEIGHTS_ENV, str(random_state_file))
    net = na.load_squeezenet()
    assert net.trained
    assert net.weights == f"file:{random_state_file.name}"
    assert net.sha256 == hashlib.sha256(random_state_file.read_bytes()).hexdigest()
    assert _same_parameters(net, random_net)
    assert offline == []  # nothing was downloaded
    assert na.load_squeezenet("DEFAULT") is net


def test_environment_variable_naming_a_missing_file_says_so(offline, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.pth"
    monkeypatch.setenv(na.WEIGHTS_ENV, str(missing))
    with pytest.raises(na.WeightsError) as err:
        na.load_squeezenet()
    assert str(missing) in str(err.value) and na.WEIGHTS_ENV in str(err.value)
    assert offline == []


def test_default_offline_without_cache_says_where_to_put_the_file(offline, tmp_path):
    with pytest.raises(na.WeightsUnavailableError) as err:
        na.load_squeezenet("torchvision", progress=False)
    message = str(err.value)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    assert na.default_weights_path() == cache
    assert TORCHVISION_URL in message
    assert f"picked up at: {cache}\n" in message
    assert na.WEIGHTS_ENV in message
    assert "URLError" in message
    assert offline and offline[0] == TORCHVISION_URL  # it did try, and only through torch.hub
    assert isinstance(err.value, na.WeightsError)
    assert not cache.exists()


def test_file_at_the_cache_path_is_used_offline(offline, random_net):
    cache = na.default_weights_path()
    cache.parent.mkdir(parents=True)
    torch.save(random_net.model.state_dict(), cache)
    net = na.load_squeezenet("torchvision")
    assert offline == []
    assert net.trained and net.weights == "torchvision"
    assert net.sha256 == hashlib.sha256(cache.read_bytes()).hexdigest()
    assert _same_parameters(net, random_net)
    assert na.load_squeezenet("TorchVision") is net


class _Hostile:
    """Unpickling this creates a marker file: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _save_hostile(path: Path, marker: Path, random_net) -> None:
    state = dict(random_net.model.state_dict())
    state["payload"] = _Hostile(marker)
    torch.save(state, path)


def test_hostile_pickle_is_refused_without_running_it(tmp_path, random_net):
    # The payload is live: unpickling it without weights_only does create the marker.
    probe_marker = tmp_path / "probe_ran"
    _save_hostile(tmp_path / "probe.pth", probe_marker, random_net)
    torch.load(tmp_path / "probe.pth", weights_only=False)
    assert probe_marker.exists()

    marker = tmp_path / "payload_ran"
    path = tmp_path / "hostile.pth"
    _save_hostile(path, marker, random_net)
    with pytest.raises(na.WeightsError, match="Refused"):
        na.load_squeezenet(path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_raw_pickle_that_runs_code_is_refused_as_such_not_called_damaged(tmp_path, protocol):
    """A plain ``pickle.dump`` (not torch.save) of an object whose ``__reduce__`` calls
    ``os.system``: refused because loading it could run code, and the message says so."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "raw.pth"
    with open(path, "wb") as f:
        pickle.dump(_Hostile(marker), f, protocol=protocol)
    with pytest.raises(na.WeightsError) as err:
        na.load_squeezenet(path, device="cpu")
    message = str(err.value)
    assert "Refused" in message and "could run code" in message
    assert "damaged" not in message
    assert not marker.exists()


def test_hostile_pickle_at_the_cache_path_is_refused(offline, tmp_path, random_net):
    marker = tmp_path / "payload_ran"
    cache = na.default_weights_path()
    cache.parent.mkdir(parents=True)
    _save_hostile(cache, marker, random_net)
    with pytest.raises(na.WeightsError, match="Refused"):
        na.load_squeezenet("torchvision")
    assert not marker.exists()


def test_empty_file_is_a_weights_error(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(na.WeightsError, match="empty"):
        na.load_squeezenet(path, device="cpu")


def test_truncated_file_is_a_weights_error(tmp_path, random_state_file):
    data = random_state_file.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(na.WeightsError, match="damaged") as err:
        na.load_squeezenet(path, device="cpu")
    assert str(path) in str(err.value)


def test_damaged_file_at_the_cache_path_is_reported_as_damaged(offline, random_state_file):
    cache = na.default_weights_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(random_state_file.read_bytes()[:1000])
    with pytest.raises(na.WeightsError, match="damaged") as err:
        na.load_squeezenet("torchvision")
    assert str(cache) in str(err.value)
    assert offline == []


def test_wrong_architecture_is_a_weights_error(tmp_path):
    from torchvision.models import squeezenet1_0

    path = tmp_path / "squeezenet1_0.pth"
    torch.save(squeezenet1_0(weights=None).state_dict(), path)
    with pytest.raises(na.WeightsError, match="not a SqueezeNet 1.1 state_dict"):
        na.load_squeezenet(path, device="cpu")


def test_state_dict_with_missing_keys_names_one(tmp_path, random_net):
    state = dict(random_net.model.state_dict())
    del state["classifier.1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(na.WeightsError, match="classifier.1.weight"):
        na.load_squeezenet(path, device="cpu")


def test_not_a_state_dict_is_a_weights_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(na.WeightsError, match="not a state_dict"):
        na.load_squeezenet(path, device="cpu")


def test_missing_file_is_a_weights_error(tmp_path):
    with pytest.raises(na.WeightsError, match="No weights file"):
        na.load_squeezenet(tmp_path / "nothing.pth", device="cpu")
    with pytest.raises(na.WeightsError, match="not int"):
        na.load_squeezenet(3, device="cpu")


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert na.resolve_device("auto") == torch.device("cpu")
    assert na.resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert na.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert na.resolve_device("AUTO") == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_device_is_the_cpu_here(random_net):
    net = na.load_squeezenet(None, device="auto")
    assert net.device == torch.device("cpu")
    assert net is random_net  # "auto" resolved before the cache lookup
    assert "cpu" in net.description


@pytest.mark.parametrize("device", ["banana", "gpu0", 3.5])
def test_invalid_device_is_a_value_error(device):
    with pytest.raises(ValueError, match="not a device"):
        na.load_squeezenet(None, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        na.load_squeezenet(None, device="cuda")


def test_resolve_weights_is_the_one_place_that_says_where_weights_come_from(monkeypatch, tmp_path):
    from napari_activations.network import WEIGHTS_ENV, describe_weights, resolve_weights

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights() == "caffe" and resolve_weights("MATLAB") == "caffe"
    assert resolve_weights(" torchvision ") == "torchvision"
    assert resolve_weights(None) is None
    assert describe_weights("DEFAULT") == describe_weights("caffe")
    assert "random" in describe_weights(None)
    present = tmp_path / "mine.pth"
    present.write_bytes(b"x")
    assert resolve_weights(present) == present and resolve_weights(str(present)) == present
    assert describe_weights(present) == "file mine.pth"  # the name, never the folder
    monkeypatch.setenv(WEIGHTS_ENV, str(present))
    assert resolve_weights("DEFAULT") == present
    assert describe_weights("DEFAULT") == f"file mine.pth (from ${WEIGHTS_ENV})"
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(na.WeightsError, match=f"{WEIGHTS_ENV} names .*gone.pth"):
        resolve_weights()
    with pytest.raises(na.WeightsError, match=f"{WEIGHTS_ENV} names .*gone.pth"):
        na.load_squeezenet()  # the same answer, from the same place
    assert describe_weights("DEFAULT") == f"file gone.pth (from ${WEIGHTS_ENV})"  # no raise
    with pytest.raises(na.WeightsError, match="No weights file"):
        resolve_weights(tmp_path / "none.pth")
    with pytest.raises(na.WeightsError, match="not int"):
        resolve_weights(3)
