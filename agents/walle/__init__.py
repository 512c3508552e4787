"""WALL-E 2.0 (Zhou et al., 2025) for manipulation: rules (sandboxed action rules and their
learning), world_model (rules + knowledge graph + scene graph), planner (LLM-proposer MPC),
train (the learning loop and its evaluation)."""
