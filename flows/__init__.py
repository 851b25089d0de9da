"""Prefect flows over the stage code in `augdag.tasks`."""
