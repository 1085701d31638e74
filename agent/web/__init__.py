"""The live page served by the agent at /."""
