"""Anthropic's Messages API (what Claude Code and the `anthropic` SDK speak), a dialect over the pipeline."""
