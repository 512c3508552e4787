"""RePo (Zhu et al., NeurIPS 2023): resilient model-based RL from pixels.

networks (encoder, RSSM, heads), world_model (RePo's KL budget with a dual variable, or the
Dreamer baseline), behavior (actor-critic in imagination), agent, train, adapt (test-time
encoder adaptation without rewards).
"""
