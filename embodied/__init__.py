"""embodied: alignment-aware reinforcement learning for robotic manipulation (core library)."""

__version__ = "0.1.0"
