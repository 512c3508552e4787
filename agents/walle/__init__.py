"""WALL-E 2.0 (Zhou et al., 2025) for manipulation, with lookahead: goals (tasks as data), rules
(sandboxed failure rules and their learning), transition_model (learned effect rules + observed
outcomes), world_model (rules + knowledge graph + scene graph), planner (LLM-proposer one-step
MPC), lookahead (receding-horizon search in the learned model, exploration), train (the loop)."""
