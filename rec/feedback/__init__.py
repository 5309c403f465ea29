"""Learning from served feedback: off-policy evaluation and re-adaptation from the event log.

- :mod:`rec.feedback.ope`: IPS, self-normalised IPS and doubly robust estimates of a candidate
  policy's value from the logged propensities, with confidence intervals.
- :mod:`rec.feedback.logged`: a tenant's log as logged slates (impressions joined to the clicks
  that quote them) and a candidate policy's propensities from the logged model ranks.
- :mod:`rec.feedback.ope_report`: ``rec ope``: the estimates of a candidate policy over a served
  tenant's log, next to what each logging policy earned.
- Re-adaptation (docs/feedback-loop.md): :mod:`rec.feedback.log_reader` (the log read with Ray
  Data), :mod:`rec.feedback.gate` (held-out recent events, NDCG@10), :mod:`rec.feedback.readapt`
  (one round: warm-started adapt, gate, publish; imports torch, so not re-exported here),
  :mod:`rec.feedback.rounds` (the fsynced record of every decision + the Ray metric),
  :mod:`rec.feedback.trigger` (which tenants are due, Ray job submission) and
  :mod:`rec.feedback.guardrail` (CTR rollback); :mod:`rec.feedback.replay` writes a tenant's
  interactions into its log for tests and benchmarks.
"""

from rec.feedback.logged import LoggedSlates, logged_slates, parse_target, target_propensities
from rec.feedback.ope import ESTIMATORS, Estimate, LoggedFeedback, bootstrap_interval, estimate, estimate_slates

__all__ = ["LoggedSlates", "logged_slates", "parse_target", "target_propensities", "ESTIMATORS", "Estimate", "LoggedFeedback", "bootstrap_interval", "estimate", "estimate_slates"]
