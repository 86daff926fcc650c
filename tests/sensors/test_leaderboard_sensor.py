"""LeaderboardSensor in real `airflow dags test` runs (poking and deferred), and its trigger on its own."""

import asyncio
import logging
import threading
import time

import pytest

from evaljobs.triggers.leaderboard import LeaderboardTrigger
from tests import factories

DAG = """
from airflow.sdk import dag
from evaljobs.sensors.leaderboard import LeaderboardSensor

@dag(dag_id="gate", schedule=None)
def gate():
    LeaderboardSensor(task_id="wait", project="p", model="new", benchmarks=["gsm8k"], min_average={min_average},
                      results_home={home!r}, deferrable={deferrable}, poke_interval=1, timeout={timeout})

gate()
"""


def record(home, model="new", score=0.5):
    factories.record(home, model, "gsm8k", score)


@pytest.mark.parametrize("deferrable", [False, True])
def test_sensor_releases_when_the_condition_holds(airflow, tmp_path, deferrable):
    record(tmp_path / "home")
    source = DAG.format(min_average=40.0, home=str(tmp_path / "home"), deferrable=deferrable, timeout=30)
    ok, output = airflow.dags_test("gate", source)
    assert ok, output[-4000:]
    assert "new: average 50.00, rank 1" in output


@pytest.mark.parametrize("deferrable", [False, True])
def test_sensor_fails_after_its_timeout_with_the_reason(airflow, tmp_path, deferrable):
    record(tmp_path / "home", score=0.2)
    source = DAG.format(min_average=40.0, home=str(tmp_path / "home"), deferrable=deferrable, timeout=3)
    ok, output = airflow.dags_test("gate", source)
    assert not ok
    assert "average 20.00 is below 40.0" in output


def test_sensor_rejects_impossible_arguments():
    from evaljobs.sensors.leaderboard import LeaderboardSensor

    with pytest.raises(ValueError, match="max_rank must be 1 or more"):
        LeaderboardSensor(task_id="t", project="p", model="m", max_rank=0)
    with pytest.raises(ValueError, match="between 0 and 100"):
        LeaderboardSensor(task_id="t", project="p", model="m", min_average=101)


def gate(**overrides):
    return {
        "project": "p",
        "model": "new",
        "benchmarks": ["gsm8k"],
        "min_average": None,
        "max_rank": None,
        "baseline_model": None,
        "min_delta": 0.0,
    } | overrides


def test_trigger_serialises_and_round_trips(tmp_path):
    trigger = LeaderboardTrigger(gate(min_average=10.0), str(tmp_path), poll_interval=2, timeout=9)
    path, kwargs = trigger.serialize()
    assert path == "evaljobs.triggers.leaderboard.LeaderboardTrigger"
    again = LeaderboardTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload


def test_trigger_fires_when_results_arrive_without_blocking_the_loop(tmp_path):
    """Results land while the trigger waits; asyncio debug mode reports any step that blocks the loop > 50 ms."""
    trigger = LeaderboardTrigger(gate(), str(tmp_path), poll_interval=0.2, timeout=30)
    slow = []

    class Collect(logging.Handler):
        def emit(self, record):
            if "took" in record.getMessage():
                slow.append(record.getMessage())

    async def main():
        asyncio.get_running_loop().slow_callback_duration = 0.05
        return await first_event(trigger)

    handler = Collect()
    logging.getLogger("asyncio").addHandler(handler)
    writer = threading.Timer(1.0, record, args=(tmp_path,))
    writer.start()
    started = time.monotonic()
    try:
        payload = asyncio.run(main(), debug=True)
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert payload["status"] == "success" and payload["verdict"]["released"]
    assert 1.0 <= time.monotonic() - started < 10
    assert slow == []

    async def blocking():  # the instrument itself: a blocking call in a coroutine is caught
        asyncio.get_running_loop().slow_callback_duration = 0.05
        time.sleep(0.1)

    logging.getLogger("asyncio").addHandler(handler)
    try:
        asyncio.run(blocking(), debug=True)
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert len(slow) == 1


def test_trigger_times_out_with_the_last_reason(tmp_path):
    payload = asyncio.run(first_event(LeaderboardTrigger(gate(), str(tmp_path), poll_interval=0.1, timeout=0.5)))
    assert payload == {"status": "timeout", "message": "gate not released: no results yet for new in project p"}
