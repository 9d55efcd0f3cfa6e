"""One module per ``blender-llm`` command; each defines ``register(app)``."""
