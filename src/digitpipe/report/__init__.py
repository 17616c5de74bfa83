"""The run report: every stage's results assembled as Markdown and as a self-contained page."""
