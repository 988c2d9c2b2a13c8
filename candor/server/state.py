"""What the routes share through the app: the scheduler that create_app puts on app.state."""

from __future__ import annotations

from fastapi import Request

from candor.scheduler import Scheduler


def scheduler_of(request: Request) -> Scheduler:
    """The app's scheduler."""
    sched: Scheduler = request.app.state.scheduler
    return sched
