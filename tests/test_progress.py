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
    from harness.train.hf import _hf

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


def test_the_training_loss_as_a_terminal_plot() -> None:
    from harness.cli.train_commands import loss_line

    line = loss_line([2.0, 1.8, 1.7, 1.5, 1.45, 1.3, 1.25, 1.2])
    assert line == "loss █▇▆▄▄▂▂▂ 2 → 1.2 (8 logged steps)"
    long = loss_line([float(x) for x in range(100, 0, -1)])
    assert len(long.split()[1]) == 40  # averaged into 40 bins
    assert loss_line([float("nan")]) == "loss: no finite values"
