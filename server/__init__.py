"""The HTTP face of the appliance: a FastAPI app with OpenAI-compatible routes."""
