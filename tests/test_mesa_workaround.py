"""The plugin's guard against Mesa's software-OpenGL crash on deleting a layer (issue 9, §4).

The crash itself, the issue's exact sequence in a real viewer, runs in a subprocess in
tests/test_plugin_widget.py (test_deleting_the_source_mid_run_then_running_again).
"""

from __future__ import annotations

import pytest

from napari_activations import _mesa_workaround


@pytest.mark.parametrize(
    ("renderer", "software"),
    [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", True),
        ("softpipe", True),
        ("Mesa Intel(R) UHD Graphics 620 (KBL GT2)", False),
        ("NVIDIA GeForce RTX 3080/PCIe/SSE2", False),
        ("Apple M1", False),
    ],
)
def test_only_mesa_software_renderers_are_recognised(renderer, software):
    assert _mesa_workaround.is_software_renderer(renderer) is software


@pytest.mark.parametrize("software", [True, False])
def test_programs_are_kept_only_on_software_renderers(monkeypatch, software):
    from vispy.gloo import gl, glir

    deleted = []
    monkeypatch.setattr(gl, "glDeleteProgram", deleted.append)
    monkeypatch.setattr(glir.GlirProgram, "delete", glir.GlirProgram.delete)  # restored after
    monkeypatch.setitem(_mesa_workaround._state, "installed", False)
    monkeypatch.setitem(_mesa_workaround._state, "software", software)
    monkeypatch.setitem(_mesa_workaround._state, "kept", 0)
    assert _mesa_workaround.install()

    class Program:
        _handle = 7

    glir.GlirProgram.delete(Program())
    assert deleted == ([] if software else [7])
    assert _mesa_workaround.programs_kept() == (1 if software else 0)


def test_the_variable_turns_it_off(monkeypatch):
    from vispy.gloo import glir

    monkeypatch.setattr(glir.GlirProgram, "delete", glir.GlirProgram.delete)
    monkeypatch.setitem(_mesa_workaround._state, "installed", False)
    monkeypatch.setenv(_mesa_workaround.ENV, "0")
    before = glir.GlirProgram.delete
    assert not _mesa_workaround.install()
    assert glir.GlirProgram.delete is before
