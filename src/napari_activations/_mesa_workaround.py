"""Keep napari alive on Mesa's software OpenGL when a layer is deleted (issue 9, section 4).

On Mesa's software renderers (llvmpipe, softpipe: Xvfb, VNC and remote desktops, virtual
machines, CI), deleting a big image layer with another image beside it kills napari with a
segmentation fault in ``glDrawArrays`` at one of the next redraws. napari alone does it, with
no plugin (``scripts/napari_delete_crash.py``). What the canvas draws when it dies is the other
image, with its own program, textures and buffers all alive, right after vispy deleted the
removed layer's texture, vertex buffers and GL program; the program was not in use. Not
calling ``glDeleteProgram`` for it made every run survive, while keeping the texture or the
buffers instead did not, and neither did ``glFinish`` before the deletion nor unbinding the
program first. The fault is in Mesa; see docs/scale.md for the runs.

:func:`install` makes vispy keep a removed layer's GL program (its compiled shaders, a few
kilobytes) when, and only when, the renderer is one of Mesa's software renderers; everything
else vispy deletes as before, and on any other renderer nothing changes. The programs kept are
freed with the GL context, when the viewer closes. ``NAPARI_ACTIVATIONS_KEEP_GL_PROGRAMS=0``
turns this off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

ENV = "NAPARI_ACTIVATIONS_KEEP_GL_PROGRAMS"
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe")

_log = logging.getLogger(__name__)
_state: dict[str, Any] = {"installed": False, "software": None, "kept": 0}


def is_software_renderer(renderer: str) -> bool:
    """Whether ``renderer`` (``GL_RENDERER``'s text) names one of Mesa's software renderers."""
    return any(name in renderer.lower() for name in SOFTWARE_RENDERERS)


def programs_kept() -> int:
    """How many GL programs this process kept instead of deleting them."""
    return _state["kept"]


def install() -> bool:
    """Keep removed layers' GL programs on Mesa's software renderers; True when in place.

    Safe to call any number of times; does nothing when ``$NAPARI_ACTIVATIONS_KEEP_GL_PROGRAMS``
    is ``0`` or vispy is missing.
    """
    if _state["installed"]:
        return True
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    try:
        from vispy.gloo import gl, glir
    except ImportError:  # pragma: no cover - napari always brings vispy
        return False
    delete = glir.GlirProgram.delete

    def delete_unless_mesa_software(self: Any) -> None:
        if _state["software"] is None:  # the context is current while GLIR commands run
            try:
                renderer = str(gl.glGetParameter(gl.GL_RENDERER))
            except Exception:  # noqa: BLE001 - no renderer to ask: delete as vispy does
                delete(self)
                return
            _state["software"] = is_software_renderer(renderer)
            if _state["software"]:
                _log.info("%s: keeping removed layers' GL programs (see %s)", renderer, __name__)
        if _state["software"]:
            _state["kept"] += 1
            return
        delete(self)

    delete_unless_mesa_software.original = delete  # type: ignore[attr-defined]
    glir.GlirProgram.delete = delete_unless_mesa_software
    _state["installed"] = True
    return True
