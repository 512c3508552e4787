"""PEARL (Liu et al., ICML 2024): cross-task preference alignment by Gromov-Wasserstein (cpa),
robust Gaussian reward learning (embodied.reward_models), offline RL with IQL (iql), the pipeline (train)."""
