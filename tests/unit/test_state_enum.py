"""One container state enum (agent.model.State): every list of states derives from it."""
import json

from agent import model
from agent.api import system as api_system
from agent.cli import format as cli_format
from agent.model import ACTIVE, LIVE, STATES, State
from agent.supervision import state as sup_state


def test_every_list_of_states_is_the_enum():
    assert STATES == tuple(State) == ("created", "running", "paused", "exited", "restarting", "checkpointed")
    assert cli_format.STATES is STATES
    assert api_system.LIVE is LIVE and sup_state.LIVE is LIVE and sup_state.State is State
    assert ACTIVE < LIVE and State.RESTARTING in LIVE - ACTIVE


def test_a_state_is_stored_and_shown_as_its_value():
    assert State.RUNNING == "running" and f"{State.PAUSED}" == "paused" and str(State.EXITED) == "exited"
    assert json.dumps({"state": State.RESTARTING}) == '{"state": "restarting"}'
    assert State("created") is State.CREATED


def test_ps_filter_accepts_every_state_and_names_them_on_refusal():
    for s in State:
        cli_format.parse_filters([f"status={s}"])
    try:
        cli_format.parse_filters(["status=sleeping"])
    except cli_format.FormatError as e:
        assert ", ".join(model.STATES) in str(e)
    else:
        raise AssertionError("status=sleeping was accepted")
