"""Differences between the Airflow versions this provider supports (3.2 and later), in one place."""

from __future__ import annotations


async def amask_secret(secret: str) -> None:
    """Register a secret with Airflow's log masker from async code (a trigger's event loop)."""
    try:
        from airflow.sdk.log import amask_secret as mask
    except ImportError:  # Airflow 3.2: its mask_secret is documented as safe in async code
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
        return
    await mask(secret)
