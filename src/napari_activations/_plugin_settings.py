"""What the widget remembers from one napari launch to the next.

Kept in napari's own plugin settings (declared under ``configurations`` in ``napari.yaml``):
napari saves them beside its settings file, in ``<config dir>/napari-activations.yaml``
(``$NAPARI_CONFIG`` moves both), and shows them under File > Preferences, where they can be
edited or reset.
"""

from __future__ import annotations

from typing import Any

PLUGIN_NAME = "napari-activations"
WEIGHTS_FILE = "weights_file"
NETWORK = "network"
EXPORT_FOLDER = "export_folder"


def widget_settings() -> Any | None:
    """The widget's section of the plugin settings; None where napari does not list the plugin
    (e.g. disabled, or a test's own plugin manager): then nothing is remembered."""
    from napari.settings import get_plugin_settings

    try:
        return get_plugin_settings(PLUGIN_NAME).widget
    except KeyError:
        return None


def remembered(name: str) -> str:
    """The remembered value (a path), or "" when there is none."""
    section = widget_settings()
    return "" if section is None else str(getattr(section, name) or "")


def remember(name: str, value: str) -> None:
    """Remember ``value`` (napari saves it at once)."""
    section = widget_settings()
    if section is not None:
        setattr(section, name, str(value))
