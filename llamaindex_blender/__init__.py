"""LlamaIndex adapters for blender-llm."""
