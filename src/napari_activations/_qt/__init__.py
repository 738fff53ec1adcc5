"""The plugin's Qt pieces: one module per sub-widget, and the one background-work helper.

The dock widgets (``_widget``, ``_analysis_widget``, ``_attribution_widget``) assemble these;
nothing here is imported when napari starts, and nothing here imports torch.
"""
