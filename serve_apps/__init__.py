"""serve_apps (built in later issues)."""
