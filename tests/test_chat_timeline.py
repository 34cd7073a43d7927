"""The chat side of timelines shared by the adapters: progress edits at most every few seconds, never after the
answer, and the names of the files sent back."""

from __future__ import annotations

import asyncio

from adapters.timeline import Progress, output_name, progress_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_progress_text_and_output_names() -> None:
    assert progress_text(200, 2400) == "Analysing… 3:20 of 40:00"
    assert progress_text(3725, 7200) == "Analysing… 1:02:05 of 2:00:00"
    assert progress_text(18, None) == "Analysing… 0:18 so far"
    assert progress_text(30, 20) == "Analysing… 0:30 so far"  # a platform's length that was wrong is not repeated
    assert output_name("Wald spaziergang.mp4", ".srt") == "Wald_spaziergang.srt"
    assert output_name("../../etc/пасека.webm", ".png") == "пасека.png"
    assert output_name("", ".srt") == output_name("...", ".srt") == "timeline.srt"


async def test_the_first_report_shows_at_once_and_later_ones_wait_for_the_interval() -> None:
    clock, seen = Clock(), []

    async def show(text: str) -> None:
        seen.append(text)

    progress = Progress(show, interval=5.0, total=60.0, clock=clock)
    await progress(10.0)
    await settle()
    clock.now += 2.0
    await progress(20.0)  # within the interval: held back
    await settle()
    clock.now += 3.0
    await progress(30.0)  # the interval has passed: shown, with the latest figure
    await settle()
    await progress.close()
    await progress(60.0)  # after close: nothing more
    await settle()
    assert seen == progress.shown == ["Analysing… 0:10 of 1:00", "Analysing… 0:30 of 1:00"]


async def test_a_slow_edit_is_not_overtaken_and_the_answer_waits_for_it() -> None:
    clock, seen, release = Clock(), [], asyncio.Event()

    async def show(text: str) -> None:
        await release.wait()  # a platform slow to answer (a 429 being waited out)
        seen.append(text)

    progress = Progress(show, interval=0.0, clock=clock)
    await progress(10.0)
    await settle()
    for seconds in (20.0, 30.0, 40.0):  # the analysis goes on without waiting for the edit
        clock.now += 10
        await progress(seconds)
    closing = asyncio.create_task(progress.close())
    await settle()
    assert not closing.done()  # the answer waits until the edit on its way has landed
    release.set()
    await closing
    assert seen == ["Analysing… 0:10 so far"]  # one edit at a time; none after the answer


async def test_a_failed_edit_is_only_logged() -> None:
    async def show(text: str) -> None:
        raise RuntimeError("message to edit not found")

    progress = Progress(show, interval=0.0)
    await progress(1.0)
    await settle()
    await progress.close()
    assert progress.shown == []
