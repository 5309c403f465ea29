"""tuning (built in later issues)."""
