"""HTML reports: one Jinja2 environment with autoescape (LLM output is untrusted)."""
