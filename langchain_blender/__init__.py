"""LangChain adapters for blender-llm."""
