"""The guards of a live call, with shortened timings: the maximum duration (warning, then
goodbye and hang-up), a silent line (one check-in, then hang-up), the caller leaving."""

from __future__ import annotations

import asyncio
import time

from livekit.agents.voice.events import CloseReason

from agent.conversation import GuardTimings, default_conversation
from agent.ending import EndReason
from tests.agent.support import RELAXED, finished, running_call, said, spec_for
from tests.fakes.llm_script import Reply, Script, Turn

PHRASES = default_conversation().phrases


async def test_max_duration_warns_then_says_goodbye_and_hangs_up():
    timings = GuardTimings(max_duration_warning_s=0.5, user_away_timeout_s=60, hangup_grace_s=2)
    spec = spec_for("agence-immo-fr", max_duration_s=1)
    script = Script(Turn("question", Reply("Bien sûr, je regarde.")))
    started = time.monotonic()
    async with running_call("agence-immo-fr", script, timings=timings, spec=spec) as (parts, _):
        await parts.session.run(user_input="Une question")
        await finished(parts, timeout=10)
        elapsed = time.monotonic() - started
        assert parts.call.end_reason == "max_duration"
        assert parts.call.guards.warned
        lines = said(parts)
        fr = PHRASES["fr"]
        assert lines.index(fr.duration_warning) < lines.index(fr.duration_goodbye)
        assert lines[-1] == fr.duration_goodbye
        assert 1.0 <= elapsed < 8.0  # at the maximum, not before (upper bound: a busy machine)
        assert parts.call.record["end_reason"] == "max_duration"


async def test_max_duration_cuts_a_long_answer():
    # The model's answer is still being said when time is up: it is cut, the goodbye said.
    timings = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=60, hangup_grace_s=2)
    spec = spec_for("realty-desk-en", max_duration_s=1)
    async with running_call("realty-desk-en", timings=timings, spec=spec) as (parts, _):
        await finished(parts, timeout=10)
        assert parts.call.end_reason == "max_duration"
        assert said(parts)[-1] == PHRASES["en"].duration_goodbye
        assert PHRASES["en"].duration_warning not in said(parts)  # warning switched off


async def test_silence_checks_in_once_then_hangs_up():
    timings = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=0.3, hangup_grace_s=2)
    async with running_call("realty-desk-en", timings=timings) as (parts, _):
        await finished(parts, timeout=10)
        en = PHRASES["en"]
        assert parts.call.end_reason == "silence"
        assert parts.call.guards.checkins == 1
        assert said(parts)[1:] == [en.silence_checkin, en.silence_goodbye]


async def test_speaking_after_the_check_in_keeps_the_line_open():
    timings = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=0.4, hangup_grace_s=2)
    script = Script(Turn("still here", Reply("Parfait, je vous écoute.")))
    fr = PHRASES["fr"]
    async with running_call("gestion-incidents-fr", script, timings=timings) as (parts, _):
        for _ in range(100):
            if fr.silence_checkin in said(parts):
                break
            await asyncio.sleep(0.02)
        # The caller speaks: the VAD moves the user to speaking then listening (what the
        # session's audio recognition does on speech start/end), and the words arrive.
        parts.session._update_user_state("speaking")
        parts.session._update_user_state("listening")
        await parts.session.run(user_input="Oui, still here")
        await finished(parts, timeout=10)
        # The caller answered: the next silence gets a fresh check-in before any hang-up.
        assert parts.call.guards.checkins == 2
        assert said(parts).count(fr.silence_checkin) == 2
        assert parts.call.end_reason == "silence"


async def test_caller_leaving_ends_the_call_as_user_hangup():
    async with running_call("after-hours-en", timings=RELAXED) as (parts, _):
        # What RoomIO does when the linked participant disconnects (close_on_disconnect).
        parts.session._close_soon(reason=CloseReason.PARTICIPANT_DISCONNECTED)
        await finished(parts)
        assert parts.call.end_reason == "user_hangup"
        assert said(parts) == [parts.call.spec.persona.greeting]  # no goodbye to nobody


async def test_first_reason_wins():
    async with running_call("after-hours-en", timings=RELAXED) as (parts, _):
        parts.call.hang_up(EndReason.END_CALL, goodbye=None)
        parts.call.guards._time_up()  # a late guard must not rewrite why the call ended
        await finished(parts)
        assert parts.call.end_reason == "end_call"


async def test_a_dead_llm_ends_the_call_with_an_apology():
    script = Script(Turn("question", Reply(fail=True)))
    async with running_call("agence-immo-fr", script, timings=RELAXED) as (parts, _):
        parts.session.generate_reply(user_input="Une question")
        await finished(parts)
        assert parts.call.end_reason == "error"
        assert said(parts)[-1] == PHRASES["fr"].error_goodbye
        assert parts.call.record["end_reason"] == "error"
