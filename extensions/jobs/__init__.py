"""Notebook jobs: papermill runs and cron schedules, run by a hub service so they outlive the
user's own server."""
