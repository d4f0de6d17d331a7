"""The ``home`` hub service: one page for everything a person runs (servers, schedules, recent
runs, apps, approvals), gathered with the person's own delegated token."""
