"""WALL-E 2.0 (Zhou et al., 2025) for manipulation: rule learning so far (rules); the symbolic
manipulation layer, skills, long-horizon tasks and the LLM-driven MPC are still to come."""
