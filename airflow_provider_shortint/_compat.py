"""Differences between the Airflow versions this provider supports (3.2 and later), in one place."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseSensorOperator

_T = TypeVar("_T")


async def amask_secret(secret: str) -> None:
    """Register a secret with Airflow's log masker from async code (a trigger's event loop)."""
    try:
        from airflow.sdk.log import amask_secret as mask
    except ImportError:  # Airflow 3.2: its mask_secret is documented as safe in async code
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
        return
    await mask(secret)


def run_as_poke(sensor: BaseSensorOperator, call: Callable[[], _T], *, if_silenced: _T | None = None) -> _T:
    """Run ``call`` with the failure handling ``BaseSensorOperator.execute`` gives a poke (Airflow 3.2/3.3).

    For work a sensor does outside Airflow's poke loop (a deferrable sensor's first poke):
    ``soft_fail``/``never_fail`` turn a failure into a skip with Airflow's own messages; with
    ``silent_fail`` an unexpected error is logged and ``if_silenced`` returned, when one is given.
    ``never_fail``/``silent_fail`` are read with ``getattr``: older Task SDKs lack them.
    """
    never_fail = bool(getattr(sensor, "never_fail", False))
    try:
        return call()
    except (AirflowSensorTimeout, AirflowTaskTimeout, AirflowFailException) as err:
        if sensor.soft_fail:
            raise AirflowSkipException("Skipping due to soft_fail is set to True.") from err
        if never_fail:
            raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
        raise
    except AirflowSkipException:
        raise
    except Exception as err:
        if if_silenced is not None and getattr(sensor, "silent_fail", False):
            sensor.log.error("Sensor poke failed: \n %s", traceback.format_exc())
            return if_silenced
        if never_fail:
            raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
        raise
