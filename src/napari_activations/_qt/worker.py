"""Run a Progress generator in a napari worker: a progress bar, Cancel, and plain user errors.

Every widget of the plugin runs its long work through :class:`BackgroundRun`, so that the
same rules hold everywhere:

- the errors written for users (:data:`USER_ERRORS`, the package's own error classes) are
  shown as a plain notification; any other exception is a bug, and reaches napari's own error
  notification with its traceback;
- the progress bar is made before the worker starts: napari's activity dialog processes Qt
  events while it builds a bar, and a bar built in a progress callback would run the worker's
  later signals inside that callback;
- those signals can still arrive while the bar moves: the result, the cancellation and the end
  then wait until the move is over, so no layer is added from inside napari's progress code;
- Cancel pressed after the worker's last step, while its result waits in Qt's event queue,
  still adds nothing;
- the run is a plain object, so it outlives a widget closed mid-run (:meth:`detach`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from .._napari_layers import LayerInputError
from ..analysis import RegionError
from ..attribution import AttributionError
from ..backends import BackendError
from ..compute import ImageError, Progress
from ..export import ExportError
from ..layers import UnknownLayerError
from ..network import DeviceUnavailableError, WeightsError

__all__ = [
    "run_layout",
    "RunOutcome",
    "USER_ERRORS",
    "BackgroundRun",
    "Failure",
    "call_as_steps",
    "guarded",
]

# Errors whose message is written for users: shown as they are. Anything else is a bug.
USER_ERRORS: tuple[type[Exception], ...] = (
    ImageError,
    WeightsError,
    LayerInputError,
    UnknownLayerError,
    DeviceUnavailableError,
    BackendError,
    AttributionError,
    ExportError,
    RegionError,
)


@dataclass(frozen=True)
class Failure:
    """A user error raised by the work: its message, for a notification."""

    message: str


def guarded(gen: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
    """Run ``gen``; a :data:`USER_ERRORS` error comes back as a :class:`Failure`."""
    try:
        return (yield from gen)
    except USER_ERRORS as exc:
        return Failure(str(exc))


def call_as_steps(func: Callable, *args: Any, **kwargs: Any) -> Generator[Progress, None, Any]:
    """``func(*args, **kwargs)`` as a generator for :class:`BackgroundRun`: it runs in the
    worker, and its own steps are passed on where it returns a Progress generator."""
    result = func(*args, **kwargs)
    if inspect.isgenerator(result):
        result = yield from result
    return result


def _same(gen: Generator) -> Generator:
    return (yield from gen)


def _show_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _show_cancelled() -> None:
    from napari.utils.notifications import show_info

    show_info("Computation cancelled; nothing was added.")


def run_layout(widget: Any, form: Any) -> Any:
    """The layout of a widget that runs work: its ``form``, a row of its ``run_button`` and
    ``cancel_button``, then its ``status_label``; returned so that more can be added."""
    from qtpy.QtWidgets import QHBoxLayout, QVBoxLayout

    buttons = QHBoxLayout()
    buttons.addWidget(widget.run_button)
    buttons.addWidget(widget.cancel_button)
    layout = QVBoxLayout(widget)
    layout.addLayout(form)
    layout.addLayout(buttons)
    layout.addWidget(widget.status_label)
    return layout


class RunOutcome:
    """For a widget with a status line: what its last run came to (``_outcome``), and the
    notifications of a failed or cancelled run. Pass its ``_on_failure`` and ``_on_cancelled``
    to :class:`BackgroundRun`."""

    _outcome = "Ready."

    def _on_failure(self, message: str) -> None:
        self._outcome = "Ready. The last run failed: see the notification."
        _show_error(message)

    def _on_cancelled(self) -> None:
        self._outcome = "Cancelled."
        _show_cancelled()


class BackgroundRun:
    """One piece of background work: a Progress generator run in a napari worker.

    Parameters
    ----------
    gen : generator of Progress, returning the result
        The work. Nothing runs before :meth:`start`.
    on_result : callable(result)
        Called on the GUI thread with the generator's return value (not when cancelled,
        abandoned or failed).
    on_failure : callable(message), optional
        Called with a user error's message; default: an error notification.
    on_cancelled : callable(), optional
        Called once when the run was cancelled; default: an info notification.
    on_step : callable(Progress), optional
        Called with each step (after the progress bar moved).
    on_end : callable(), optional
        Called last, whatever happened (also after a failure or a cancel).
    description : str or None
        The progress bar's first text; None: no progress bar.
    """

    def __init__(
        self,
        gen: Generator[Progress, None, Any],
        *,
        on_result: Callable[[Any], None],
        on_failure: Callable[[str], None] | None = _show_error,
        on_cancelled: Callable[[], None] | None = _show_cancelled,
        on_step: Callable[[Progress], None] | None = None,
        on_end: Callable[[], None] | None = None,
        description: str | None = None,
    ):
        from napari.qt.threading import create_worker

        self._gen: Generator | None = guarded(gen)
        self._callbacks = {
            "result": on_result,
            "failure": on_failure,
            "cancelled": on_cancelled,
            "step": on_step,
            "end": on_end,
        }
        self._description = description
        self.worker: Any = create_worker(_same, self._gen, _start_thread=False)
        self.progress: Any = None
        self.cancelled = False  # Cancel pressed: nothing is added, whenever the result comes
        self.abandoned = False  # the input went away: nothing is added, nothing is said
        self.updating = False  # inside a progress-bar move (napari processes Qt events there)
        self.deferred: list[tuple[Callable, tuple]] = []
        self._over = False
        self._cancel_said = False
        self.worker.yielded.connect(self._on_step)
        self.worker.returned.connect(lambda value: self._after_step(self._on_returned, value))
        self.worker.aborted.connect(lambda: self._after_step(self._on_aborted))
        self.worker.finished.connect(lambda: self._after_step(self._on_finished))

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the run is over (its end callback has run)."""
        return not self._over

    @property
    def released(self) -> bool:
        """True once the run let go of its work and its callbacks (and what they hold)."""
        return self._gen is None and not any(self._callbacks.values())

    def start(self) -> BackgroundRun:
        """Open the progress bar, then start the worker."""
        if self._description is not None:
            from napari.utils import progress

            self.progress = progress(total=0, desc=self._description)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Stop at the next step; nothing is added, even if the result is already on its way."""
        if not self._over:
            self.cancelled = True
            self.worker.quit()

    def abandon(self) -> None:
        """Stop, silently: the input is gone; the end callback still runs."""
        self.abandoned = True
        if not self._over:
            self.worker.quit()

    def detach(self) -> None:
        """Stop and call nothing back any more (the widget is going away)."""
        self.abandon()
        self._callbacks = dict.fromkeys(self._callbacks)

    def _call(self, name: str, *args: Any) -> None:
        callback = self._callbacks[name]
        if callback is not None:
            callback(*args)

    # -- the worker's signals, on the GUI thread ----------------------------------------------

    def _on_step(self, step: Progress) -> None:
        self.show_progress(step)
        if not self.updating:
            self._call("step", step)
        while self.deferred and not self.updating:
            callback, args = self.deferred.pop(0)
            callback(*args)

    def show_progress(self, step: Progress) -> None:
        """Move the bar to ``step``.

        napari's bar processes Qt events while it moves, so the worker's later signals can
        arrive inside this call: a step is then skipped (the next one shows), and the result,
        the end and the clean-up wait until this call is over, so that a layer is never added
        to the viewer from inside napari's progress machinery.
        """
        bar = self.progress
        if self._over or self.updating or bar is None:
            return
        self.updating = True
        try:
            if bar.total != step.total:
                bar.total = step.total
            bar.set_description(step.message)
            bar.update(step.done - bar.n)
        finally:
            self.updating = False

    def _after_step(self, callback: Callable, *args: Any) -> None:
        """Call now, or once the progress-bar move under way is over."""
        if self.updating:
            self.deferred.append((callback, args))
        else:
            callback(*args)

    def _on_returned(self, value: Any) -> None:
        if self.abandoned:
            return
        if isinstance(value, Failure):
            self._call("failure", value.message)
        elif self.cancelled:
            # Cancel came after the worker's last step but before its result got here.
            self._on_aborted()
        else:
            self._call("result", value)

    def _on_aborted(self) -> None:
        # The worker stops between two steps and keeps its generator: close it now, so that
        # what it holds (a half-written file, a layer's data) goes at once.
        if self._gen is not None:
            self._gen.close()
        if not self.abandoned and not self._cancel_said:
            self._cancel_said = True
            self._call("cancelled")

    def _on_finished(self) -> None:
        self._over = True
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        # napari's task list keeps every finished worker, and through its connections this
        # object: let go of the work (and the layers it holds).
        self._gen = None
        self._call("end")
        self._callbacks = dict.fromkeys(self._callbacks)
