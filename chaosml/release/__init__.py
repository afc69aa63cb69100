"""Releasing a model version: a candidate judged against the served primary per slice."""
