"""The faust stream app: topics, agents, tables, the per-user context and the trigger."""
