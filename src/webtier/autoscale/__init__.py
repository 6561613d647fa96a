"""Autoscaling: a pure policy that turns metric samples into worker counts (see ``policy``)."""

from webtier.autoscale.policy import Autoscaler, Decision, Metric, Sample, ScalePolicy

__all__ = ["Autoscaler", "Decision", "Metric", "Sample", "ScalePolicy"]
