"""One subpackage per agent, each with its train.py."""
