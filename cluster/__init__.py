"""Cluster configs of fewshot-rec and their validators (not part of the installed package)."""
