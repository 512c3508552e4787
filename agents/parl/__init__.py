"""PARL (Chakraborty et al., ICLR 2024): bilevel preference-based policy alignment.

sac (lower level), feedback (queries on the current policy's behaviour), hypergrad (implicit
differentiation: HVP, CG, Neumann), train (the A-PARL loop, PEBBLE and SAC oracle as baselines).
"""
