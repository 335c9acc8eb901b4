"""Progress bars: a task whose total is found out late (a trainer's step count) gets it,
and with it an ETA, instead of showing `21/?`."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from harness.progress import RichReporter


def test_a_late_total_reaches_the_progress_bar() -> None:
    console = Console(record=True, width=100, force_terminal=False)
    with RichReporter(console).task("training steps", total=None) as advance:
        advance.set_total(60)
        advance(21)
        task = advance.progress.tasks[0]
        assert (task.total, task.completed) == (60, 21)
    assert "21/60" in console.export_text()


def test_the_trainer_callback_gives_the_step_count_at_train_begin() -> None:
    from harness.training import _hf

    seen: list[tuple[str, int]] = []

    class Recorder:
        def __call__(self, n: int) -> None:
            seen.append(("advance", n))

        def set_total(self, total: int) -> None:
            seen.append(("total", total))

    callback = _hf().ProgressReporter(Recorder())
    callback.on_train_begin(None, SimpleNamespace(max_steps=60), None)
    callback.on_step_end(None, SimpleNamespace(global_step=1), None)
    assert seen == [("total", 60), ("advance", 1)]
    plain = _hf().ProgressReporter(seen.append)  # a plain function: no total, no error
    plain.on_train_begin(None, SimpleNamespace(max_steps=60), None)
