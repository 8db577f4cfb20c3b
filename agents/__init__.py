"""LLM agents that turn a user's context into intent tags and explanations."""
