"""JobStream: the events of one job from the engine's thread to the event loop, and the tokens of one
step (kept guesses) sent together with their text joined."""

from __future__ import annotations

import asyncio

from appliance.backend import Finished, TextDelta, TokenLogprob, ToolCallDelta, Usage
from appliance.engine.jobs import DONE, JobStream, merged


def _lp(text: str) -> TokenLogprob:
    return TokenLogprob(text, text.encode(), -0.5, ())


def test_runs_of_text_are_joined_in_order_with_their_logprobs() -> None:
    a, b, c = (TextDelta(text, (_lp(text),)) for text in ("Hel", "lo", " you"))
    assert merged([a, b, c]) == [TextDelta("Hello you", (_lp("Hel"), _lp("lo"), _lp(" you")))]
    # Thoughts then answer join (a chunk writes its reasoning before its content) ...
    assert merged([TextDelta("", reasoning="hmm"), TextDelta("Yes")]) == [TextDelta("Yes", reasoning="hmm")]
    thoughts = [TextDelta("", reasoning="a"), TextDelta("", reasoning="b")]
    assert merged(thoughts) == [TextDelta("", reasoning="ab")]
    # ... answer then thoughts do not: joined, the thoughts would come first.
    answer_first = [TextDelta("Yes"), TextDelta("", reasoning="hmm")]
    assert merged(answer_first) == answer_first


def test_other_events_break_a_run_and_keep_their_place() -> None:
    call = ToolCallDelta(0, "id", "f", "{}")
    done = Finished("stop", Usage(3, 2, 0))
    events = [TextDelta("a"), TextDelta("b"), call, TextDelta("c"), done, DONE]
    assert merged(events) == [TextDelta("ab"), call, TextDelta("c"), done, DONE]


def test_held_events_reach_the_loop_together_at_flush_and_emit_goes_on_after() -> None:
    loop = asyncio.new_event_loop()
    try:
        finished: list[bool] = []
        stream = JobStream(loop, on_done=lambda: finished.append(True))
        stream.emit(TextDelta("x"))
        stream.hold()
        for piece in ("1", "2", "3"):
            stream.emit(TextDelta(piece))
        stream.emit(Finished("stop", Usage(1, 4, 0)))
        stream.emit(DONE)
        assert finished == [True]  # the slot's accounting runs when DONE is emitted, not when it is sent
        loop.run_until_complete(asyncio.sleep(0))
        assert stream._events.qsize() == 1  # only what was emitted before hold()
        stream.flush()

        async def read() -> list[object]:
            return [event async for event in stream]

        events = loop.run_until_complete(read())
        assert events == [TextDelta("x"), TextDelta("123"), Finished("stop", Usage(1, 4, 0))]
        stream.flush()  # nothing held: nothing sent
        assert stream._events.qsize() == 1  # DONE, kept so the stream stays exhausted
    finally:
        loop.close()
